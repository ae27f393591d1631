"""The research diagnostics, one subcommand each: python -m eval.research SUBCOMMAND [OPTIONS].

A subcommand's own --help gives its options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

PROG = "python -m eval.research"
# subcommand -> (its module in eval.research, one line for --help)
SUBCOMMANDS = {
    "pesq-headroom": ("pesq_headroom", "where WB-PESQ and ViSQOL are lost: the high band corrected towards the reference"),
    "envelope-probe": ("envelope_probe", "how well the low band predicts the high band's envelope, and what that is worth"),
    "reference-codec": ("reference_codec", "every system against its references as given and after a G.722 round trip"),
    "band-balance": ("band_balance", "is the restored band as loud as the real one, and is there a hole?"),
    "learned-quality": ("learned_quality", "how a learned quality predictor (DNSMOS) rates every system and the reference"),
    "envelope-study": ("envelope_study", "the envelope predictor trained alone: head designs side by side"),
    "integer-snr": ("integer_snr", "where an integer export loses the signal: each tensor's SNR against float"),
    "formats": ("formats", "one model in every number format LiteRT runs: a folder per format and its bytes"),
    "pareto": ("pareto", "quality against ms per frame and bytes: several widths, each in every number format"),
    "asterisk-pairs": ("asterisk_pairs", "build real 8 kHz / 16 kHz pairs from Debian's Asterisk prompts"),
}


def parser() -> argparse.ArgumentParser:
    """The top-level parser: it only names the subcommands (each parses its own options)."""
    width = max(map(len, SUBCOMMANDS)) + 2
    listing = "\n".join(f"  {name:{width}s}{summary}" for name, (_, summary) in SUBCOMMANDS.items())
    # Raw text, so that each subcommand keeps to one line whatever the terminal's width.
    top = argparse.ArgumentParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  description=f"{__doc__.strip()}\n\nsubcommands:\n{listing}")
    top.add_argument("subcommand", metavar="SUBCOMMAND", choices=SUBCOMMANDS, help="one of the subcommands above")
    top.add_argument("options", nargs=argparse.REMAINDER, metavar="...", help="the subcommand's options")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser().parse_args(argv)  # --help, or the error that names the subcommands
        return 2
    # Imported only when chosen: the subcommands' dependencies (scikit-learn, TensorFlow, G722) differ.
    module = importlib.import_module(f"eval.research.{SUBCOMMANDS[argv[0]][0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

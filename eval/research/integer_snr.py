"""Where an integer export loses the signal: each tensor's SNR against the float model's, in graph order.

    python -m eval.research integer-snr EXPORTED_DIR [--audio WAV] [--frames 40] [--worst 25] [--json OUT]

Streams the same speech (``--audio``, default the bundled sample) frame by frame through an export's
``streaming.tflite`` and ``streaming_int8.tflite`` with every intermediate tensor kept, dequantises
the integer file's tensors with their own scale and zero point, and compares each with the float
tensor of the same name (the converter keeps the Keras layer names): SNR in dB over the frames after
the first five (the states filled). The first tensors of a layer whose SNR falls far below its input's
are where the integer arithmetic breaks; whole-output figures are in metadata.json's checks.
Tensors the quantiser renamed or reshaped, per-channel (weight) tensors and tensors that are zero in
float are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from bwe.data.audio import AudioError, load_audio
from bwe.metadata import METADATA_FILE, MetadataError, ModelMetadata
from bwe.runtime import ModelError, StatefulRunner

PROG = "python -m eval.research integer-snr"
SETTLE_FRAMES = 5  # frames before the comparison starts: the states fill from zeros


def _tensor_values(path: str, metadata: ModelMetadata, audio: np.ndarray) -> tuple[dict, list[str]]:
    """Streams ``audio`` through one file: {tensor name: [values per frame, dequantised]}, names in graph order."""
    runner = StatefulRunner(path, metadata.files["streaming"].signature, metadata.states, metadata.audio_input,
                            metadata.audio_output, keep_all_tensors=True)
    details = runner.interpreter.get_tensor_details()
    states = runner.zero_states
    values: dict[str, list] = {}
    for index in range(len(audio) // runner.frame_in):
        _, states = runner.run(audio[index * runner.frame_in:(index + 1) * runner.frame_in], states)
        if index >= SETTLE_FRAMES:
            for tensor in details:
                value = _dequantised(runner.interpreter, tensor)
                if value is not None:
                    values.setdefault(tensor["name"], []).append(value)
    return values, [t["name"] for t in details]


def _dequantised(interpreter, tensor) -> np.ndarray | None:
    """A float32 tensor as it is, a per-tensor int8/int16 one dequantised, anything else None."""
    dtype = np.dtype(tensor["dtype"])
    try:
        value = interpreter.get_tensor(tensor["index"])
    except ValueError:  # a tensor the interpreter does not keep
        return None
    if dtype == np.float32:
        return value.astype(np.float64).ravel()
    scales = tensor["quantization_parameters"]["scales"]
    if dtype in (np.int8, np.int16) and len(scales) == 1:
        zero_point = tensor["quantization_parameters"]["zero_points"][0]
        return (value.astype(np.float64).ravel() - zero_point) * scales[0]
    return None


def tensor_snrs(folder: str, audio: np.ndarray) -> list[tuple[str, float]]:
    """(tensor name, SNR in dB of the integer file against the float file) in the integer graph's order."""
    metadata = ModelMetadata.load(os.path.join(folder, METADATA_FILE))
    if not metadata.recipe.get("export", {}).get("int8_tensor_names", True):
        raise ModelError(f"{folder}: its integer file was exported without inner tensor names "
                         "(export.int8_tensor_names: false), so its tensors cannot be paired with the float "
                         f"file's; export it again with: bwe-export {folder} OUT --set export.int8_tensor_names=true")
    reference, _ = _tensor_values(os.path.join(folder, metadata.files["streaming"].file), metadata, audio)
    quantised, order = _tensor_values(os.path.join(folder, metadata.files["streaming_int8"].file), metadata, audio)
    snrs = []
    for name in order:
        if name not in reference or name not in quantised or reference[name][0].shape != quantised[name][0].shape:
            continue
        ref = np.concatenate(reference[name])
        if not np.any(ref):  # a tensor that is zero in float (an unused branch) has no SNR
            continue
        error = ref - np.concatenate(quantised[name])
        snrs.append((name, float(10 * np.log10(np.sum(ref**2) / (np.sum(error**2) + 1e-30)))))
    return snrs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", metavar="EXPORTED_DIR", help="an export with streaming.tflite and streaming_int8.tflite")
    parser.add_argument("--audio", default=os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "bwe", "pretrained", "sample_8k.wav"), help="8 kHz speech (default: the bundled sample)")
    parser.add_argument("--frames", type=int, default=40, help="16 ms frames to stream (default 40)")
    parser.add_argument("--worst", type=int, default=25, help="also list this many worst tensors (default 25)")
    parser.add_argument("--json", metavar="PATH", help="also write every tensor's SNR as JSON")
    args = parser.parse_args(argv)
    if args.frames <= SETTLE_FRAMES:
        parser.error(f"--frames must exceed the {SETTLE_FRAMES} frames the states need to fill")
    try:
        audio = load_audio(args.audio, 8000)[0][: args.frames * 128].astype(np.float32)
        snrs = tensor_snrs(args.folder, audio)
    except (AudioError, MetadataError, ModelError, OSError, KeyError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    for name, snr in snrs:
        print(f"{snr:8.1f} dB  {name}")
    print(f"\nworst {args.worst}:")
    for name, snr in sorted(snrs, key=lambda item: item[1])[: args.worst]:
        print(f"{snr:8.1f} dB  {name}")
    if args.json:
        from bwe.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(dict(snrs), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

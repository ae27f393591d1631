"""How accurately can the envelope predictor set the generated band's level? Variants side by side.

    python -m eval.research envelope-study --train CORPUS/train --valid CORPUS/valid --recipe recipes/pretrained.yaml \
        [--variant "NAME:key=value;key=value" ...] [--steps 1500] [--json OUT.json]
    python -m eval.research envelope-study ... --hold-out SOURCE     (train without SOURCE, score only SOURCE)

The predictor of the recipe's envelope head (``bwe.models.seanet.build_envelope_predictor``: the
same layers the generator uses) is trained alone, by regression, on what it is trained on inside the
generator: each envelope frame's level in each band of the 4-8 kHz band, measured on the wideband
target with the generator's own fixed filters (the band split's high-pass, then the band bank). Every
variant (recipe overrides of the model section: look-ahead, bands, context, width; or of the data
section: the training channel) is trained on the same files with the same seed and step count, and
scored on:

* ``valid``: the valid split through the fixed evaluation channel (``evaluation_degradation``);
* ``telephone``: the same files through the fixed 300-3400 Hz telephone band (``telephone_degradation``).

The score is the envelope error in dB at 500 Hz resolution: per frame, the RMS over the eight 500 Hz
bands of predicted minus true level (a 4-band variant's 1 kHz level is split evenly over its two
500 Hz bands), and its bias (the mean over bands); medians over speech frames (frames whose
wideband level is within 40 dB of the file's loudest; ``bwe.metrics.error_and_bias_db``), then means
over files. ``--hold-out SOURCE``
trains without the first-level folder SOURCE of ``--train`` and scores only ``--valid/SOURCE``: a
leave-one-source-out figure. A research tool: its numbers choose the head's settings before the
generator is trained with them; the generator's own figures come from ``eval.evaluate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from bwe.config import load_recipe
from bwe.data.audio import effective_bandwidth_hz, list_audio_files, load_audio, spread_indices
from bwe.data.degrade import (
    OUTPUT_RATE,
    evaluation_degradation,
    make_training_pair,
    telephone_degradation,
)
from bwe.data.pipeline import loudness_gain_db
from bwe.metrics import error_and_bias_db

PROG = "python -m eval.research envelope-study"

SEGMENT_8K = 8000  # 1 s training segments (shorter files are padded with silence)
SPEECH_RANGE_DB = 40.0
FINE_BANDS = 8  # the 500 Hz bands every variant is scored at


def levelled_files(folder: str, limit: int, cfg_data) -> list[tuple[str, np.ndarray]]:
    """Up to ``limit`` usable files spread over ``folder``, levelled as training levels them, without the
    band-limited files training skips (``data.min_bandwidth_hz``): a reference without 7-8 kHz has
    no true level there to score against."""
    files = list_audio_files(folder)
    chosen = [files[i] for i in spread_indices(len(files), min(limit * 2, len(files)))]
    out = []
    for path in chosen:
        x, _ = load_audio(path, OUTPUT_RATE)
        gain = loudness_gain_db(x, cfg_data.loudness_lufs)
        if gain is None or len(x) < OUTPUT_RATE // 2:
            continue
        if cfg_data.min_bandwidth_hz and effective_bandwidth_hz(x, OUTPUT_RATE) < cfg_data.min_bandwidth_hz:
            continue
        out.append((path, (x * 10 ** (gain / 20)).astype(np.float32)))
        if len(out) == limit:
            break
    return out


def band_levels(model_cfg, wideband: np.ndarray, bands: int) -> np.ndarray:
    """[frames, bands] standardised bels of the target's bands per envelope frame, through the
    generator's own high-pass and bank, their delay removed (frame t = samples [t F, t F + F))."""
    from bwe.layers.envelope import LEVEL_CENTRE, LEVEL_FLOOR, LEVEL_SPREAD
    from bwe.config import band_split_taps
    from bwe.models.seanet import band_split_kernel, envelope_filter_bank

    cfg = dataclasses.replace(model_cfg, envelope_bands=bands)
    highpass = band_split_kernel(band_split_taps(cfg))[:, 1, 0]
    bank = envelope_filter_bank(cfg)[:, 0, :]
    delay = (len(highpass) - 1) // 2 + (len(bank) - 1) // 2
    frame = cfg.envelope_frame
    frames = len(wideband) // frame
    levels = []
    for k in range(bands):
        y = np.convolve(np.convolve(wideband, highpass), bank[:, k])[delay: delay + frames * frame]
        levels.append(np.mean(y.reshape(frames, frame) ** 2, axis=1))
    return (np.log10(np.stack(levels, axis=1) + LEVEL_FLOOR) - LEVEL_CENTRE) / LEVEL_SPREAD


def to_fine_db(levels: np.ndarray) -> np.ndarray:
    """Standardised bels [frames, K] -> dB at 500 Hz resolution [frames, 8] (a band's energy split evenly)."""
    from bwe.layers.envelope import LEVEL_CENTRE, LEVEL_SPREAD

    db = 10 * (levels * LEVEL_SPREAD + LEVEL_CENTRE)
    split = FINE_BANDS // levels.shape[1]
    return np.repeat(db - 10 * np.log10(split), split, axis=1)


def training_segments(files, cfg, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """1 s segments of every file (random channel per segment, as training draws it):
    inputs [n, SEGMENT_8K, 1], targets [n, frames, bands]."""
    rng = np.random.default_rng(seed)
    data = cfg.data
    kwargs = dict(cutoff_range=tuple(data.cutoff_hz_range), gain_db_range=tuple(data.gain_db_range),
                  companding_probability=data.companding_probability,
                  highpass_probability=data.highpass_probability, highpass_hz_range=tuple(data.highpass_hz_range))
    inputs, targets = [], []
    for _, x in files:
        x = np.pad(x, (0, max(0, 2 * SEGMENT_8K - len(x))))
        for start in range(0, len(x) - 2 * SEGMENT_8K + 1, 2 * SEGMENT_8K):
            nb, wb, _ = make_training_pair(x[start: start + 2 * SEGMENT_8K], rng, **kwargs)
            inputs.append(nb[:SEGMENT_8K])
            targets.append(band_levels(cfg.model, wb, cfg.model.envelope_bands))
    return np.stack(inputs)[..., None].astype(np.float32), np.stack(targets).astype(np.float32)


def fit_predictor(cfg, inputs: np.ndarray, targets: np.ndarray, steps: int, seed: int, batch: int = 16):
    """Train the recipe's envelope predictor by MSE on (inputs, targets); returns the Keras model."""
    import keras
    import tensorflow as tf

    from bwe.models.seanet import build_envelope_predictor

    keras.utils.set_random_seed(seed)
    model = build_envelope_predictor(cfg.model)
    lookahead = cfg.model.envelope_lookahead_frames
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(cfg.optim.envelope_lr, steps, alpha=0.1))
    rng = np.random.default_rng(seed)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            predicted = model(x, training=True)[:, lookahead:]
            loss = tf.reduce_mean(tf.square(predicted - y[:, : tf.shape(predicted)[1]]))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    for _ in range(steps):
        pick = rng.integers(0, len(inputs), batch)
        step(inputs[pick], targets[pick])
    return model


def envelope_errors(model, cfg, files, degrade) -> tuple[float, float]:
    """(error, bias) in dB at 500 Hz resolution: medians over speech frames, means over files."""
    lookahead = cfg.model.envelope_lookahead_frames
    frame8 = cfg.model.envelope_frame // 2
    errors, biases = [], []
    for _, x in files:
        nb = degrade(x)
        n = len(nb) // frame8 * frame8
        padded = np.pad(nb[:n], (0, lookahead * frame8))[None, :, None].astype(np.float32)
        predicted = np.asarray(model(padded))[0, lookahead:]
        truth = band_levels(cfg.model, x[: 2 * n], FINE_BANDS)
        frames = min(len(truth), len(predicted))
        difference = to_fine_db(predicted[:frames]) - to_fine_db(truth[:frames])
        frame_db = 10 * np.log10(np.mean(x[: frames * 2 * frame8].reshape(frames, -1) ** 2, axis=1) + 1e-10)
        speech = frame_db > frame_db.max() - SPEECH_RANGE_DB
        error, bias = error_and_bias_db(difference[speech])
        errors.append(error)
        biases.append(bias)
    return float(np.mean(errors)), float(np.mean(biases))


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:key=value;key=value`` -> (NAME, overrides); ``;`` separates, since values may hold commas."""
    name, _, overrides = text.partition(":")
    return name, [o for o in overrides.split(";") if o]


def study(args) -> list[dict]:
    base = load_recipe(args.recipe, args.set)
    train_dir, valid_dir = args.train, args.valid
    sources = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    if args.hold_out:
        if args.hold_out not in sources:
            raise SystemExit(f"--hold-out: {args.hold_out} is not a folder of {train_dir} ({', '.join(sources)})")
        train_files = [f for s in sources if s != args.hold_out
                       for f in levelled_files(os.path.join(train_dir, s), args.train_files // (len(sources) - 1),
                                               base.data)]
        valid_files = levelled_files(os.path.join(valid_dir, args.hold_out), args.valid_files, base.data)
    else:
        train_files = levelled_files(train_dir, args.train_files, base.data)
        valid_files = levelled_files(valid_dir, args.valid_files, base.data)
    print(f"{len(train_files)} training files, {len(valid_files)} scored files", file=sys.stderr)
    rows = []
    for text in args.variant or ["recipe:"]:
        name, overrides = parse_variant(text)
        cfg = load_recipe(args.recipe, args.set + overrides)
        inputs, targets = training_segments(train_files, cfg, args.seed)
        model = fit_predictor(cfg, inputs, targets, args.steps, args.seed)
        row = {"variant": name, "overrides": overrides, "segments": len(inputs)}
        for condition, degrade in (("valid", evaluation_degradation), ("telephone", telephone_degradation)):
            row[f"{condition}_error_db"], row[f"{condition}_bias_db"] = envelope_errors(model, cfg, valid_files,
                                                                                        degrade)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def table(rows: Sequence[dict]) -> str:
    lines = ["| variant | valid error (dB) | valid bias (dB) | telephone error (dB) | telephone bias (dB) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['valid_error_db']:.2f} | {r['valid_bias_db']:+.2f} | "
                     f"{r['telephone_error_db']:.2f} | {r['telephone_bias_db']:+.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training audio folder (first-level folders = sources)")
    parser.add_argument("--valid", required=True, help="scored audio folder (same sources)")
    parser.add_argument("--recipe", required=True, help="recipe whose model section has an envelope head")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every variant")
    parser.add_argument("--variant", action="append", metavar="NAME:key=value;...",
                        help="a variant: a name and recipe overrides (repeat; default: the recipe as it is)")
    parser.add_argument("--hold-out", metavar="SOURCE", help="train without this source, score only it")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--train-files", type=int, default=1500)
    parser.add_argument("--valid-files", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = study(args)
    print(table(rows))
    if args.json:
        from bwe.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=1) + "\n")
    return 0

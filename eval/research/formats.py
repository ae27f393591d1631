"""One model in every number format LiteRT runs: a runnable export folder per format, and its bytes.

    python -m eval.research formats EXPORT OUT [--calibration-dir DIR]

writes ``OUT/dynamic``, ``OUT/full`` and ``OUT/16x8`` (``bwe-export`` of EXPORT with that
``export.int8_mode``: their float files are float32, their ``streaming_int8.tflite`` the format),
``OUT/int4`` (``dynamic`` with ``export.weight_bits=4``) and ``OUT/float16`` (the 16x8 folder with
float16 weights in its float files), then prints each format's streaming file size and the command
lines that score and time them side by side:

    python -m eval.evaluate --model float32=OUT/16x8 --model float16=OUT/float16 \\
        --model dynamic=OUT/dynamic:int8 --model int4=OUT/int4:int8 --model full=OUT/full:int8 \\
        --model 16x8=OUT/16x8:int8 ...
"""

from __future__ import annotations

import argparse
import os
import shutil

from bwe.config import INT8_MODES

# format -> (folder, file, how eval.evaluate names it)
FORMATS = {
    "float32": ("16x8", "streaming.tflite", "{dir}"),
    "float16": ("float16", "streaming.tflite", "{dir}"),
    "dynamic": ("dynamic", "streaming_int8.tflite", "{dir}:int8"),
    "int4": ("int4", "streaming_int8.tflite", "{dir}:int8"),
    "full": ("full", "streaming_int8.tflite", "{dir}:int8"),
    "16x8": ("16x8", "streaming_int8.tflite", "{dir}:int8"),
}


def float16_file(saved_model: str, signature: str) -> bytes:
    """A signature of an export's SavedModel as TFLite with float16 weights (computed in float32)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[signature])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def write_formats(source: str, out: str, calibration_dir: str | None) -> dict[str, str]:
    """The folders of every format under ``out``; returns format -> its streaming file."""
    from bwe.export import main as export

    variants = {mode: ["--set", f"export.int8_mode={mode}"] for mode in INT8_MODES}
    variants["int4"] = ["--set", "export.int8_mode=dynamic", "--set", "export.weight_bits=4"]
    for folder, settings in variants.items():
        args = [source, os.path.join(out, folder), *settings, "-q"]
        if calibration_dir:
            args += ["--calibration-dir", calibration_dir]
        if export(args) != 0:
            raise SystemExit(f"bwe-export {' '.join(args)} failed")
    half = os.path.join(out, "float16")
    shutil.rmtree(half, ignore_errors=True)
    shutil.copytree(os.path.join(out, "16x8"), half)
    for signature in ("streaming", "block"):
        with open(os.path.join(half, f"{signature}.tflite"), "wb") as f:
            f.write(float16_file(os.path.join(half, "saved_model"), signature))
    return {name: os.path.join(out, folder, file) for name, (folder, file, _) in FORMATS.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.research formats", description=__doc__.split("\n")[0])
    parser.add_argument("export", help="an exported model folder (bwe-export's output, with generator.weights.h5)")
    parser.add_argument("out", help="folder for the per-format folders")
    parser.add_argument("--calibration-dir", help="speech the integer formats calibrate on (default: the bundled sample)")
    args = parser.parse_args(argv)
    files = write_formats(args.export, args.out, args.calibration_dir)
    print("| format | streaming file | bytes |\n|---|---|---:|")
    for name, path in files.items():
        print(f"| {name} | {os.path.relpath(path, args.out)} | {os.path.getsize(path):,} |")
    models = " ".join(f"--model {name}={spec.format(dir=os.path.join(args.out, folder))}"
                      for name, (folder, _, spec) in FORMATS.items())
    print(f"\nscore: python -m eval.evaluate {models} --data DATA")
    folders = " ".join(sorted({os.path.join(args.out, folder) for folder, _, _ in FORMATS.values()}))
    print(f"time: for d in {folders}; do python -m eval.mobile_timing $d; done  "
          "(each folder times its float files, float16's with float16 weights, beside its int8 file)")
    return 0

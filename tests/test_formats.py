"""eval.research formats: one model as a runnable folder per number format."""

import json
import os

import numpy as np

from bwe.runtime import ExportedModel
from eval.research.formats import FORMATS, main
from exported_tiny import exported_tiny
from signals import speech_like


def test_every_format_is_a_runnable_folder_that_computes_the_model(tmp_path, capsys):
    """Each folder runs through bwe.runtime like any export; the float16 file holds float16 weights and
    computes what float32 does to float16 precision; the int8 files are the export's own modes (int4: the
    dynamic mode with 4-bit weights)."""
    from ai_edge_litert.interpreter import Interpreter

    out = tmp_path / "formats"
    assert main([exported_tiny()[2], str(out)]) == 0
    table = capsys.readouterr().out
    for name, (folder, file, _) in FORMATS.items():
        size = os.path.getsize(out / folder / file)
        assert f"| {name} | {folder}/{file} | {size:,} |" in table
    assert os.path.getsize(out / "float16" / "streaming.tflite") < os.path.getsize(out / "16x8" / "streaming.tflite")
    half = Interpreter(model_path=str(out / "float16" / "streaming.tflite"))
    assert any(np.dtype(t["dtype"]) == np.float16 for t in half.get_tensor_details())
    for folder, mode, bits in (("dynamic", "dynamic", 8), ("full", "full", 8), ("16x8", "16x8", 8), ("int4", "dynamic", 4)):
        with open(out / folder / "metadata.json", encoding="utf-8") as f:
            export = json.load(f)["recipe"]["export"]
        assert (export["int8_mode"], export["weight_bits"]) == (mode, bits)

    x = speech_like(0.5, rate=8000, seed=2)
    y32, y16 = ExportedModel(str(out / "16x8"))(x), ExportedModel(str(out / "float16"))(x)
    assert np.max(np.abs(y16 - y32)) < 1e-2 * np.max(np.abs(y32)) and not np.array_equal(y16, y32)

"""eval.research integer-snr: per-tensor SNRs of an export's int8 file against its float file."""

from __future__ import annotations

import json
import shutil

import numpy as np

from eval.research.__main__ import main
from eval.research.integer_snr import tensor_snrs
from exported_tiny import exported_tiny
from signals import speech_like


def test_identical_files_match_everywhere_and_int8_is_measured(tmp_path):
    folder = tmp_path / "same"
    shutil.copytree(exported_tiny()[2], folder)
    audio = speech_like(0.5, 8000).astype(np.float32)
    quantised = dict(tensor_snrs(str(folder), audio))
    shutil.copy(folder / "streaming.tflite", folder / "streaming_int8.tflite")
    same = dict(tensor_snrs(str(folder), audio))
    assert len(same) > 20 and min(same.values()) > 250  # the float file against itself: no error anywhere
    # The dynamic-range file's activations are float, so most tensors compare; rounding shows in them.
    assert len(quantised) > 20 and 0 < min(quantised.values()) < 60


def test_cli_lists_tensors_and_writes_json(tmp_path, capsys):
    out = tmp_path / "snr.json"
    assert main(["integer-snr", exported_tiny()[2], "--frames", "12", "--worst", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "worst 3:" in printed and len(json.loads(out.read_text())) > 20
    assert main(["integer-snr", str(tmp_path), "--frames", "12"]) == 2
    assert "metadata.json" in capsys.readouterr().err


def test_an_export_without_inner_names_is_refused_with_the_fix(tmp_path, capsys):
    folder = tmp_path / "nameless"
    shutil.copytree(exported_tiny()[2], folder)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["recipe"]["export"]["int8_tensor_names"] = False
    (folder / "metadata.json").write_text(json.dumps(metadata))
    assert main(["integer-snr", str(folder), "--frames", "12"]) == 2
    assert "--set export.int8_tensor_names=true" in capsys.readouterr().err

"""python -m eval.evaluate end to end, as a user runs it, checked against bwe.metrics directly."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bwe.baselines import folding, sinc
from bwe.data.audio import load_audio
from bwe.data.degrade import evaluation_degradation
from bwe.metrics import lsd_all, pesq_wb
from eval import evaluate
from signals import speech_like, write_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_evaluate(*args):
    return subprocess.run(
        [sys.executable, "-m", "eval.evaluate", "--no-progress", *map(str, args)], capture_output=True, text=True,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    (root / "spk1").mkdir()
    write_wav(root / "spk1" / "a.wav", speech_like(2.0, 16000, seed=41), 16000)
    write_wav(root / "spk1" / "b.flac", speech_like(1.5, 16000, seed=42), 16000)
    stereo = np.stack([speech_like(1.0, 22050, seed=43), speech_like(1.0, 22050, seed=44)], axis=1)
    write_wav(root / "c_22k_stereo.wav", stereo, 22050)
    write_wav(root / "silent.wav", np.zeros(16000, np.float32), 16000)
    write_wav(root / "tiny.wav", speech_like(0.05, 16000, seed=45), 16000)  # 800 samples: too short
    (root / "notes.txt").write_text("not audio, not picked up\n")
    return root


@pytest.fixture(scope="module")
def evaluated(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "nested" / "eval"
    result = run_evaluate("--model", "sinc", "--model", "folding", "--data", data_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_matches_bwe_metrics(data_dir, evaluated):
    out, _ = evaluated
    rows = _read_csv(out / "metrics.csv")
    assert list(rows[0]) == ["file", "model", "lsd", "lsd_lf", "lsd_hf", "pesq_wb", "set", "delay", "offset"]
    files = ["c_22k_stereo.wav", "silent.wav", os.path.join("spk1", "a.wav"), os.path.join("spk1", "b.flac")]
    assert [(r["file"], r["model"]) for r in rows] == [(f, m) for f in files for m in ("sinc", "folding")]
    for row in rows:
        reference, _ = load_audio(data_dir / row["file"], target_rate=16000)
        system = {"sinc": sinc, "folding": folding}[row["model"]]
        estimate = system(evaluation_degradation(reference))[: len(reference)]
        expected = lsd_all(reference, estimate)
        for key in ("lsd", "lsd_lf", "lsd_hf"):
            assert float(row[key]) == pytest.approx(expected[key], abs=2e-6)
        if row["file"] == "silent.wav":
            assert row["pesq_wb"] == "unscorable"
        else:
            with np.errstate(all="ignore"):
                assert float(row["pesq_wb"]) == pytest.approx(pesq_wb(reference, estimate), abs=2e-6)


def test_report_has_means_side_by_side(evaluated):
    out, result = evaluated
    rows = _read_csv(out / "metrics.csv")
    report = (out / "report.md").read_text()
    assert result.stdout == report
    assert "4 files scored, 1 skipped" in report and "`tiny.wav`" in report
    for model in ("sinc", "folding"):
        mine = [r for r in rows if r["model"] == model]
        scored = [float(r["pesq_wb"]) for r in mine if r["pesq_wb"] != "unscorable"]
        line = next(row for row in report.splitlines() if row.startswith(f"| {model} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == "4"
        for i, key in ((2, "lsd"), (3, "lsd_lf"), (4, "lsd_hf")):
            assert float(cells[i]) == pytest.approx(np.mean([float(r[key]) for r in mine]), abs=6e-4)
        assert float(cells[5]) == pytest.approx(np.mean(scored), abs=6e-4)
        assert cells[6] == "1" and cells[7] == "+0"
    sinc_line, fold_line = (
        [float(c) for c in next(row for row in report.splitlines() if row.startswith(f"| {m} |")).split("|")[3:6]]
        for m in ("sinc", "folding")
    )
    assert fold_line[0] < sinc_line[0] and fold_line[2] < sinc_line[2]


def test_report_breaks_the_means_down_by_first_level_folder(evaluated):
    out, _ = evaluated
    rows = _read_csv(out / "metrics.csv")
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())["data"]["by_folder"]
    assert list(summary) == [".", "spk1"]
    for folder, model in (("spk1", "folding"), (".", "sinc")):
        mine = [r for r in rows if r["model"] == model and (os.path.dirname(r["file"]) or ".") == folder]
        line = next(row for row in report.splitlines() if row.startswith(f"| {folder} | {model} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[2]) == len(mine) == summary[folder][model]["files"]
        assert float(cells[4]) == pytest.approx(np.mean([float(r["lsd_hf"]) for r in mine]), abs=6e-4)
        assert summary[folder][model]["lsd_hf"] == pytest.approx(np.mean([float(r["lsd_hf"]) for r in mine]))


def test_baselines_always_included_limit_and_no_temp_files(data_dir, tmp_path):
    result = run_evaluate("--data", data_dir, "--out", tmp_path, "--limit", "1")
    assert result.returncode == 0, result.stderr
    rows = _read_csv(tmp_path / "metrics.csv")
    assert [(r["file"], r["model"]) for r in rows] == [("c_22k_stereo.wav", "sinc"), ("c_22k_stereo.wav", "folding")]
    assert sorted(os.listdir(tmp_path)) == ["figures", "metrics.csv", "report.md", "summary.json"]


def test_data_may_be_a_single_file(data_dir, tmp_path):
    result = run_evaluate("--model", "sinc", "--data", data_dir / "spk1" / "a.wav", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["file"] for r in _read_csv(tmp_path / "metrics.csv")] == ["a.wav", "a.wav"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nonsense"], "--model nonsense: neither a baseline"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_arguments(data_dir, tmp_path, args, message):
    result = run_evaluate("--data", data_dir, "--out", tmp_path / "o", *args)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "o" / "metrics.csv").exists()


def test_model_directory_that_cannot_load(data_dir, tmp_path):
    empty_model = tmp_path / "model"
    empty_model.mkdir()
    result = run_evaluate("--model", empty_model, "--data", data_dir, "--out", tmp_path / "o")
    assert result.returncode == 2
    assert f"--model {empty_model}: cannot load" in result.stderr


def test_missing_or_empty_data(tmp_path):
    result = run_evaluate("--data", tmp_path / "nope", "--out", tmp_path / "o")
    assert result.returncode == 2 and "no such directory" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_evaluate("--data", tmp_path / "empty", "--out", tmp_path / "o")
    assert result.returncode == 2 and "no audio files found" in result.stderr


def test_corrupt_reference_is_named(tmp_path):
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    result = run_evaluate("--data", tmp_path / "refs", "--out", tmp_path / "o")
    assert result.returncode == 2 and "broken.wav: not a readable audio file" in result.stderr


def test_broken_systems_are_named():
    reference = speech_like(0.5, 16000, seed=46)
    narrowband = evaluation_degradation(reference)
    broken = {
        "nan": (lambda x: np.full(2 * len(x), np.nan, np.float32), "returned NaN or Inf"),
        "short": (lambda x: np.zeros(len(x), np.float32), "returned shape"),
        "raises": (lambda x: 1 / 0, "failed (ZeroDivisionError"),
    }
    for label, (system, message) in broken.items():
        with pytest.raises(evaluate.EvaluationError, match=rf"clip\.wav: system {label} {re.escape(message)}"):
            evaluate.evaluate_pair("clip.wav", reference, narrowband, {label: system})

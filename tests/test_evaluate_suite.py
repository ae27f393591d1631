"""eval.evaluate as a suite: real narrowband pairs, several systems side by side, summary, figures.

(The single-set behaviour, CSV against bwe.metrics and argument errors, is tests/test_evaluate.py.)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np
import pytest
import scipy.signal
import scipy.stats

from bwe.baselines import folding, sinc
from bwe.data.audio import load_audio, resample
from bwe.data.degrade import evaluation_degradation
from bwe.metrics import lsd_all, pesq_wb
from eval import evaluate as ev
from signals import speech_like, write_wav

RATE = 16000
# name -> lag of the narrowband recording behind the wideband one, in 16 kHz samples
OFFSETS = {"spk/a": 600, "spk/b": -400, "c": 0}


def telephone_recording(wideband: np.ndarray, lag: int, gain: float) -> np.ndarray:
    """Another channel than the evaluation degradation: zero-phase Butterworth at 3.4 kHz, shifted by
    ``lag`` samples at 16 kHz, scaled, then resampled to 8 kHz -- a stand-in for a real 8 kHz recording."""
    sos = scipy.signal.butter(6, 3400.0, fs=RATE, output="sos")
    x = scipy.signal.sosfiltfilt(sos, wideband)
    x = np.concatenate([np.zeros(lag), x])[: len(wideband)] if lag >= 0 else x[-lag:]
    return resample((gain * x).astype(np.float32), RATE, 8000)


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    root = tmp_path_factory.mktemp("material")
    (root / "nb" / "spk").mkdir(parents=True)
    (root / "wb" / "spk").mkdir(parents=True)
    (root / "data").mkdir()
    references = {}
    for i, (stem, lag) in enumerate(OFFSETS.items()):
        wideband = speech_like(2.5, RATE, seed=60 + i)
        references[stem] = wideband
        write_wav(root / "wb" / f"{stem}.wav", wideband, RATE)
        write_wav(root / "nb" / f"{stem}.wav", telephone_recording(wideband, lag, gain=0.6), 8000)
    write_wav(root / "nb" / "lonely.wav", speech_like(1.0, 8000, seed=70), 8000)
    write_wav(root / "wb" / "solo.flac", speech_like(1.0, RATE, seed=71), RATE)
    write_wav(root / "data" / "x.wav", speech_like(2.0, RATE, seed=72), RATE)
    write_wav(root / "data" / "silent.wav", np.zeros(RATE, np.float32), RATE)
    write_wav(root / "data" / "y.wav", speech_like(1.5, RATE, seed=73), RATE)
    return root


@pytest.fixture(scope="module")
def suite(material, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "out"
    before = {p: sha256(p) for p in material.rglob("*") if p.is_file()}
    code = ev.main(
        [
            "--model", "same=sinc", "--model", "folding",
            "--data", str(material / "data"),
            "--pairs", str(material / "nb"), str(material / "wb"),
            "--out", str(out), "--spectrograms", "2", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    assert {p: sha256(p) for p in material.rglob("*") if p.is_file()} == before  # inputs untouched
    return out


def test_pairs_are_aligned_and_scored_like_bwe_metrics(material, suite):
    rows = [r for r in read_csv(suite / "metrics.csv") if r["set"] == "pairs"]
    assert sorted({r["file"] for r in rows}) == sorted(f"{s}.wav" for s in OFFSETS)
    for row in rows:
        stem = row["file"][: -len(".wav")]
        lag = OFFSETS[stem]
        assert int(row["offset"]) == lag and int(row["delay"]) == 0
        narrowband, _ = load_audio(material / "nb" / row["file"])
        reference, _ = load_audio(material / "wb" / row["file"])
        output = {"sinc": sinc, "same": sinc, "folding": folding}[row["model"]](narrowband)
        # The alignment the test knows, not the one the script estimated.
        if lag >= 0:
            reference, output = reference, output[lag:]
        else:
            reference = reference[-lag:]
        n = min(len(reference), len(output))
        expected = lsd_all(reference[:n], output[:n])
        for key in ("lsd", "lsd_lf", "lsd_hf"):
            assert float(row[key]) == pytest.approx(expected[key], abs=2e-6), (row["file"], row["model"], key)
        with np.errstate(all="ignore"):
            assert float(row["pesq_wb"]) == pytest.approx(pesq_wb(reference[:n], output[:n]), abs=2e-6)


def test_a_system_that_shifts_its_output_shows_a_delay_on_real_pairs(material):
    def late_by_40(x8k):
        y = sinc(x8k)
        return np.concatenate([np.zeros(40, np.float32), y[:-40]])

    result = ev.evaluate_real_pairs(
        str(material / "nb"), str(material / "wb"), {"sinc": sinc, "late": late_by_40}, max_offset=4000, progress=False
    )
    for row in result.rows:
        assert row.offset == OFFSETS[row.file[: -len(".wav")]]  # the pair's offset comes from the input alone
        assert row.delay == (40 if row.model == "late" else 0)
    assert result.unpaired == ["lonely.wav (no wideband)", "solo.flac (no narrowband)"]


def test_data_set_in_the_same_run_uses_the_fixed_degradation(material, suite):
    rows = [r for r in read_csv(suite / "metrics.csv") if r["set"] == "data"]
    assert [(r["file"], r["model"]) for r in rows] == [
        (f, m) for f in ("silent.wav", "x.wav", "y.wav") for m in ("sinc", "folding", "same")
    ]
    assert all(r["offset"] == "" for r in rows)
    for row in rows:
        if row["file"] == "silent.wav":
            assert row["pesq_wb"] == "unscorable"
            continue
        reference, _ = load_audio(material / "data" / row["file"])
        output = {"sinc": sinc, "same": sinc, "folding": folding}[row["model"]](evaluation_degradation(reference))
        assert float(row["lsd"]) == pytest.approx(lsd_all(reference, output[: len(reference)])["lsd"], abs=2e-6)


def _no_nan(constant):
    raise AssertionError(f"summary.json holds {constant}, which is not JSON")


def test_summary_means_and_confidence_intervals_match_scipy(suite):
    rows = read_csv(suite / "metrics.csv")
    summary = json.loads((suite / "summary.json").read_text(), parse_constant=_no_nan)
    assert set(summary) == {"data", "pairs"}
    assert summary["pairs"]["unpaired"] == ["lonely.wav (no wideband)", "solo.flac (no narrowband)"]
    for set_name, block in summary.items():
        assert list(block["systems"]) == ["sinc", "folding", "same"]
        for model, stats in block["systems"].items():
            mine = [r for r in rows if r["set"] == set_name and r["model"] == model]
            for metric in ("lsd", "lsd_lf", "lsd_hf", "pesq_wb"):
                values = np.array([float(r[metric]) for r in mine if r[metric] != "unscorable"])
                low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy.stats.sem(values))
                assert stats[metric] == pytest.approx(values.mean(), abs=1e-5)
                assert stats[f"{metric}_ci95"] == pytest.approx([low, high], abs=1e-5)
            assert stats["unscorable"] == (1 if set_name == "data" else 0)
            assert stats["pesq_scored"] == stats["files"] - stats["unscorable"]
        # Two labels for one system give identical figures, side by side.
        same, ref = block["systems"]["same"], block["systems"]["sinc"]
        assert same["lsd"] == ref["lsd"] and same["pesq_wb"] == ref["pesq_wb"]


def test_report_has_both_sets_tables_and_figures(suite):
    report = (suite / "report.md").read_text()
    assert "## Simulated narrowband (`--data`)" in report and "## Real narrowband pairs (`--pairs`)" in report
    assert "3 pairs scored, 2 files without a counterpart." in report
    assert "`lonely.wav (no wideband)`" in report
    assert "Pair alignment shifts (samples at 16 kHz): -400 to +600." in report
    assert report.count("95 % confidence intervals of the means") == 2
    summary = json.loads((suite / "summary.json").read_text())
    low, high = summary["pairs"]["systems"]["folding"]["lsd_ci95"]
    assert f"| folding | [{low:.3f}, {high:.3f}] |" in report
    figures = sorted(os.listdir(suite / "figures"))
    for set_name in ("data", "pairs"):
        for metric in ("lsd", "lsd_lf", "lsd_hf", "pesq_wb"):
            assert f"{set_name}_{metric}.png" in figures
            assert f"(figures/{set_name}_{metric}.png)" in report
    spectrograms = [f for f in figures if "_spectrogram_" in f]
    assert len(spectrograms) == 4  # --spectrograms 2 per set
    for name in figures:
        with open(suite / "figures" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [n for n in os.listdir(suite) if n.startswith(".")]  # no temporary files left


def test_no_plots_and_pairs_only(material, tmp_path):
    code = ev.main(["--pairs", str(material / "nb"), str(material / "wb"), "--out", str(tmp_path), "--no-plots", "--no-progress"])
    assert code == 0
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv", "report.md", "summary.json"]
    assert {r["set"] for r in read_csv(tmp_path / "metrics.csv")} == {"pairs"}
    assert "##" not in (tmp_path / "report.md").read_text()  # one set: no section headings


def test_one_scorable_file_gives_an_undefined_interval_as_null(material, tmp_path):
    code = ev.main(["--data", str(material / "data" / "x.wav"), "--out", str(tmp_path), "--no-plots", "--no-progress"])
    assert code == 0
    stats = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_no_nan)["data"]["systems"]["sinc"]
    assert stats["files"] == 1 and stats["lsd_ci95"] == [None, None] and stats["lsd"] > 0
    assert "| sinc | n/a | n/a | n/a | n/a |" in (tmp_path / "report.md").read_text()


def test_panel_indices_spread_over_the_files():
    assert ev.panel_indices(10, 3) == {0, 4, 9}  # 4.5 rounds half to even
    assert ev.panel_indices(2, 5) == {0, 1}
    assert ev.panel_indices(5, 0) == set()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --data DIR and/or --pairs NB_DIR WB_DIR"),
        (["--pairs", "{m}/nb", "{m}/missing"], "--pairs: {m}/missing: no such directory"),
        (["--pairs", "{m}/nb", "{m}/data"], "no file names in common"),
        (["--data", "{m}/data", "--model", "sinc=folding"], "the label 'sinc' is already used for sinc"),
        (["--data", "{m}/data", "--spectrograms", "-1"], "--spectrograms must be 0 or more"),
        (["--data", "{m}/data", "--model", "{m}/nowhere:int8"], "--model {m}/nowhere:int8: neither a baseline"),
    ],
)
def test_bad_arguments_are_named(material, tmp_path, capsys, args, message):
    args = [a.format(m=material) for a in args]
    assert ev.main([*args, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert message.format(m=material) in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.csv").exists()


def test_pairs_with_two_files_of_one_name_are_refused(tmp_path, capsys):
    for d in ("nb", "wb"):
        (tmp_path / d).mkdir()
    write_wav(tmp_path / "nb" / "a.wav", speech_like(1.0, 8000, seed=1), 8000)
    write_wav(tmp_path / "nb" / "a.flac", speech_like(1.0, 8000, seed=2), 8000)
    write_wav(tmp_path / "wb" / "a.wav", speech_like(1.0, RATE, seed=1), RATE)
    assert ev.main(["--pairs", str(tmp_path / "nb"), str(tmp_path / "wb"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "have the same name; cannot pair them" in capsys.readouterr().err


def test_exported_model_float_and_int8_side_by_side(material, tmp_path):
    """An exported model (the session's tiny export) scored as bwe.runtime runs it, float and int8."""
    from exported_tiny import exported_tiny

    from bwe.runtime import ExportedModel

    _, _, export_dir = exported_tiny()
    code = ev.main(
        ["--model", f"tiny={export_dir}", "--model", f"tiny8={export_dir}:int8", "--data", str(material / "data"),
         "--out", str(tmp_path), "--no-plots", "--no-progress", "--limit", "2"]
    )  # fmt: skip
    assert code == 0
    rows = [r for r in read_csv(tmp_path / "metrics.csv") if r["model"] in ("tiny", "tiny8")]
    assert [(r["file"], r["model"]) for r in rows] == [(f, m) for f in ("silent.wav", "x.wav") for m in ("tiny", "tiny8")]
    models = {"tiny": ExportedModel(export_dir), "tiny8": ExportedModel(export_dir, int8=True)}
    reference, _ = load_audio(material / "data" / "x.wav")
    narrowband = evaluation_degradation(reference)
    outputs = {name: model(narrowband)[: len(reference)] for name, model in models.items()}
    assert not np.array_equal(outputs["tiny"], outputs["tiny8"])
    for row in rows:
        if row["file"] == "x.wav":
            expected = lsd_all(reference, outputs[row["model"]])
            assert float(row["lsd"]) == pytest.approx(expected["lsd"], abs=2e-6)
            assert float(row["lsd_hf"]) == pytest.approx(expected["lsd_hf"], abs=2e-6)
    report = (tmp_path / "report.md").read_text()
    assert "| tiny | 2 |" in report and "| tiny8 | 2 |" in report


def test_visqol_column_scores_like_bwe_metrics_and_counts_what_it_cannot_score(material, suite, tmp_path):
    pytest.importorskip("visqol")
    from bwe.metrics import visqol_speech

    code = ev.main(["--model", "folding", "--data", str(material / "data"), "--pairs", str(material / "nb"),
                    str(material / "wb"), "--out", str(tmp_path), "--visqol", "--no-plots", "--no-progress"])
    assert code == 0
    with open(tmp_path / "metrics.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header[header.index("pesq_wb") + 1] == "visqol"
    assert "visqol" not in next(csv.reader(open(suite / "metrics.csv", newline="", encoding="utf-8")))
    rows = read_csv(tmp_path / "metrics.csv")
    # The other metrics are those of the run without ViSQOL.
    plain = {(r["file"], r["model"], r["set"]): r for r in read_csv(suite / "metrics.csv")}
    for row in rows:
        if row["model"] != "same":
            assert row["lsd"] == plain[(row["file"], row["model"], row["set"])]["lsd"]
    silent = [r for r in rows if r["file"] == "silent.wav"]
    assert silent and all(r["visqol"] == "unscorable" for r in silent)
    reference, _ = load_audio(material / "data" / "x.wav")
    x_sinc = next(r for r in rows if r["file"] == "x.wav" and r["model"] == "sinc")
    with np.errstate(all="ignore"):
        expected = visqol_speech(reference, sinc(evaluation_degradation(reference))[: len(reference)])
    assert float(x_sinc["visqol"]) == pytest.approx(expected, abs=2e-6)
    systems = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_no_nan)["data"]["systems"]
    for model, stats in systems.items():
        scored = [float(r["visqol"]) for r in rows if r["set"] == "data" and r["model"] == model and r["visqol"] != "unscorable"]
        assert stats["visqol"] == pytest.approx(np.mean(scored)) and stats["visqol_scored"] == len(scored)
        assert stats["visqol_unscorable"] == 1  # silent.wav
    report = (tmp_path / "report.md").read_text()
    assert "| ViSQOL | ViSQOL unscorable |" in report and "ViSQOL v3 speech mode" in report


def test_visqol_without_its_package_is_refused_before_any_work(material, tmp_path, capsys, monkeypatch):
    def missing():
        raise ImportError("ViSQOL needs the visqol-python package: pip install 'bwe[eval]'")

    monkeypatch.setattr(ev, "import_visqol", missing)
    code = ev.main(["--data", str(material / "data"), "--out", str(tmp_path / "out"), "--visqol", "--no-progress"])
    assert code == 2
    assert "visqol-python" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

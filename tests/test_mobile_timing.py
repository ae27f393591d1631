"""python -m eval.mobile_timing on the tiny export: every file timed, figures consistent, bad input refused."""

import json
import os
import subprocess
import sys

from exported_tiny import exported_tiny

from bwe.runtime import DELEGATE_NOTICE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "eval.mobile_timing", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


def test_json_report_covers_float_int8_and_whole_signal_paths():
    _, _, out_dir = exported_tiny()
    result = _run(out_dir, "--frames", "30", "--warmup", "5", "--offline-seconds", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert DELEGATE_NOTICE not in result.stderr  # LiteRT's notice is held back, as in bwe-enhance
    report = json.loads(result.stdout)
    with open(os.path.join(out_dir, "metadata.json"), encoding="utf-8") as f:
        macs = json.load(f)["macs_per_frame"]
    assert set(report["streaming"]) == {"streaming", "streaming_int8"}
    for entry in report["streaming"].values():
        p = entry["invoke"]
        assert 0 < p["p50"] <= p["p90"] <= p["p99"]
        assert entry["step"]["p50"] >= p["p50"]  # the step includes the invoke
        assert abs(entry["gmac_per_s_p50"] - macs / (p["p50"] * 1e-3) / 1e9) < 1e-9
    offline = report["offline"]
    assert offline["runtime_blocks_rtf"] > 0 and offline["runtime_blocks_int8_rtf"] > 0
    assert offline["offline_tflite_rtf"] > 0  # a full export has offline.tflite


def test_refuses_a_folder_without_metadata(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 2 and "no metadata.json" in result.stderr and "Traceback" not in result.stderr


def test_refuses_a_folder_with_unreadable_metadata(tmp_path):
    _, _, out_dir = exported_tiny()
    with open(os.path.join(out_dir, "metadata.json"), encoding="utf-8") as f:
        meta = json.load(f)
    (tmp_path / "metadata.json").write_text(json.dumps(dict(meta, format_version=2)))
    result = _run(tmp_path)
    assert result.returncode == 2 and "format_version 2, this bwe reads 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_time_streaming_times_the_runtimes_runner():
    from bwe.runtime import ExportedModel
    from eval.mobile_timing import time_streaming

    _, _, out_dir = exported_tiny()
    result = time_streaming(ExportedModel(out_dir).runner("streaming"), frames=20, warmup=2)
    assert 0 < result["invoke"]["p50"] <= result["step"]["p50"]

"""eval.research pareto: every format of a width scored, timed and weighed; table, JSON and figure."""

import json
import os

import pytest
import soundfile

from bwe.data.degrade import evaluation_degradation
from eval.research.formats import FORMATS
from eval.research.pareto import main
from exported_tiny import exported_tiny
from signals import speech_like


def test_every_format_of_a_width_is_scored_timed_and_weighed(tmp_path, capsys):
    data, nb, wb = (tmp_path / d for d in ("data", "nb", "wb"))
    for folder in (data, nb, wb):
        os.makedirs(folder)
    for i in range(2):
        speech = speech_like(1.0, rate=16000, seed=20 + i)
        soundfile.write(data / f"f{i}.wav", speech, 16000)
        soundfile.write(wb / f"p{i}.wav", speech, 16000)
        soundfile.write(nb / f"p{i}.wav", evaluation_degradation(speech), 8000)
    out = tmp_path / "out"
    assert main(["--width", f"tiny={exported_tiny()[2]}", "--data", str(data), "--pairs", str(nb), str(wb),
                 "--limit", "2", "--frames", "5", "--out", str(out)]) == 0
    with open(out / "pareto.json", encoding="utf-8") as f:
        points = json.load(f)
    assert [p["format"] for p in points] == list(FORMATS)
    for p in points:
        folder, file, _ = FORMATS[p["format"]]
        assert p["bytes"] == os.path.getsize(out / "tiny" / folder / file)
        assert p["ms_per_frame"] > 0
        for scores in (p["data"], p["pairs"]):
            assert 0 < scores["lsd_hf"] < 20 and 1 <= scores["pesq_wb"] <= 4.7
    by_format = {p["format"]: p for p in points}
    assert by_format["int4"]["bytes"] < by_format["dynamic"]["bytes"] < by_format["float32"]["bytes"]
    assert by_format["dynamic"]["data"]["lsd"] == pytest.approx(by_format["float32"]["data"]["lsd"], abs=0.2)
    table = capsys.readouterr().out
    assert table == (out / "pareto.md").read_text(encoding="utf-8")
    assert f"| tiny | 16x8 | {by_format['16x8']['bytes']:,} |" in table
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A later run reuses a width's kept scores and bytes instead of measuring them again, and times it anew;
    points[0]["bytes"] = 123
    (out / "tiny" / "points.json").write_text(json.dumps([dict(p, ms_per_frame=None) for p in points]),
                                              encoding="utf-8")
    # A QAT export adds its 16x8 file as one more point of its width, beside the kept ones.
    assert main(["--width", f"tiny={exported_tiny()[2]}", "--qat", f"tiny={exported_tiny()[2]}", "--data", str(data),
                 "--limit", "2", "--frames", "5", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| tiny | float32 | 123 |" in table
    with open(out / "pareto.json", encoding="utf-8") as f:
        qat = [p for p in json.load(f) if p["format"] == "16x8 QAT"]
    copied = out / "tiny" / "16x8-qat" / "streaming_int8.tflite"
    assert len(qat) == 1 and qat[0]["bytes"] == os.path.getsize(copied) and qat[0]["ms_per_frame"] > 0
    assert 1 <= qat[0]["data"]["pesq_wb"] <= 4.7 and (out / "tiny" / "qat_points.json").is_file()
    assert f"| tiny | 16x8 QAT | {qat[0]['bytes']:,} |" in table and table.endswith(" — |\n")


def test_a_width_without_its_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--width", f"tiny={tmp_path / 'missing'}", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "--width: expected NAME=EXPORT with an existing folder" in capsys.readouterr().err


def test_a_qat_export_of_a_width_not_given_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--width", f"tiny={exported_tiny()[2]}", "--qat", f"other={exported_tiny()[2]}", "--data", str(tmp_path),
              "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "--qat: expected NAME=EXPORT with an existing folder and a NAME given to --width" in capsys.readouterr().err

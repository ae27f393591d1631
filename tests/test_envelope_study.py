"""python -m eval.research envelope-study: its targets are the generator's band levels, its scores are dB at 500 Hz
resolution, and a small study runs end to end (variants, hold-out, JSON)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bwe.config import load_recipe
from bwe.layers.envelope import LEVEL_CENTRE, LEVEL_SPREAD
from eval.research import envelope_study
from signals import speech_like, write_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "pretrained.yaml")

CFG = load_recipe(RECIPE).model


def test_band_levels_of_a_tone_sit_in_its_band_at_its_power():
    t = np.arange(16000 * 2) / 16000
    amplitude = 0.1
    tone = amplitude * np.sin(2 * np.pi * 5250 * t)  # the middle of band 2 (5-5.5 kHz)
    levels = envelope_study.band_levels(CFG, tone, CFG.envelope_bands)
    assert levels.shape == (len(tone) // CFG.envelope_frame, CFG.envelope_bands)
    bels = levels[10:-10] * LEVEL_SPREAD + LEVEL_CENTRE
    # 500 Hz bands of 65 taps: at a band's centre the response is about 0.9 dB down (the bank is
    # complementary in amplitude, not flat inside each band).
    np.testing.assert_allclose(bels[:, 2], np.log10(amplitude ** 2 / 2), atol=0.1)
    assert np.all(bels[:, [0, 4, 5, 6, 7]] < bels[:, [2]] - 2.0)  # bands away from it: 20 dB down and more


def test_coarse_bands_are_split_evenly_into_500_hz_bands():
    coarse = np.array([[(-7.0 - LEVEL_CENTRE) / LEVEL_SPREAD] * 4])  # four 1 kHz bands at -70 dB
    fine = envelope_study.to_fine_db(coarse)
    np.testing.assert_allclose(fine, np.full((1, 8), -70.0 - 10 * np.log10(2)))
    assert envelope_study.parse_variant("ctx:model.envelope_dilations=[1,2];model.envelope_channels=64") == (
        "ctx", ["model.envelope_dilations=[1,2]", "model.envelope_channels=64"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for split, count in (("train", 3), ("valid", 2)):
        for source in ("a", "b"):
            folder = root / split / source
            folder.mkdir(parents=True)
            for i in range(count):
                write_wav(folder / f"{i}.wav", speech_like(1.2, 16000, seed=hash((split, source, i)) % 1000), 16000)
    return root


def test_a_small_study_runs_with_variants_and_a_held_out_source(tmp_path, corpus):
    out = tmp_path / "rows.json"
    common = [sys.executable, "-m", "eval.research", "envelope-study",
              "--train", str(corpus / "train"), "--valid", str(corpus / "valid"),
              "--recipe", RECIPE, "--set", "data.min_bandwidth_hz=0", "model.envelope_channels=16",
              "--steps", "3", "--train-files", "6", "--valid-files", "2"]
    proc = subprocess.run(common + ["--variant", "base:", "--variant", "short:model.envelope_dilations=[1,2]",
                                    "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["base", "short"]
    for r in rows:
        assert 0 < r["valid_error_db"] < 100 and 0 < r["telephone_error_db"] < 100
    assert "| short |" in proc.stdout
    proc = subprocess.run(common + ["--hold-out", "b"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "3 training files, 2 scored files" in proc.stderr  # trained on a only, scored on b only
    proc = subprocess.run(common + ["--hold-out", "c"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode != 0 and "--hold-out: c is not a folder" in proc.stderr

"""eval.listening_test: MUSHRA stimuli for webMUSHRA (prepare) and the statistics (analyze)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pyloudnorm
import pytest
import scipy.stats
import soundfile
import yaml

from eval import listening_test as lt
from signals import speech_like, write_wav

RATE = 16000


# --------------------------------------------------------------------------------------------
# Test material
# --------------------------------------------------------------------------------------------


def phrases_with_pauses(phrase_seconds: list[float], pause_s: float, seed: int) -> np.ndarray:
    """Speech-like phrases separated by near-silent pauses (what sentence boundaries look like)."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, seconds in enumerate(phrase_seconds):
        if i:
            parts.append(1e-4 * rng.standard_normal(int(pause_s * RATE)))
        parts.append(speech_like(seconds, RATE, seed=seed * 100 + i))
    x = np.concatenate(parts)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("refs")
    os.makedirs(root / "spk1")
    # 19.6 s: an 11 s stretch without a pause, then phrases and pauses; the excerpt must start
    # at the first pause, 11 s in, and end at a pause or the file's end.
    write_wav(root / "spk1" / "long.wav", phrases_with_pauses([11.0, 2.5, 2.5, 2.5], 0.55, seed=1), RATE)
    write_wav(root / "spk1" / "mid.wav", phrases_with_pauses([2.5, 2.5], 0.5, seed=2), RATE)  # 5.5 s: used whole
    write_wav(root / "short.wav", speech_like(3.0, RATE, seed=3), RATE)  # too short for MUSHRA
    return str(root)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("mushra") / "test")
    with pytest.warns(UserWarning, match="'sinc' as a model is the same signal as the narrowband anchor"):
        key = lt.prepare(["sinc", "folding"], corpus, out, trials=2, seed=7)
    return out, key


def trial_files(out: str, key: dict, trial: str) -> dict[str, str]:
    """condition -> wav path of one trial, through the key."""
    folder = os.path.join(out, "configs", "resources", "audio", key["test_id"], trial)
    files = {}
    for stimulus, condition in key["trials"][trial]["stimuli"].items():
        files[condition] = os.path.join(folder, f"{stimulus}.wav")
    return files


# --------------------------------------------------------------------------------------------
# Signal building blocks
# --------------------------------------------------------------------------------------------


def test_lowpass_anchor_passes_below_and_removes_above_3500_hz_without_delay():
    t = np.arange(2 * RATE) / RATE
    low = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    high = np.sin(2 * np.pi * 4000.0 * t).astype(np.float32)
    mid = slice(RATE // 2, 3 * RATE // 2)  # away from the edges, where the FIR sees the zero padding
    y_low, y_high = lt.lowpass_anchor(low), lt.lowpass_anchor(high)
    assert y_low.shape == low.shape
    np.testing.assert_allclose(y_low[mid], low[mid], atol=1e-3)  # in phase and at full level: no delay
    assert 20 * np.log10(np.sqrt(np.mean(y_high[mid] ** 2)) / np.sqrt(np.mean(high[mid] ** 2))) < -70.0

    x = speech_like(2.0, RATE, seed=4)
    spectrum = np.abs(np.fft.rfft(lt.lowpass_anchor(x))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    ref = np.abs(np.fft.rfft(x)) ** 2
    assert spectrum[freqs > 3800].sum() < 1e-6 * spectrum.sum()
    assert ref[freqs > 3800].sum() > 1e-2 * ref.sum()  # the test signal does have a high band to remove


def test_choose_excerpt_cuts_at_pauses_within_4_to_10_s():
    x = phrases_with_pauses([3.0, 2.5, 3.0, 2.5, 3.0], 0.55, seed=5)  # 14.2 s
    start, stop, at_pauses = lt.choose_excerpt(x)
    assert at_pauses
    assert 4 * RATE <= stop - start <= 10 * RATE
    energy, hop = lt.frame_energy_db(x, RATE)
    active = np.percentile(energy, 95)
    for boundary in (start, stop):
        if 0 < boundary < len(x):
            local = x[boundary - 160 : boundary + 160]
            assert 10 * np.log10(np.mean(local**2) + 1e-12) < active - 40  # inside a pause


def test_choose_excerpt_without_pauses_ends_at_a_quiet_point_and_rejects_short_clips():
    x = speech_like(15.0, RATE, seed=6)  # only the generator's short gaps, no phrase pauses
    start, stop, at_pauses = lt.choose_excerpt(x)
    assert not at_pauses
    assert 4 * RATE <= stop - start <= 10 * RATE
    with pytest.raises(lt.ListeningTestError, match="shorter than 4"):
        lt.choose_excerpt(x[: 3 * RATE])


def test_loudness_match_equalises_and_lowers_the_level_rather_than_clip():
    meter = pyloudnorm.Meter(RATE)
    x = speech_like(4.0, RATE, seed=8)
    stimuli = {"quiet": 0.05 * x, "peaky": x * np.where(np.arange(len(x)) == 1000, 20.0, 1.0).astype(np.float32)}
    stimuli["peaky"] = np.clip(stimuli["peaky"], -0.99, 0.99)
    matched, level, gains = lt.loudness_match(stimuli, RATE, target_lufs=-10.0)
    assert level < -10.0  # -10 LUFS would have clipped the peaky stimulus
    for y in matched.values():
        assert meter.integrated_loudness(y.astype(np.float64)) == pytest.approx(level, abs=0.05)
        assert np.max(np.abs(y)) <= lt.PEAK_CEILING + 1e-6
    with pytest.raises(lt.ListeningTestError, match="'silent'"):
        lt.loudness_match({"silent": np.zeros(RATE * 4, np.float32)}, RATE)


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------


def test_prepare_writes_a_webmushra_config_with_our_anchors(prepared):
    out, key = prepared
    config_path = os.path.join(out, "configs", f"{key['test_id']}.yaml")
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    assert config["testId"] == key["test_id"] and config["remoteService"] == "service/write.php"
    pages = config["pages"]
    assert pages[0]["type"] == "generic" and pages[1]["type"] == "volume"
    assert pages[-1]["type"] == "finish" and pages[-1]["writeResults"] is True
    assert pages[2][0] == "random"  # webMUSHRA shuffles the trial order per assessor
    trials = pages[2][1:]
    assert [p["id"] for p in trials] == ["trial_01", "trial_02"] == sorted(key["trials"])
    lengths = set()
    for page in trials:
        assert page["type"] == "mushra"
        assert page["createAnchor35"] is False and page["createAnchor70"] is False
        assert page["showWaveform"] is True and page["enableLooping"] is True
        assert sorted(page["stimuli"]) == ["C1", "C2", "C3", "C4"]  # 2 anchors + 2 systems
        for rel in [page["reference"], *page["stimuli"].values()]:
            info = soundfile.info(os.path.join(out, rel))
            assert info.samplerate == RATE and info.channels == 1
            assert 4.0 <= info.duration <= 10.0
            lengths.add((page["id"], info.frames))
        assert len({n for trial, n in lengths if trial == page["id"]}) == 1  # webMUSHRA needs equal lengths
    sources = {entry["source"]: entry for entry in key["trials"].values()}
    assert sorted(sources) == ["spk1/long.wav", "spk1/mid.wav"]
    assert sources["spk1/long.wav"]["cut_at_pauses"] and 11.0 < sources["spk1/long.wav"]["start_s"] < 11.6
    assert "short.wav" not in {t["source"] for t in key["trials"].values()}


def test_prepare_writes_yaml_that_webmushras_yaml_js_reads(prepared):
    """Regression: PyYAML wrote the trial list as "- - random" (a list item that is a list, compact),
    which webMUSHRA's yaml.js reads as one string: the page was rejected with "Type not specified."
    and no trial could run. The browser test (test_listening_browser.py) runs the real parser."""
    out, key = prepared
    with open(os.path.join(out, "configs", f"{key['test_id']}.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert not re.search(r"^ *- +-( |$)", text, re.M)  # no compact nested list anywhere
    pages = re.search(r"^pages:\n((?:    .*\n)+)", text, re.M).group(1)
    assert re.search(r'^    -\n        - "random"\n        - type: "mushra"\n', pages, re.M)
    # Every string is double-quoted, so none can be read as a bool, a number or a comment.
    for line in text.splitlines()[1:]:
        value = line.split(": ", 1)[1] if ": " in line else line.strip()[2:] if line.strip().startswith("- ") else ""
        assert value in ("", "true", "false") or value[0] == '"' or re.fullmatch(r"[0-9.]+", value), line
    config = yaml.safe_load(text)
    assert config["pages"][2][0] == "random" and [p["id"] for p in config["pages"][2][1:]] == sorted(key["trials"])
    finish = config["pages"][-1]
    # A failed submission (server down, results/ not writable) is shown to the assessor, not hidden.
    assert finish["type"] == "finish" and finish["showErrors"] is True and finish["writeResults"] is True
    for page in config["pages"][2][1:]:
        assert "strict" not in page  # webMUSHRA's BS.1534 checks stay on
        assert len(page["stimuli"]) <= lt.MAX_CONDITIONS - 1  # webMUSHRA's limit: 12 besides the reference
        for rel in [page["reference"], *page["stimuli"].values()]:
            assert rel.startswith("configs/resources/audio/") and os.path.isfile(os.path.join(out, rel))


def test_webmushra_yaml_round_trips_awkward_values():
    value = {
        "text": 'He said "no": it\'s <b>fine</b> # not a comment',
        "looks_like": ["true", "123", "null", "- x", "", "Zürich"],
        "numbers": [0.5, 2048, -1],
        "flags": {"shown": True, "hidden": False},
        "nested": [["random", {"type": "mushra", "stimuli": {"C1": "a.wav"}}], [["deep"]]],
    }
    text = lt.webmushra_yaml(value)
    assert yaml.safe_load(text) == value
    assert not re.search(r"^ *- +-( |$)", text, re.M)
    for bad in ({"x": None}, {"x": float("nan")}, {"x": []}, {"a b": 1}, {"on": 1}, {"1x": 1}):
        with pytest.raises(TypeError, match="webMUSHRA config"):
            lt.webmushra_yaml(bad)


def test_prepare_blinds_the_conditions_and_the_key_tells_the_truth(prepared, corpus):
    from bwe.baselines import sinc
    from bwe.data.degrade import evaluation_degradation

    out, key = prepared
    with open(os.path.join(out, "configs", f"{key['test_id']}.yaml"), encoding="utf-8") as f:
        served_text = f.read()
    for word in ("sinc", "folding", "anchor_", "hidden_reference", "long.wav", "mid.wav"):
        assert word not in served_text
    served = [os.path.relpath(os.path.join(d, n), out) for d, _, ns in os.walk(os.path.join(out, "configs")) for n in ns]
    assert all(os.path.basename(p) in {"reference.wav", "C1.wav", "C2.wav", "C3.wav", "C4.wav"} for p in served if p.endswith(".wav"))
    assert os.path.isfile(os.path.join(out, "key.json")) and not any("key" in p for p in served)

    for trial, entry in key["trials"].items():
        assert set(entry["stimuli"].values()) == {"hidden_reference", "anchor_narrowband", "anchor_lp35", "sinc", "folding"}
        assert entry["stimuli"]["reference"] == "hidden_reference"
        files = trial_files(out, key, trial)
        audio = {c: soundfile.read(p, dtype="float32")[0] for c, p in files.items()}
        # The hidden reference is the source excerpt (scaled, faded).
        source, _ = soundfile.read(os.path.join(corpus, entry["source"]), dtype="float32")
        start, stop = round(entry["start_s"] * RATE), round(entry["stop_s"] * RATE)
        excerpt = source[start:stop]
        core = slice(RATE // 10, -RATE // 10)
        assert np.corrcoef(audio["hidden_reference"][core], excerpt[core])[0, 1] > 0.9999
        # The 3.5 kHz anchor has no high band; the reference and folding do.
        freqs = np.fft.rfftfreq(len(excerpt), 1 / RATE)

        def hf_share(y, freqs=freqs):
            p = np.abs(np.fft.rfft(y)) ** 2
            return p[freqs > 4200].sum() / p.sum()

        assert hf_share(audio["anchor_lp35"]) < 1e-5
        assert hf_share(audio["anchor_narrowband"]) < 1e-4
        assert hf_share(audio["hidden_reference"]) > 1e-2 and hf_share(audio["folding"]) > 1e-3
        # The sinc condition is what the key says: the fixed degradation, played back at 16 kHz.
        expected = sinc(evaluation_degradation(source))[start:stop]
        assert np.corrcoef(audio["sinc"][core], expected[core])[0, 1] > 0.999


def test_prepare_matches_loudness_within_half_a_lu(prepared):
    out, key = prepared
    meter = pyloudnorm.Meter(RATE)
    for trial, entry in key["trials"].items():
        assert entry["loudness_lufs"] <= -23.0 + 1e-9
        for condition, path in trial_files(out, key, trial).items():
            y, _ = soundfile.read(path, dtype="float64")
            assert meter.integrated_loudness(y) == pytest.approx(entry["loudness_lufs"], abs=0.5), (trial, condition)
            assert np.max(np.abs(y)) <= lt.PEAK_CEILING + 2.0 / 32768


@pytest.mark.filterwarnings("ignore:'sinc' as a model")
def test_prepare_is_deterministic_in_its_seed_and_leaves_inputs_alone(prepared, corpus, tmp_path):
    out, key = prepared
    before = {p: sha256(p) for p in lt.list_audio_files(corpus)}
    again = lt.prepare(["sinc", "folding"], corpus, str(tmp_path / "again"), trials=2, seed=7)
    assert again == key
    for d, _, names in os.walk(out):
        for name in names:
            path = os.path.join(d, name)
            assert sha256(path) == sha256(os.path.join(tmp_path / "again", os.path.relpath(path, out)))
    other = lt.prepare(["sinc", "folding"], corpus, str(tmp_path / "other"), trials=2, seed=8)
    assert [t["stimuli"] for t in other["trials"].values()] != [t["stimuli"] for t in key["trials"].values()]
    assert {p: sha256(p) for p in lt.list_audio_files(corpus)} == before


@pytest.mark.filterwarnings("ignore:'sinc' as a model")
def test_prepare_rejects_bad_requests_without_writing_anything(corpus, tmp_path):
    out = tmp_path / "t"
    with pytest.raises(lt.ListeningTestError, match="only 2 of the 3 requested trials"):
        lt.prepare(["sinc"], corpus, str(out), trials=3)
    with pytest.raises(lt.ListeningTestError, match="at most 12"):
        lt.prepare([f"s{i}=sinc" for i in range(10)], corpus, str(out))
    with pytest.raises(lt.ListeningTestError, match="--model nonsense: neither a baseline"):
        lt.prepare(["nonsense"], corpus, str(out))
    with pytest.raises(lt.ListeningTestError, match="used twice"):
        lt.prepare(["sinc", "sinc"], corpus, str(out))
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary folder left behind
    out.mkdir()
    with pytest.raises(lt.ListeningTestError, match="already exists"):
        lt.prepare(["sinc"], corpus, str(out), trials=1)
    assert list(out.iterdir()) == []


def test_prepare_with_real_pairs_gives_the_systems_the_real_narrowband_aligned(tmp_path):
    from bwe.baselines import folding, sinc
    from bwe.data.degrade import evaluation_degradation
    from eval.evaluate import shift

    nb, wb = tmp_path / "nb", tmp_path / "wb"
    nb.mkdir()
    wb.mkdir()
    # Each narrowband recording lags (+) or leads (-) its wideband one by 40 samples at 16 kHz, and
    # carries a quiet 1 kHz tone the reference lacks: the proof that it is what the systems are
    # given, not the reference degraded again.
    lags = {"late": 40, "early": -40}
    for seed, (name, lag) in enumerate(lags.items(), start=4):
        reference = phrases_with_pauses([2.5, 2.5], 0.5, seed=seed)
        moved = np.roll(reference, lag)
        t = np.arange(len(reference) // 2) / 8000
        narrowband = evaluation_degradation(moved) + 0.01 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
        write_wav(wb / f"{name}.wav", reference, RATE)
        write_wav(nb / f"{name}.wav", narrowband, 8000)
    write_wav(nb / "lonely.wav", narrowband, 8000)  # no wideband partner: not used
    out = str(tmp_path / "t")
    key = lt.prepare(["folding"], None, out, trials=2, seed=0, pairs=[str(nb), str(wb)])
    assert key["narrowband_input"] == "real recordings (--pairs)"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # a plain mkdir's mode, not mkdtemp's 0700
    for written in ("key.json", os.path.join("configs", "bwe_mushra.yaml")):  # not mkstemp's 0600
        assert os.stat(os.path.join(out, written)).st_mode & 0o777 == 0o666 & ~umask, written
    assert sorted(entry["source"] for entry in key["trials"].values()) == ["early.wav", "late.wav"]
    core = slice(RATE // 10, -RATE // 10)
    for trial, entry in key["trials"].items():
        lag = lags[entry["source"][:-4]]
        assert (entry["narrowband_source"], entry["lag_samples"]) == (entry["source"], lag)
        audio = {c: soundfile.read(p, dtype="float64")[0] for c, p in trial_files(out, key, trial).items()}
        written_reference = soundfile.read(wb / entry["source"], dtype="float64")[0]
        written_narrowband = soundfile.read(nb / entry["source"], dtype="float32")[0]
        # The key's times are the wideband file's: the hidden reference is that stretch of it.
        start, stop = round(entry["start_s"] * RATE), round(entry["stop_s"] * RATE)
        assert np.corrcoef(audio["hidden_reference"][core], written_reference[start:stop][core])[0, 1] > 0.9999
        # Every system's stimulus is its output aligned as eval.evaluate aligns it, cut at the same stretch.
        trimmed = max(0, -lag)  # the reference samples the alignment drops
        for condition, system in (("anchor_narrowband", sinc), ("folding", folding)):
            _, expected = shift(written_reference, system(written_narrowband), lag)
            expected = expected[start - trimmed : stop - trimmed]
            assert np.corrcoef(audio[condition][core], expected[core])[0, 1] > 0.999, (trial, condition)
        # The tone is in the narrowband anchor, 20 dB above the reference's level at 1 kHz.
        freqs = np.fft.rfftfreq(stop - start, 1 / RATE)
        at_1k = np.argmin(np.abs(freqs - 1000))
        level = {c: np.abs(np.fft.rfft(audio[c]))[at_1k - 2 : at_1k + 3].max()
                 for c in ("anchor_narrowband", "hidden_reference")}
        assert level["anchor_narrowband"] > 10 * level["hidden_reference"]


def test_prepare_refuses_bad_pairs(corpus, tmp_path, capsys):
    with pytest.raises(lt.ListeningTestError, match="either --data or --pairs"):
        lt.prepare(["folding"], corpus, str(tmp_path / "t"), pairs=[corpus, corpus])
    with pytest.raises(lt.ListeningTestError, match="--pairs .*nope: not a directory"):
        lt.prepare(["folding"], None, str(tmp_path / "t"), pairs=[str(tmp_path / "nope"), corpus])
    with pytest.raises(lt.ListeningTestError, match="no file names in common"):
        lt.prepare(["folding"], None, str(tmp_path / "t"), pairs=[str(tmp_path), corpus])
    with pytest.raises(lt.ListeningTestError, match="--max-offset-ms"):
        lt.prepare(["folding"], None, str(tmp_path / "t"), pairs=[corpus, corpus], max_offset_ms=-1)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit) as exit_info:
        lt.main(["prepare", "--model", "folding", "--data", corpus, "--pairs", corpus, corpus, "--out", str(tmp_path / "t")])
    assert exit_info.value.code == 2 and "--pairs: not allowed with argument --data" in capsys.readouterr().err
    assert lt.main(["prepare", "--model", "folding", "--pairs", str(tmp_path / "nope"), corpus,
                    "--out", str(tmp_path / "t")]) == 2
    assert "nope: not a directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------

SYSTEMS = ["model", "folding", "sinc"]
CONDITIONS = ["hidden_reference", *SYSTEMS, "anchor_narrowband", "anchor_lp35"]
MEANS = {"hidden_reference": 97, "model": 72, "folding": 55, "sinc": 40, "anchor_narrowband": 38, "anchor_lp35": 30}
N_TRIALS = 20
# assessor -> trials (of 20) in which they rate the hidden reference below 90
REFERENCE_MISSES = {"over": 4, "exactly15": 3, "careful": 0, "one_slip": 1}


def make_results(path: str, assessor_column: str = "session_uuid") -> tuple[dict, dict]:
    """A webMUSHRA-style mushra.csv with known ratings; returns (key, truth[assessor][trial][condition])."""
    rng = np.random.default_rng(11)
    key = {"format": lt.KEY_FORMAT, "test_id": "bwe_mushra", "systems": SYSTEMS, "anchors": list(lt.ANCHORS), "trials": {}}
    for t in range(N_TRIALS):
        labels = [f"C{i + 1}" for i in rng.permutation(len(CONDITIONS) - 1)]
        stimuli = dict(zip(labels, CONDITIONS[1:]))
        stimuli["reference"] = "hidden_reference"
        key["trials"][f"trial_{t + 1:02d}"] = {"stimuli": stimuli}
    truth: dict = {}
    rows = []
    for assessor, misses in REFERENCE_MISSES.items():
        missed = set(rng.choice(N_TRIALS, size=misses, replace=False).tolist())
        for t, (trial, entry) in enumerate(key["trials"].items()):
            for stimulus, condition in entry["stimuli"].items():
                if condition == "hidden_reference":
                    score = int(rng.integers(60, 90)) if t in missed else int(rng.integers(90, 101))
                else:
                    score = int(np.clip(round(MEANS[condition] + 10 * rng.standard_normal()), 0, 100))
                truth.setdefault(assessor, {}).setdefault(trial, {})[condition] = score
                rows.append(
                    {
                        "session_test_id": "bwe_mushra",
                        "assessor": f"name-{assessor}",
                        "session_uuid": f"uuid-{assessor}",
                        "trial_id": trial,
                        "rating_stimulus": stimulus,
                        "rating_score": score,
                        "rating_time": 1234,
                        "rating_comment": "",
                    }
                )
    columns = ["session_test_id", "assessor", "session_uuid", "trial_id", "rating_stimulus", "rating_score", "rating_time", "rating_comment"]
    if assessor_column != "session_uuid":
        columns.remove("session_uuid")
        for r in rows:
            del r["session_uuid"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return key, truth


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    results = str(root / "mushra.csv")
    key, truth = make_results(results)
    with open(root / "key.json", "w", encoding="utf-8") as f:
        json.dump(key, f)
    summary = lt.analyze(results, str(root / "report"), str(root / "key.json"))
    return root, key, truth, summary


def test_analyze_excludes_an_assessor_just_over_15_percent_and_keeps_one_at_15(analysed):
    _, _, _, summary = analysed
    assert summary["excluded"] == ["uuid-over"]
    assert sorted(summary["kept"]) == ["uuid-careful", "uuid-exactly15", "uuid-one_slip"]
    assert summary["screening"]["uuid-exactly15"]["reference_below_90"] == 3
    assert summary["screening"]["uuid-exactly15"]["fraction"] == pytest.approx(0.15)
    assert summary["screening"]["uuid-over"]["reference_below_90"] == 4


def test_analyze_means_and_confidence_intervals_match_scipy(analysed):
    _, _, truth, summary = analysed
    kept = ["careful", "exactly15", "one_slip"]
    for condition in CONDITIONS:
        scores = np.array([truth[a][t][condition] for a in kept for t in truth[a]], dtype=float)
        low, high = scipy.stats.t.interval(0.95, len(scores) - 1, loc=scores.mean(), scale=scipy.stats.sem(scores))
        stats = summary["conditions"][condition]
        assert stats["n"] == len(scores) == 3 * N_TRIALS
        assert stats["mean"] == pytest.approx(scores.mean(), abs=1e-9)
        assert stats["ci95_low"] == pytest.approx(low, abs=1e-9) and stats["ci95_high"] == pytest.approx(high, abs=1e-9)


def test_analyze_wilcoxon_between_systems_matches_scipy(analysed):
    _, _, truth, summary = analysed
    kept = ["careful", "exactly15", "one_slip"]
    tests = {(t["a"], t["b"]): t for t in summary["wilcoxon"]}
    assert set(tests) == {("model", "folding"), ("model", "sinc"), ("folding", "sinc")}  # systems only
    raw = []
    for (a, b), t in tests.items():
        x = np.array([truth[s][tr][a] for s in kept for tr in truth[s]], dtype=float)
        y = np.array([truth[s][tr][b] for s in kept for tr in truth[s]], dtype=float)
        expected = scipy.stats.wilcoxon(x, y)
        assert t["n"] == len(x)
        assert t["p"] == pytest.approx(expected.pvalue, rel=1e-9) and t["statistic"] == pytest.approx(expected.statistic)
        raw.append(expected.pvalue)
    # Holm step-down, written out independently of lt.holm.
    m = len(raw)
    order = np.argsort(raw)
    holm = np.maximum.accumulate([min(1.0, (m - rank) * raw[j]) for rank, j in enumerate(order)])
    listed = list(tests.values())
    for rank, j in enumerate(order):
        assert listed[j]["p_holm"] == pytest.approx(holm[rank], rel=1e-9)
    assert tests[("model", "sinc")]["p"] < 1e-6  # 72 vs 40 over 60 pairs: clearly different


def test_analyze_writes_report_and_box_plot(analysed):
    root, _, _, summary = analysed
    report = (root / "report" / "report.md").read_text(encoding="utf-8")
    assert "| uuid-over | 20 | 4 | 20 % | **yes** |" in report
    assert "| uuid-exactly15 | 20 | 3 | 15 % | no |" in report
    mean = summary["conditions"]["model"]["mean"]
    assert f"| model | 60 | {mean:.1f} |" in report
    assert "Wilcoxon" in report and "ratings.png" in report
    with open(root / "report" / "ratings.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.loads((root / "report" / "summary.json").read_text())["excluded"] == ["uuid-over"]


def test_holm_adjustment_golden_values():
    assert lt.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = lt.holm([0.5, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.5) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_analyze_uses_a_questionnaire_column_when_there_is_no_session_uuid(tmp_path):
    results = str(tmp_path / "mushra.csv")
    key, _ = make_results(results, assessor_column="assessor")
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(key))
    with pytest.raises(lt.ListeningTestError, match="no session_uuid column.*--assessor-column"):
        lt.analyze(results, str(tmp_path / "r"), str(key_path))
    summary = lt.analyze(results, str(tmp_path / "r"), str(key_path), assessor_column="assessor")
    assert summary["excluded"] == ["name-over"]


def _rewrite(path: str, edit) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0])
    rows, columns = edit(rows, columns)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows, cols: (rows[:3] + [{**rows[3], "rating_stimulus": "C9"}] + rows[4:], cols), r"mushra.csv:5: stimulus 'C9'"),
        (lambda rows, cols: (rows[:2] + [{**rows[2], "rating_score": "120"}] + rows[3:], cols), r"mushra.csv:4: rating_score 120.0 outside"),
        (lambda rows, cols: (rows + [rows[0]], cols), r"rated .* twice"),
        (lambda rows, cols: (rows[:1] + [{**rows[1], "trial_id": "trial_99"}] + rows[2:], cols), r"trial_id 'trial_99'"),
        (lambda rows, cols: ([{k: v for k, v in r.items() if k != "rating_score"} for r in rows], [c for c in cols if c != "rating_score"]), r"missing column\(s\) rating_score"),
        (lambda rows, cols: ([{**r, "session_test_id": "other"} for r in rows], cols), r"session_test_id 'other'"),
    ],
)
def test_analyze_rejects_bad_results_naming_the_row(tmp_path, edit, message):
    results = str(tmp_path / "mushra.csv")
    key, _ = make_results(results)
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(key))
    _rewrite(results, edit)
    before = sha256(results)
    with pytest.raises(lt.ListeningTestError, match=message):
        lt.analyze(results, str(tmp_path / "r"), str(key_path))
    assert sha256(results) == before


def test_cli_reports_errors_with_exit_status_2(tmp_path, capsys):
    assert lt.main(["analyze", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err


def test_prepare_with_an_exported_model(corpus, tmp_path):
    """The session's tiny export as a condition: its stimulus is the model's output, cut and scaled."""
    from exported_tiny import exported_tiny

    from bwe.data.degrade import evaluation_degradation
    from bwe.runtime import ExportedModel

    _, _, export_dir = exported_tiny()
    out = str(tmp_path / "t")
    key = lt.prepare([f"tiny={export_dir}", "folding"], corpus, out, trials=1, seed=3)
    assert key["systems"] == ["tiny", "folding"]
    (trial, entry), = key["trials"].items()
    stimulus = soundfile.read(trial_files(out, key, trial)["tiny"], dtype="float64")[0]
    source, _ = soundfile.read(os.path.join(corpus, entry["source"]), dtype="float32")
    start, stop = round(entry["start_s"] * RATE), round(entry["stop_s"] * RATE)
    # The model saw the whole file here but 1 s of context in prepare: compare away from the start.
    expected = ExportedModel(export_dir)(evaluation_degradation(source))[start:stop]
    core = slice(RATE // 2, -RATE // 10)
    gain = 10 ** (entry["gain_db"]["tiny"] / 20)
    np.testing.assert_allclose(stimulus[core], gain * expected[core], atol=5e-4)


# --------------------------------------------------------------------------------------------
# serve (the browser run itself is tests/test_listening_browser.py)
# --------------------------------------------------------------------------------------------

# What webMUSHRA's service/write.php does on PHP 8: appends the ratings, then count()s a null field.
FAKE_WRITE_PHP = r"""<?php
$session = json_decode($_POST['sessionJSON']);
$dir = "../results/" . strtolower($session->testId) . "/";
if (!is_dir($dir)) { mkdir($dir); }
$new = !is_file($dir . "mushra.csv");
$fp = fopen($dir . "mushra.csv", "a");
if ($new) { fputcsv($fp, array("session_test_id", "session_uuid", "trial_id", "rating_stimulus", "rating_score")); }
fputcsv($fp, array($session->testId, $session->uuid, "trial_01", "reference", "100"));
fclose($fp);
$n = count($session->trials[0]->responses[0]->stimulusRating);
"""


def fake_webmushra(root) -> str:
    """webMUSHRA's landmark files, read-only like the copy in a CI checkout."""
    folder = os.path.join(root, "webMUSHRA")
    for rel in lt.WEBMUSHRA_FILES:
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        with open(os.path.join(folder, rel), "w", encoding="utf-8") as f:
            f.write(FAKE_WRITE_PHP if rel.endswith("write.php") else "<html>webMUSHRA</html>\n" if rel == "index.html" else "\n")
    os.makedirs(os.path.join(folder, "results"))
    os.makedirs(os.path.join(folder, "configs"))
    for d, _, names in os.walk(folder, topdown=False):
        for name in names:
            os.chmod(os.path.join(d, name), 0o444)
        os.chmod(d, 0o555)
    return folder


def test_serve_installs_the_test_in_a_writable_copy_and_reuses_it(prepared, tmp_path):
    out, key = prepared
    source = fake_webmushra(tmp_path)
    work, installed = lt.install_test(out, source, str(tmp_path / "server"))
    assert installed == key and work == str(tmp_path / "server")
    for d, _, _ in os.walk(work):
        assert os.stat(d).st_mode & 0o200, d  # webMUSHRA must be able to create results/<testId>/
    assert os.path.isfile(os.path.join(work, "index.html")) and os.path.isfile(os.path.join(work, lt.ROUTER))
    served = os.path.join(work, "configs", "resources", "audio", key["test_id"])
    assert sorted(os.listdir(served)) == sorted(key["trials"])
    with open(os.path.join(work, "configs", f"{key['test_id']}.yaml"), "rb") as f, \
            open(os.path.join(out, "configs", f"{key['test_id']}.yaml"), "rb") as g:
        assert f.read() == g.read()
    assert not any(name == "key.json" for _, _, names in os.walk(work) for name in names)
    # A second serve reuses the copy: the ratings already there stay.
    os.makedirs(os.path.join(work, "results", "bwe_mushra"))
    with open(os.path.join(work, "results", "bwe_mushra", "mushra.csv"), "w") as f:
        f.write("earlier sessions\n")
    lt.install_test(out, str(tmp_path / "nowhere"), work)  # the source is not even looked at
    with open(os.path.join(work, "results", "bwe_mushra", "mushra.csv")) as f:
        assert f.read() == "earlier sessions\n"
    (tmp_path / "other").mkdir()
    with pytest.raises(lt.ListeningTestError, match="other: exists and is not a webMUSHRA folder"):
        lt.install_test(out, source, str(tmp_path / "other"))


def test_serve_errors_say_what_to_install_or_give(prepared, tmp_path, monkeypatch, capsys):
    out, _ = prepared
    monkeypatch.delenv("BWE_WEBMUSHRA", raising=False)
    monkeypatch.setattr(lt, "WEBMUSHRA_CANDIDATES", (str(tmp_path / "none"),))
    with pytest.raises(lt.ListeningTestError, match="webMUSHRA not found: give --webmushra DIR"):
        lt.find_webmushra()
    with pytest.raises(lt.ListeningTestError, match=r"--webmushra .*: not a webMUSHRA folder \(missing index.html"):
        lt.find_webmushra(str(tmp_path))
    monkeypatch.setenv("BWE_WEBMUSHRA", fake_webmushra(tmp_path))
    assert lt.find_webmushra() == str(tmp_path / "webMUSHRA")
    with pytest.raises(lt.ListeningTestError, match="no key.json; give the folder that prepare --out wrote"):
        lt.install_test(str(tmp_path))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    args = ["serve", "--test", out, "--work", str(tmp_path / "server"), "--port", "0"]
    assert lt.main(args) == 2
    assert "php not found: webMUSHRA needs PHP's command line (Debian/Ubuntu: apt-get install php-cli)" in capsys.readouterr().err
    assert not (tmp_path / "server").exists()  # checked before anything is copied
    assert lt.results_folder_name("My_Test-1") == "my_test-1"  # write.php's sanitize()


@pytest.mark.skipif(shutil.which("php") is None, reason="needs php (Debian: apt-get install php-cli)")
def test_serve_runs_php_until_ctrl_c_and_says_where_the_ratings_are(prepared, tmp_path):
    out, key = prepared
    test_dir = str(tmp_path / "test")
    shutil.copytree(out, test_dir)
    command = [sys.executable, "-m", "eval.listening_test", "serve",
               "--test", test_dir, "--webmushra", fake_webmushra(tmp_path), "--port", "0"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Ctrl-C is the user's way to stop it; a test run started in the background of a shell without job
    # control inherits SIGINT ignored, so the child gets the default back.
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        while not any("/?config=" in line for line in lines):
            lines.append(server.stdout.readline())
            assert lines[-1], "serve exited early:\n" + "".join(lines)
        url = next(line.strip() for line in lines if "/?config=" in line)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?config=bwe_mushra\.yaml", url)
        base = url.split("/?")[0]

        def get(path):
            try:
                with urllib.request.urlopen(base + path, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as e:
                return e.code, b""

        assert get("/?config=bwe_mushra.yaml") == (200, b"<html>webMUSHRA</html>\n")
        assert get("/configs/bwe_mushra.yaml")[0] == 200
        assert get("/configs/resources/audio/bwe_mushra/trial_01/reference.wav")[0] == 200
        for hidden in ("/key.json", "/../key.json", "/%2e%2e/key.json", "/results/results_will_be_added_here.txt",
                       f"/{lt.ROUTER}"):
            assert get(hidden)[0] == 404, hidden
        session = {"testId": "bwe_mushra", "uuid": "u-1", "trials": [{"type": "mushra", "id": "trial_01",
                                                                          "responses": [{"stimulus": "reference"}]}]}
        body = urllib.parse.urlencode({"sessionJSON": json.dumps(session)}).encode()
        with urllib.request.urlopen(base + "/service/write.php", data=body, timeout=10) as response:
            # webMUSHRA's DataSender reports a failure unless the answer is 200 and empty.
            assert (response.status, response.read()) == (200, b"")
        server.send_signal(signal.SIGINT)
        rest, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, rest
    results = os.path.join(test_dir, "webmushra", "results", "bwe_mushra", "mushra.csv")
    assert f"1 session(s) in {results}" in rest
    assert f"analyze {results} --key {os.path.join(test_dir, 'key.json')} --out {os.path.join(test_dir, 'results')}" in rest
    with open(results, encoding="utf-8") as f:
        assert f.read().splitlines()[1] == "bwe_mushra,u-1,trial_01,reference,100"
    with open(os.path.join(test_dir, "webmushra", lt.SERVER_LOG), encoding="utf-8") as f:
        assert "ignored PHP 8 TypeError in write.php" in f.read()


@pytest.mark.skipif(shutil.which("php") is None, reason="needs php (Debian: apt-get install php-cli)")
def test_serve_refuses_a_port_another_program_holds(prepared, tmp_path):
    out, _ = prepared
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(lt.ListeningTestError, match=f"php -S 127.0.0.1:{port} did not start .*Address already in use.*--port"):
            with lt.serving(out, fake_webmushra(tmp_path), port=port, work=str(tmp_path / "server")):
                pass

"""MUSHRA listening test after ITU-R BS.1534-3, run in the browser with webMUSHRA.

Three steps, one subcommand each:

    python -m eval.listening_test prepare --model sinc --model folding --model EXPORT_DIR \\
        --data WIDEBAND_DIR --out TEST_DIR [--trials 10] [--seed 0] [--target-lufs -23]
    python -m eval.listening_test serve --test TEST_DIR [--webmushra DIR] [--port 8000]
    python -m eval.listening_test analyze TEST_DIR/webmushra/results/TEST_ID/mushra.csv \\
        --key TEST_DIR/key.json --out REPORT_DIR

``prepare`` picks ``--trials`` clips from the 16 kHz references in ``--data`` (seeded), cuts each
to 4-10 s at pauses, makes every condition of the trial, loudness-matches them and writes the
webMUSHRA configuration. With ``--pairs NB_DIR WB_DIR`` instead of ``--data``, the clips are real
recording pairs (paired by file name, as in ``eval.evaluate``): the 16 kHz recording is the
reference and every system is given the real 8 kHz recording, the lag between the two found and
undone as ``eval.evaluate`` does (within ``--max-offset-ms``). Per trial the assessor hears:

- the reference (the real 16 kHz clip) and, blinded among the conditions, the *hidden reference*
  (webMUSHRA adds it by itself and records it as ``reference``);
- the *narrowband anchor* (``anchor_narrowband``): the systems' input, i.e. the clip through the
  fixed evaluation degradation (:func:`bwe.data.degrade.evaluation_degradation`), or with
  ``--pairs`` the real narrowband recording, played at 16 kHz via :func:`bwe.baselines.sinc` -- the
  low-range anchor of this test;
- the BS.1534-3 *3.5 kHz low-pass anchor* (``anchor_lp35``): the reference low-passed at 3.5 kHz
  (mid-range anchor here, since the narrowband input sits below it in quality);
- every ``--model``: ``sinc``, ``folding`` (bwe.baselines) or an exported model folder
  (bwe.runtime.ExportedModel), each given the same 8 kHz input.

The blinded names C1..Cn are assigned per trial at random (seeded); the key that maps them back is
``TEST_DIR/key.json``, written outside the folder served to the assessors.

``serve`` copies webMUSHRA into ``TEST_DIR/webmushra`` (or reuses that copy, keeping its results),
installs the test's configuration and audio there, runs PHP's built-in server on it, prints the
URL to give the assessors and, on Ctrl-C, where the ratings are and the ``analyze`` command.

``analyze`` reads webMUSHRA's ``results/<testId>/mushra.csv``. Columns used: ``trial_id``,
``rating_stimulus`` (C1..Cn or ``reference``), ``rating_score`` (0-100), ``session_test_id`` (checked
against the key) and an assessor column: ``session_uuid`` (written by webMUSHRA >= 1.4.3; one
session = one assessor) or, with ``--assessor-column``, any questionnaire column such as the
``assessor`` field of the finish page that ``prepare`` writes. It applies BS.1534-3 post-screening,
then reports per condition the mean and 95 % confidence interval (Student t), box plots, and
paired Wilcoxon signed-rank tests between the systems (Holm-corrected).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyloudnorm
import scipy.signal
import scipy.stats

from bwe.baselines import sinc
from bwe.config import OUTPUT_RATE as RATE
from bwe.data.audio import AudioError, list_audio_files, load_audio, save_audio
from bwe.data.degrade import evaluation_degradation
from bwe.files import give_plain_mode, staging_folder, write_text_atomic
from bwe.metrics import estimate_delay
from eval.evaluate import (
    DEFAULT_MAX_OFFSET_MS, EvaluationError, aligned_to_reference, check_new_folder, load_system, paired_stems,
    split_model_spec,
)
from eval.stats import holm, mean_ci95, nan_to_none

HIDDEN_REFERENCE = "hidden_reference"
NARROWBAND_ANCHOR = "anchor_narrowband"
LOWPASS_ANCHOR = "anchor_lp35"
ANCHORS = (NARROWBAND_ANCHOR, LOWPASS_ANCHOR)
# webMUSHRA records the hidden reference under this stimulus name.
WEBMUSHRA_REFERENCE = "reference"
# webMUSHRA's strict mode rejects pages with more conditions (hidden reference included) or
# stimuli longer than 12 s.
MAX_CONDITIONS = 12
MIN_SECONDS = 4.0
MAX_SECONDS = 10.0
LOWPASS_CUTOFF_HZ = 3500.0
FADE_SECONDS = 0.02
# Sample-peak ceiling after loudness matching: -1 dBFS leaves room for the 16-bit rounding and
# for the inter-sample peaks of a browser's resampler to the sound card's rate.
PEAK_CEILING = 10.0 ** (-1.0 / 20.0)
# BS.1534-3 post-screening: an assessor who rates the hidden reference below 90 in more than 15 %
# of the trials is excluded.
SCREEN_SCORE = 90.0
SCREEN_FRACTION = 0.15
KEY_FORMAT = "bwe-mushra-key/1"


class ListeningTestError(ValueError):
    """Bad input to prepare/analyze; the message names the file, column or option."""


# --------------------------------------------------------------------------------------------
# Signal processing for the stimuli
# --------------------------------------------------------------------------------------------


def lowpass_anchor(x: np.ndarray, rate: int = RATE, cutoff_hz: float = LOWPASS_CUTOFF_HZ) -> np.ndarray:
    """The BS.1534-3 low-pass anchor: ``x`` (float [time]) low-passed at ``cutoff_hz``, same length.

    A linear-phase FIR (1023 taps, Kaiser window designed for 80 dB stop-band attenuation and a
    200 Hz transition centred on the cut-off), applied without delay, so the anchor stays
    sample-aligned with the reference and the other conditions.
    """
    numtaps = 1023
    beta = scipy.signal.kaiser_beta(80.0)
    taps = scipy.signal.firwin(numtaps, cutoff_hz, window=("kaiser", beta), fs=rate)
    y = scipy.signal.oaconvolve(np.asarray(x, dtype=np.float64), taps, mode="same")
    return y.astype(np.float32)


def frame_energy_db(x: np.ndarray, rate: int, frame_s: float = 0.02, hop_s: float = 0.01) -> tuple[np.ndarray, int]:
    """Energy in dB of frames of ``frame_s`` every ``hop_s``: ([frames], hop in samples)."""
    frame = max(1, int(round(frame_s * rate)))
    hop = max(1, int(round(hop_s * rate)))
    x = np.asarray(x, dtype=np.float64)
    if len(x) < frame:
        return np.array([10.0 * np.log10(np.mean(x**2) + 1e-12)]), hop
    starts = np.arange(0, len(x) - frame + 1, hop)
    power = np.array([np.mean(x[s : s + frame] ** 2) for s in starts])
    return 10.0 * np.log10(power + 1e-12), hop


def pause_centres(x: np.ndarray, rate: int, min_pause_s: float = 0.15, below_active_db: float = 30.0) -> list[int]:
    """Sample positions of the middles of pauses: runs of frames quieter than the active level - 30 dB.

    The active level is the 95th percentile of the frame energies, so a few loud peaks or a long
    silence do not move it much. Runs shorter than ``min_pause_s`` (stop closures, short gaps
    between words) are not pauses between phrases and are ignored.
    """
    energy, hop = frame_energy_db(x, rate)
    quiet = energy < np.percentile(energy, 95) - below_active_db
    centres = []
    run_start = None
    for i, q in enumerate(np.append(quiet, False)):
        if q and run_start is None:
            run_start = i
        elif not q and run_start is not None:
            if (i - run_start) * hop >= min_pause_s * rate:
                centres.append(int(((run_start + i) / 2.0) * hop + 0.01 * rate))
            run_start = None
    return centres


def choose_excerpt(
    x: np.ndarray, rate: int = RATE, min_s: float = MIN_SECONDS, max_s: float = MAX_SECONDS
) -> tuple[int, int, bool]:
    """Pick the span of ``x`` to play: ``(start, stop, at_pauses)`` in samples.

    Candidate boundaries are the file's ends and the centres of its pauses. The longest span
    between two boundaries that lasts ``min_s``..``max_s`` wins (the earliest on a tie), and
    ``at_pauses`` is True. Without one (continuous speech), the excerpt starts at the first
    boundary that leaves room and ends at the quietest 10 ms between ``min_s`` and ``max_s`` later,
    and ``at_pauses`` is False.

    Raises:
        ListeningTestError: ``x`` is shorter than ``min_s``.
    """
    n = len(x)
    lo, hi = int(round(min_s * rate)), int(round(max_s * rate))
    if n < lo:
        raise ListeningTestError(f"clip of {n / rate:.2f} s is shorter than {min_s} s")
    bounds = sorted(set([0, n] + [c for c in pause_centres(x, rate) if 0 < c < n]))
    best = None
    for i, a in enumerate(bounds):
        for b in bounds[i + 1 :]:
            if lo <= b - a <= hi and (best is None or b - a > best[1] - best[0]):
                best = (a, b)
    if best is not None:
        return best[0], best[1], True
    start = max(b for b in bounds if b <= n - lo)
    energy, hop = frame_energy_db(x[start : start + hi], rate)
    first, last = int(math.ceil(lo / hop)), min(len(energy) - 1, hi // hop)
    quietest = first + int(np.argmin(energy[first : last + 1])) if last >= first else first
    return start, min(n, start + quietest * hop), False


def fade(x: np.ndarray, rate: int = RATE, seconds: float = FADE_SECONDS) -> np.ndarray:
    """Raised-cosine fade-in and fade-out, so a cut never starts or stops with a click."""
    n = min(int(round(seconds * rate)), len(x) // 2)
    env = np.ones(len(x))
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        env[:n] = ramp
        env[len(x) - n :] = ramp[::-1]
    return (np.asarray(x, dtype=np.float64) * env).astype(np.float32)


def loudness_match(
    stimuli: dict[str, np.ndarray], rate: int = RATE, target_lufs: float = -23.0, ceiling: float = PEAK_CEILING
) -> tuple[dict[str, np.ndarray], float, dict[str, float]]:
    """Scale every stimulus to the same integrated loudness (ITU-R BS.1770 via pyloudnorm).

    The common level is ``target_lufs``, lowered for the whole trial if that would push any
    stimulus's sample peak above ``ceiling``: equal loudness matters more than the absolute level,
    and clipping would add a distortion of its own.

    Returns:
        ``(scaled stimuli, the level used in LUFS, gain applied to each stimulus in dB)``.

    Raises:
        ListeningTestError: a stimulus is too quiet for a loudness measurement (silence).
    """
    meter = pyloudnorm.Meter(rate)
    loudness = {}
    for name, x in stimuli.items():
        value = meter.integrated_loudness(np.asarray(x, dtype=np.float64))
        if not np.isfinite(value):
            raise ListeningTestError(f"stimulus {name!r} is silent: its loudness cannot be measured")
        loudness[name] = value
    level = float(target_lufs)
    for name, x in stimuli.items():
        peak = float(np.max(np.abs(x)))
        if peak > 0:
            level = min(level, loudness[name] + 20.0 * np.log10(ceiling / peak))
    gains = {name: level - loudness[name] for name in stimuli}
    scaled = {
        name: (np.asarray(x, dtype=np.float64) * 10.0 ** (gains[name] / 20.0)).astype(np.float32)
        for name, x in stimuli.items()
    }
    return scaled, level, gains


# --------------------------------------------------------------------------------------------
# Systems under test
# --------------------------------------------------------------------------------------------

System = Callable[[np.ndarray], np.ndarray]


def resolve_system(spec: str) -> tuple[str, System]:
    """``--model`` value -> ``(condition name, callable 8 kHz [n] -> 16 kHz [2n])``.

    The same values as ``eval.evaluate`` takes (and loaded the same way): ``sinc`` / ``folding``
    (the baselines), an exported model folder (named by its path), or ``NAME=DIR``.
    """
    label, target = split_model_spec(spec)
    try:
        return label, load_system(target)
    except EvaluationError as e:
        raise ListeningTestError(str(e)) from None


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def make_conditions(reference: np.ndarray, systems: Sequence[tuple[str, System]]) -> dict[str, np.ndarray]:
    """All conditions of one trial, sample-aligned with and as long as ``reference`` (16 kHz [n]).

    The systems and the narrowband anchor all start from the same 8 kHz signal, the reference
    through the fixed evaluation degradation.
    """
    n = len(reference)
    narrowband = evaluation_degradation(reference)
    conditions = {
        HIDDEN_REFERENCE: np.asarray(reference, dtype=np.float32),
        NARROWBAND_ANCHOR: _fit_length(sinc(narrowband), n),
        LOWPASS_ANCHOR: lowpass_anchor(reference),
    }
    for name, system in systems:
        conditions[name] = _fit_length(system(narrowband), n)
    return conditions


def paired_conditions(wideband: np.ndarray, narrow_path: str, systems: Sequence[tuple[str, System]],
                      max_offset: int) -> tuple[dict[str, np.ndarray], int]:
    """All conditions of a trial made from a real recording pair, and the lag undone (16 kHz samples).

    The 16 kHz recording ``wideband`` is the reference; the systems and the narrowband anchor are
    given the real 8 kHz recording at ``narrow_path``, whole, and their outputs are aligned to the
    reference by the lag between it and the sinc-upsampled input, found and undone as
    ``eval.evaluate`` does. All are equally long.
    """
    narrowband, _ = load_audio(narrow_path, target_rate=RATE // 2)
    anchor = sinc(narrowband)
    offset = estimate_delay(wideband, anchor, max_offset)
    outputs = {NARROWBAND_ANCHOR: anchor, **{name: system(narrowband) for name, system in systems}}
    reference, aligned = aligned_to_reference(wideband, outputs, offset)
    conditions = {
        HIDDEN_REFERENCE: reference,
        NARROWBAND_ANCHOR: aligned[NARROWBAND_ANCHOR],
        LOWPASS_ANCHOR: lowpass_anchor(reference),
    }
    conditions.update({name: _fit_length(aligned[name], len(reference)) for name, _ in systems})
    return conditions, offset


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------

START_PAGE = (
    "<p>In each trial you hear a <b>reference</b> recording and several versions of it, labelled "
    "C1, C2, ... in random order. One of them is the reference itself, hidden among the others.</p>"
    "<p>Rate the <b>basic audio quality</b> of each version against the reference on the 0-100 scale: "
    "any audible difference from the reference counts as an impairment. Give the hidden reference "
    "100. Listen as often as you like and use the loop to compare short passages.</p>"
    "<p>Use headphones in a quiet room. Set a comfortable volume on the next page and keep it.</p>"
)
TRIAL_PAGE = "Rate the basic audio quality of every condition against the reference (100 = no audible difference)."


def webmushra_yaml(value: dict) -> str:
    """``value`` (dicts, lists, str, bool, int, float) as YAML in the block style webMUSHRA can read.

    webMUSHRA parses its configuration with yaml.js, not a full YAML parser: a list nested in a
    list written compactly (``- - random``, what PyYAML emits) comes back as one string, and the
    page is then rejected as "Type not specified.". Here a nested list always starts on the line
    after a bare ``-``, as in webMUSHRA's own configs/default.yaml, and every string is written
    double-quoted (JSON escapes), so no value can be read as a number, a bool or a comment.
    """
    return "\n".join(_yaml_lines(value, 0)) + "\n"


# Bare words a YAML 1.1 parser reads as bools or null: not allowed as (unquoted) keys.
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"webMUSHRA config: cannot write {value!r} ({type(value).__name__})")


def _yaml_lines(value, indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)) or str(key).lower() in _YAML_WORDS:
                raise TypeError(f"webMUSHRA config: key {key!r} is not a plain name")
            if isinstance(item, (dict, list)):
                lines.append(f"{pad}{key}:")
                lines += _yaml_lines(item, indent + 4)
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                # "- key: value" with the other keys aligned under the first (as default.yaml does)
                inner = _yaml_lines(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines += inner[1:]
            elif isinstance(item, list):
                lines.append(f"{pad}-")
                lines += _yaml_lines(item, indent + 4)
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    else:
        raise TypeError(f"webMUSHRA config: expected a mapping or a list, got {value!r}")
    if not lines:
        raise TypeError("webMUSHRA config: an empty mapping or list cannot be written in block style")
    return lines


def _clip_candidates(data_dir: str | None, pairs: Sequence[str] | None,
                     rng: np.random.Generator) -> list[tuple[str, str | None]]:
    """The (wideband path, real narrowband path or None) to cut trials from, in a seeded random order."""
    if pairs:
        for folder in pairs:
            if not os.path.isdir(folder):
                raise ListeningTestError(f"--pairs {folder}: not a directory")
        try:
            candidates = [(wide, narrow) for narrow, wide in paired_stems(*pairs)[0]]
        except EvaluationError as e:
            raise ListeningTestError(str(e)) from None
    else:
        candidates = [(path, None) for path in list_audio_files(data_dir)]
        if not candidates:
            raise ListeningTestError(f"--data {data_dir}: no audio files found")
    order = rng.permutation(len(candidates))
    return [candidates[i] for i in order]


def _check_prepare_arguments(models: Sequence[str], data_dir: str | None, out_dir: str, trials: int, test_id: str,
                             pairs: Sequence[str] | None, max_offset_ms: float) -> str:
    """Refuse bad ``prepare`` arguments before anything runs; returns the flag that names the clips' source."""
    if (data_dir is None) == (not pairs):
        raise ListeningTestError("give either --data or --pairs NB_DIR WB_DIR")
    if max_offset_ms < 0:
        raise ListeningTestError(f"--max-offset-ms must be 0 or more, got {max_offset_ms}")
    source_flag = f"--data {data_dir}" if data_dir is not None else f"--pairs {' '.join(pairs)}"
    if not models:
        raise ListeningTestError("give at least one --model (sinc, folding or an exported model folder)")
    if trials < 1:
        raise ListeningTestError(f"--trials must be at least 1, got {trials}")
    if not test_id.replace("_", "").replace("-", "").isalnum():
        raise ListeningTestError(f"--test-id {test_id!r}: use letters, digits, '_' and '-' only")
    try:
        check_new_folder(out_dir, f"--out {out_dir}")
    except EvaluationError as e:
        raise ListeningTestError(str(e)) from None
    return source_flag


def _named_systems(models: Sequence[str]) -> tuple[list[tuple[str, System]], list[str]]:
    """The systems of ``--model`` and their names, checked: unique, not a condition's name, few enough."""
    systems = [resolve_system(spec) for spec in models]
    names = [name for name, _ in systems]
    reserved = {HIDDEN_REFERENCE, *ANCHORS}
    for name in names:
        if name in reserved or names.count(name) > 1:
            raise ListeningTestError(f"--model name {name!r} is reserved or used twice; name it with NAME=SPEC")
    n_conditions = len(reserved) + len(systems)
    if n_conditions > MAX_CONDITIONS:
        raise ListeningTestError(
            f"{n_conditions} conditions per trial (hidden reference, 2 anchors, {len(systems)} models); "
            f"MUSHRA (and webMUSHRA) allow at most {MAX_CONDITIONS}"
        )
    if "sinc" in names:
        warnings.warn(
            f"'sinc' as a model is the same signal as the narrowband anchor {NARROWBAND_ANCHOR!r}; "
            "both are kept (a consistency check of the assessors)",
            stacklevel=3,  # the caller of prepare
        )
    return systems, names


@dataclass(frozen=True)
class _TrialSettings:
    """What every trial of one ``prepare`` run shares."""

    work: str  # the staging folder
    audio_rel: str  # the audio folder, relative to work
    systems: Sequence[tuple[str, System]]
    max_offset: int  # samples at RATE
    target_lufs: float
    trials: int
    shuffle_per_assessor: bool
    data_dir: str | None
    pairs: Sequence[str] | None


@dataclass(frozen=True)
class _Excerpt:
    """One trial's conditions, cut and faded, and where the cut lies in the source file."""

    conditions: dict[str, np.ndarray]
    start: int  # samples at RATE from the start of the file
    stop: int
    at_pauses: bool
    lag: int | None  # a real pair's lag; None for a simulated input


class _Unusable(Exception):
    """A clip no excerpt can be cut from; the message names it."""


def _cut_excerpt(path: str, narrow_path: str | None, settings: _TrialSettings) -> _Excerpt:
    """Choose the excerpt of a clip and make its conditions; raises _Unusable for a clip too short."""
    systems = settings.systems
    # Where x starts in the source file: a real pair's aligned reference may have lost its
    # first samples to the lag; the key gives times in the file.
    file_start, lag = 0, None
    x, _ = load_audio(path, target_rate=RATE)
    # A real pair: the systems run on the whole narrowband recording (prompts are short). One
    # too short to play is left to choose_excerpt to refuse, before any system runs on it.
    if narrow_path is not None and len(x) >= MIN_SECONDS * RATE:
        conditions, lag = paired_conditions(x, narrow_path, systems, settings.max_offset)
        x, lo, file_start = conditions[HIDDEN_REFERENCE], 0, max(0, -lag)
    try:
        start, stop, at_pauses = choose_excerpt(x)
    except ListeningTestError as e:
        raise _Unusable(f"{path}: {e}") from None
    if narrow_path is None:
        # The systems see one second of context on each side of the excerpt (streaming models
        # warm up, filters settle); the cut is made afterwards, identically for all conditions.
        margin = RATE
        lo, hi = max(0, start - margin), min(len(x), stop + margin)
        if (hi - lo) % 2:  # an even length keeps the 16 kHz and 8 kHz sample counts exact
            if lo > 0:
                lo -= 1
            elif hi > stop:
                hi -= 1
        conditions = make_conditions(x[lo:hi], systems)
    cut = {name: fade(y[start - lo : stop - lo]) for name, y in conditions.items()}
    return _Excerpt(cut, file_start + start, file_start + stop, at_pauses, lag)


def _write_stimuli(matched: dict[str, np.ndarray], trial_dir: str, trial_rel: str,
                   rng: np.random.Generator) -> tuple[dict[str, str], dict[str, str]]:
    """Write a trial's reference and its conditions as C1..Cn in a random order.

    Returns webMUSHRA's stimuli (label: file) and the key's stimuli (label: condition).
    """
    blinded = list(matched)
    order = rng.permutation(len(blinded))
    stimulus_names = {}
    os.makedirs(trial_dir)
    save_audio(os.path.join(trial_dir, "reference.wav"), matched[HIDDEN_REFERENCE], RATE)
    stimuli_config = {}
    for cond_index in order:
        condition = blinded[cond_index]
        if condition == HIDDEN_REFERENCE:
            # webMUSHRA adds the reference file as the hidden reference itself.
            continue
        label = f"C{len(stimuli_config) + 1}"
        save_audio(os.path.join(trial_dir, f"{label}.wav"), matched[condition], RATE)
        stimuli_config[label] = f"{trial_rel}/{label}.wav"
        stimulus_names[label] = condition
    stimulus_names[WEBMUSHRA_REFERENCE] = HIDDEN_REFERENCE
    return stimuli_config, stimulus_names


def _make_trial(settings: _TrialSettings, number: int, path: str, narrow_path: str | None,
                rng: np.random.Generator) -> tuple[dict, dict]:
    """Make trial ``number`` (1-based) from a clip; returns its webMUSHRA page and its key entry.

    Raises _Unusable for a clip too short for an excerpt, before anything is written.
    """
    excerpt = _cut_excerpt(path, narrow_path, settings)
    trial_id = f"trial_{number:02d}"
    try:
        matched, level, gains = loudness_match(excerpt.conditions, RATE, settings.target_lufs)
    except ListeningTestError as e:
        raise ListeningTestError(f"{path}: {e}") from None
    trial_rel = f"{settings.audio_rel}/{trial_id}"
    stimuli_config, stimulus_names = _write_stimuli(matched, os.path.join(settings.work, trial_rel), trial_rel, rng)
    page = {
        "type": "mushra",
        "id": trial_id,
        # With a per-assessor shuffle a page number would be wrong, so it only shows in fixed order.
        "name": "MUSHRA" if settings.shuffle_per_assessor else f"Trial {number} of {settings.trials}",
        "content": TRIAL_PAGE,
        "showWaveform": True,
        "enableLooping": True,
        "reference": f"{trial_rel}/reference.wav",
        "createAnchor35": False,
        "createAnchor70": False,
        "randomize": True,
        "showConditionNames": False,
        "stimuli": stimuli_config,
    }
    source_dir = settings.data_dir if narrow_path is None else settings.pairs[1]
    entry = {
        "source": os.path.relpath(path, source_dir) if os.path.isdir(source_dir) else os.path.basename(path),
        **({} if narrow_path is None else {"narrowband_source": os.path.relpath(narrow_path, settings.pairs[0]),
                                           "lag_samples": int(excerpt.lag)}),
        "start_s": round(excerpt.start / RATE, 4),
        "stop_s": round(excerpt.stop / RATE, 4),
        "cut_at_pauses": bool(excerpt.at_pauses),
        "loudness_lufs": round(level, 3),
        "gain_db": {name: round(float(g), 3) for name, g in gains.items()},
        "stimuli": stimulus_names,
    }
    return page, entry


def _progress_bar(total: int, progress: bool):
    """A tqdm bar over the trials (hidden unless ``progress``), or None without tqdm."""
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc="trials", unit="trial", disable=not progress)
    except ImportError:  # tqdm is a dependency of bwe; this only guards a stripped install
        return None


def _make_trials(settings: _TrialSettings, candidates: Sequence[tuple[str, str | None]], rng: np.random.Generator,
                 progress: bool, source_flag: str) -> tuple[list[dict], dict[str, dict]]:
    """Make trials from the candidates in order until there are enough; returns the pages and the key's trials."""
    key_trials: dict[str, dict] = {}
    pages = []
    skipped = []
    bar = _progress_bar(settings.trials, progress)
    for path, narrow_path in candidates:
        if len(key_trials) == settings.trials:
            break
        try:
            page, entry = _make_trial(settings, len(key_trials) + 1, path, narrow_path, rng)
        except _Unusable as e:
            skipped.append(str(e))
            continue
        pages.append(page)
        key_trials[page["id"]] = entry
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if len(key_trials) < settings.trials:
        detail = f"; skipped: {'; '.join(skipped[:5])}" if skipped else ""
        raise ListeningTestError(
            f"{source_flag}: only {len(key_trials)} of the {settings.trials} requested trials could be made "
            f"from {len(candidates)} files (each needs at least {MIN_SECONDS:g} s){detail}"
        )
    return pages, key_trials


def _webmushra_config(test_id: str, pages: list[dict], shuffle_per_assessor: bool) -> dict:
    """webMUSHRA's test configuration: instructions, volume, the trial pages, finish."""
    trial_pages: list = (["random"] + pages) if shuffle_per_assessor else pages
    return {
        "testname": "Speech bandwidth extension (MUSHRA)",
        "testId": test_id,
        "bufferSize": 2048,
        "stopOnErrors": True,
        "showButtonPreviousPage": False,
        "remoteService": "service/write.php",
        "pages": [
            {"type": "generic", "id": "instructions", "name": "Instructions", "content": START_PAGE},
            {
                "type": "volume",
                "id": "volume",
                "name": "Volume",
                "content": "Play the example and set a comfortable listening level. Keep it for the whole test.",
                "stimulus": pages[0]["reference"],
                "defaultVolume": 0.5,
            },
            trial_pages,
            {
                "type": "finish",
                "name": "Thank you",
                "content": "Thank you for taking part. Press Send to store your ratings.",
                "showResults": False,
                "writeResults": True,
                # Without it a failed submission (server down, results/ not writable) looks like success.
                "showErrors": True,
                "questionnaire": [{"type": "text", "label": "Assessor code", "name": "assessor"}],
            },
        ],
    }


def _key_dict(test_id: str, seed: int, target_lufs: float, names: list[str], models: Sequence[str],
              pairs: Sequence[str] | None, key_trials: dict[str, dict]) -> dict:
    """The key (key.json): what the blinded names of every trial stand for, and how the test was made."""
    return {
        "format": KEY_FORMAT,
        "test_id": test_id,
        "seed": seed,
        "rate": RATE,
        "target_lufs": target_lufs,
        "systems": names,
        "models": list(models),
        "narrowband_input": "real recordings (--pairs)" if pairs else "the fixed evaluation degradation",
        "anchors": list(ANCHORS),
        "trials": key_trials,
    }


def prepare(
    models: Sequence[str],
    data_dir: str | None,
    out_dir: str,
    trials: int = 10,
    seed: int = 0,
    target_lufs: float = -23.0,
    test_id: str = "bwe_mushra",
    shuffle_per_assessor: bool = True,
    progress: bool = False,
    pairs: Sequence[str] | None = None,
    max_offset_ms: float = DEFAULT_MAX_OFFSET_MS,
) -> dict:
    """Build the test in ``out_dir`` (which must not exist yet); returns the key (also in key.json).

    The clips come from the references in ``data_dir``, or, with ``pairs`` = (NB_DIR, WB_DIR) and
    ``data_dir`` None, from real recording pairs (:func:`paired_conditions`).

    Layout: ``out_dir/configs/<test_id>.yaml`` and ``out_dir/configs/resources/audio/<test_id>/
    trial_XX/{reference,C1..Cn}.wav`` -- copy ``out_dir/configs`` into webMUSHRA's ``configs/`` --
    and ``out_dir/key.json`` (keep it away from the assessors). Everything is written to a
    temporary folder first and renamed into place, so a failed run leaves nothing behind.
    """
    source_flag = _check_prepare_arguments(models, data_dir, out_dir, trials, test_id, pairs, max_offset_ms)
    systems, names = _named_systems(models)
    rng = np.random.default_rng(seed)
    candidates = _clip_candidates(data_dir, pairs, rng)
    work = staging_folder(out_dir)
    try:
        audio_rel = f"configs/resources/audio/{test_id}"
        os.makedirs(os.path.join(work, audio_rel))
        settings = _TrialSettings(work, audio_rel, systems, int(round(max_offset_ms * RATE / 1000.0)), target_lufs,
                                  trials, shuffle_per_assessor, data_dir, pairs)
        pages, key_trials = _make_trials(settings, candidates, rng, progress, source_flag)
        write_text_atomic(
            os.path.join(work, "configs", f"{test_id}.yaml"),
            "# webMUSHRA configuration written by bwe's python -m eval.listening_test prepare; see eval/README.md\n"
            + webmushra_yaml(_webmushra_config(test_id, pages, shuffle_per_assessor)),
        )
        key = _key_dict(test_id, seed, target_lufs, names, models, pairs, key_trials)
        write_text_atomic(os.path.join(work, "key.json"), json.dumps(key, indent=2) + "\n")
        os.rename(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return key


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rating:
    assessor: str
    trial: str
    condition: str
    score: float


def read_results(
    results_csv: str, key: dict | None = None, assessor_column: str | None = None
) -> list[Rating]:
    """webMUSHRA's mushra.csv -> ratings with the blinded names mapped back to conditions.

    Without a key the stimulus names are taken as condition names (``reference`` -> the hidden
    reference), for tests whose configuration did not blind them.

    Raises:
        ListeningTestError: missing columns, a score outside 0-100, an unknown trial or stimulus,
            a test id other than the key's, or one assessor rating one stimulus twice.
    """
    try:
        with open(results_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise ListeningTestError(f"{results_csv}: no such file") from None
    if not rows:
        raise ListeningTestError(f"{results_csv}: no ratings (empty or header only)")
    columns = list(rows[0])
    if assessor_column is None:
        assessor_column = "session_uuid" if "session_uuid" in columns else None
    required = ["trial_id", "rating_stimulus", "rating_score"]
    if assessor_column is None:
        raise ListeningTestError(
            f"{results_csv}: no session_uuid column to tell assessors apart (older webMUSHRA); "
            f"name one with --assessor-column (columns: {', '.join(columns)})"
        )
    missing = [c for c in required + [assessor_column] if c not in columns]
    if missing:
        raise ListeningTestError(f"{results_csv}: missing column(s) {', '.join(missing)} (columns: {', '.join(columns)})")
    ratings = []
    seen = set()
    for line, row in enumerate(rows, start=2):
        where = f"{results_csv}:{line}"
        if key is not None and row.get("session_test_id") not in (None, "", key["test_id"]):
            raise ListeningTestError(f"{where}: session_test_id {row['session_test_id']!r} is not the key's {key['test_id']!r}")
        trial, stimulus = row["trial_id"], row["rating_stimulus"]
        try:
            score = float(row["rating_score"])
        except ValueError:
            raise ListeningTestError(f"{where}: rating_score {row['rating_score']!r} is not a number") from None
        if not 0.0 <= score <= 100.0:
            raise ListeningTestError(f"{where}: rating_score {score} outside 0-100")
        if key is None:
            condition = HIDDEN_REFERENCE if stimulus == WEBMUSHRA_REFERENCE else stimulus
        else:
            if trial not in key["trials"]:
                raise ListeningTestError(f"{where}: trial_id {trial!r} is not in the key")
            names = key["trials"][trial]["stimuli"]
            if stimulus not in names:
                raise ListeningTestError(f"{where}: stimulus {stimulus!r} is not in the key's trial {trial}")
            condition = names[stimulus]
        assessor = row[assessor_column]
        if (assessor, trial, condition) in seen:
            raise ListeningTestError(f"{where}: assessor {assessor!r} rated {stimulus} of {trial} twice")
        seen.add((assessor, trial, condition))
        ratings.append(Rating(assessor, trial, condition, score))
    return ratings


def post_screen(ratings: Sequence[Rating]) -> tuple[list[str], dict[str, dict]]:
    """BS.1534-3 post-screening by the hidden reference.

    An assessor is excluded if they rated the hidden reference below 90 in more than 15 % of the
    trials they rated; exactly 15 % is kept (the comparison is done in integers, so 3 of 20 is 15 %).

    Returns:
        ``(kept assessors, per assessor {"trials", "reference_below_90", "fraction", "excluded"})``.
    """
    trials: dict[str, set] = {}
    below: dict[str, int] = {}
    for r in ratings:
        trials.setdefault(r.assessor, set()).add(r.trial)
        below.setdefault(r.assessor, 0)
        if r.condition == HIDDEN_REFERENCE and r.score < SCREEN_SCORE:
            below[r.assessor] += 1
    table = {}
    for assessor in sorted(trials):
        n, k = len(trials[assessor]), below[assessor]
        table[assessor] = {
            "trials": n,
            "reference_below_90": k,
            "fraction": k / n,
            "excluded": 100 * k > round(100 * SCREEN_FRACTION) * n,
        }
    kept = [a for a, row in table.items() if not row["excluded"]]
    return kept, table


def paired_tests(ratings: Sequence[Rating], systems: Sequence[str]) -> list[dict]:
    """Two-sided Wilcoxon signed-rank tests between every pair of systems.

    Pairs are the two systems' scores from the same assessor in the same trial. Zero differences
    are dropped (``zero_method="wilcox"``); a pair whose differences are all zero gets p = NaN.
    """
    by_item: dict[tuple[str, str], dict[str, float]] = {}
    for r in ratings:
        by_item.setdefault((r.assessor, r.trial), {})[r.condition] = r.score
    tests = []
    for a, b in itertools.combinations(systems, 2):
        pairs = [(v[a], v[b]) for v in by_item.values() if a in v and b in v]
        x = np.array([p[0] for p in pairs])
        y = np.array([p[1] for p in pairs])
        if len(pairs) == 0 or np.all(x == y):
            stat, p = float("nan"), float("nan")
        else:
            res = scipy.stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
            stat, p = float(res.statistic), float(res.pvalue)
        diff = float(np.median(x - y)) if len(pairs) else float("nan")
        tests.append({"a": a, "b": b, "n": len(pairs), "median_difference": diff, "statistic": stat, "p": p})
    for test, adjusted in zip(tests, holm([t["p"] for t in tests])):
        test["p_holm"] = adjusted
    return tests


def _fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _conditions_in_order(used: Sequence[Rating], key: dict | None) -> tuple[list[str], list[str]]:
    """The systems rated (the key's order, else sorted) and every condition in report order.

    Report order: hidden reference, systems, anchors, then anything else rated, sorted.
    """
    present = {r.condition for r in used}
    if key is not None:
        systems = [s for s in key["systems"] if s in present]
    else:
        systems = sorted(c for c in present if c != HIDDEN_REFERENCE and c not in ANCHORS)
    order = [HIDDEN_REFERENCE] + systems + [a for a in ANCHORS if a in present]
    order += sorted(present - set(order))
    return systems, order


def _condition_stats(used: Sequence[Rating], order: Sequence[str]) -> dict[str, dict]:
    """Per condition: number of ratings, mean with its 95 % confidence interval, standard deviation."""
    stats = {}
    for condition in order:
        scores = [r.score for r in used if r.condition == condition]
        mean, lo, hi = mean_ci95(scores)
        stats[condition] = {"n": len(scores), "mean": mean, "ci95_low": lo, "ci95_high": hi, "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan")}
    return stats


def _screening_lines(results_csv: str, screening: dict[str, dict], kept: Sequence[str]) -> list[str]:
    """The report's title and its post-screening table."""
    lines = [
        "# MUSHRA listening test",
        "",
        f"Ratings: `{results_csv}`. Assessors: {len(screening)}, kept after post-screening: {len(kept)}.",
        "",
        "## Post-screening (ITU-R BS.1534-3)",
        "",
        "An assessor is excluded who rated the hidden reference below 90 in more than 15 % of the trials.",
        "",
        "| assessor | trials | hidden ref. < 90 | fraction | excluded |",
        "|---|---:|---:|---:|---|",
    ]
    for assessor, row in screening.items():
        lines.append(
            f"| {assessor} | {row['trials']} | {row['reference_below_90']} | {100 * row['fraction']:.0f} % | "
            f"{'**yes**' if row['excluded'] else 'no'} |"
        )
    return lines


def _score_lines(stats: dict[str, dict]) -> list[str]:
    """The report's table of scores per condition, and the box plot."""
    lines = [
        "",
        "## Scores (kept assessors)",
        "",
        "Mean and 95 % confidence interval of the mean (Student t, n - 1 degrees of freedom) over all "
        "ratings of a condition (assessors x trials).",
        "",
        "| condition | n | mean | 95 % CI |",
        "|---|---:|---:|---|",
    ]
    for condition, s in stats.items():
        lines.append(f"| {condition} | {s['n']} | {_fmt(s['mean'])} | [{_fmt(s['ci95_low'])}, {_fmt(s['ci95_high'])}] |")
    return lines + ["", "![MUSHRA scores per condition](ratings.png)", ""]


def _wilcoxon_lines(tests: Sequence[dict]) -> list[str]:
    """The report's table of paired comparisons; nothing without any."""
    if not tests:
        return []
    lines = [
        "## Paired comparisons between systems",
        "",
        "Two-sided Wilcoxon signed-rank tests on the scores of the same assessor and trial; "
        "p-values Holm-corrected over all pairs.",
        "",
        "| A | B | pairs | median A - B | W | p | p (Holm) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for t in tests:
        lines.append(
            f"| {t['a']} | {t['b']} | {t['n']} | {_fmt(t['median_difference'])} | {_fmt(t['statistic'])} | "
            f"{_fmt_p(t['p'])} | {_fmt_p(t['p_holm'])} |"
        )
    lines.append("")
    return lines


def analyze(results_csv: str, out_dir: str, key_path: str | None = None, assessor_column: str | None = None) -> dict:
    """Screen, summarise and test the ratings; writes report.md, summary.json, ratings.png in ``out_dir``."""
    from eval.plots import boxplot

    key = None
    if key_path is not None:
        key = _load_key(key_path, f"--key {key_path}", missing=f"--key {key_path}: no such file")
    ratings = read_results(results_csv, key, assessor_column)
    kept, screening = post_screen(ratings)
    if not kept:
        raise ListeningTestError(f"{results_csv}: every assessor failed post-screening; no results to report")
    kept_set = set(kept)
    used = [r for r in ratings if r.assessor in kept_set]

    systems, order = _conditions_in_order(used, key)
    stats = _condition_stats(used, order)
    tests = paired_tests(used, systems)

    os.makedirs(out_dir, exist_ok=True)
    boxplot(
        {c: [r.score for r in used if r.condition == c] for c in order},
        os.path.join(out_dir, "ratings.png"),
        ylabel="MUSHRA score",
        title=f"{len(kept)} assessors, {len({r.trial for r in used})} trials",
        ylim=(0, 100),
    )
    summary = {
        "results": os.path.abspath(results_csv),
        "key": os.path.abspath(key_path) if key_path else None,
        "assessors": len(screening),
        "kept": kept,
        "excluded": [a for a, row in screening.items() if row["excluded"]],
        "screening": screening,
        "conditions": stats,
        "wilcoxon": tests,
    }
    write_text_atomic(os.path.join(out_dir, "summary.json"), json.dumps(nan_to_none(summary), indent=2) + "\n")
    lines = _screening_lines(results_csv, screening, kept) + _score_lines(stats) + _wilcoxon_lines(tests)
    write_text_atomic(os.path.join(out_dir, "report.md"), "\n".join(lines))
    return summary


# --------------------------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------------------------

# Where serve looks for webMUSHRA when --webmushra is not given, after $BWE_WEBMUSHRA: the
# third-party folder beside or inside the checkout (shared/third_party/webMUSHRA).
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEBMUSHRA_CANDIDATES = (
    os.path.join(_REPO_DIR, "shared", "third_party", "webMUSHRA"),
    os.path.join(os.path.dirname(_REPO_DIR), "shared", "third_party", "webMUSHRA"),
)
# Files that make a folder a runnable webMUSHRA (the release layout: built lib/ included).
WEBMUSHRA_FILES = ("index.html", "startup.js", os.path.join("service", "write.php"),
                   os.path.join("lib", "webmushra", "pages", "MushraPage.js"))
SERVER_FOLDER = "webmushra"
SERVER_LOG = "php-server.log"
ROUTER = "bwe_router.php"
# PHP's built-in server passes every request through this router, written into the served copy
# (webMUSHRA's own files stay as they are). It is there for webMUSHRA's service/write.php, written
# for PHP 7.0 (its Dockerfile): after it has appended the MUSHRA ratings to mushra.csv it count()s a
# Likert field of the first trial, null in a MUSHRA test, which PHP 8 turns into a TypeError, so
# the request fails with HTTP 500 and the assessor is told the ratings were not stored although
# they were (and may send them twice). The router catches that one error and logs it. It also keeps
# results/ (every assessor's ratings) and itself away from the browsers.
PHP_ROUTER = r"""<?php
// Router for PHP's built-in server, written by bwe's python -m eval.listening_test serve: see ROUTER there.
$path = rawurldecode(parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH));
if ($path === '/' . basename(__FILE__) || strpos($path, '/results') === 0 || strpos($path, '..') !== false) {
    http_response_code(404);
    return true;
}
if ($path === '/service/write.php') {
    chdir(__DIR__ . '/service');
    try {
        require __DIR__ . '/service/write.php';
    } catch (TypeError $e) {
        if (basename($e->getFile()) !== 'write.php' || strpos($e->getMessage(), 'count()') !== 0) {
            throw $e;
        }
        error_log('bwe router: ignored PHP 8 TypeError in write.php:' . $e->getLine() . ' after the ratings were written: '
                  . $e->getMessage());
    }
    return true;
}
return false;
"""


@dataclass(frozen=True)
class Server:
    """A running webMUSHRA: the URL assessors open and where their ratings land."""

    url: str
    root: str
    results_csv: str
    key: str
    test_dir: str
    process: subprocess.Popen


def find_webmushra(path: str | None = None) -> str:
    """The webMUSHRA folder to copy: ``path``, else $BWE_WEBMUSHRA, else shared/third_party/webMUSHRA.

    Raises:
        ListeningTestError: none of them is a webMUSHRA folder (the message says what to give).
    """
    if path is None:
        path = os.environ.get("BWE_WEBMUSHRA")
    candidates = [path] if path else list(WEBMUSHRA_CANDIDATES)
    for candidate in candidates:
        if _is_webmushra(candidate):
            return os.path.abspath(candidate)
    if path:
        missing = [f for f in WEBMUSHRA_FILES if not os.path.isfile(os.path.join(path, f))]
        raise ListeningTestError(
            f"--webmushra {path}: not a webMUSHRA folder (missing {', '.join(missing)}); give the unpacked "
            "release of https://github.com/audiolabs/webMUSHRA, which contains the built lib/"
        )
    raise ListeningTestError(
        "webMUSHRA not found: give --webmushra DIR (or set BWE_WEBMUSHRA) with the unpacked release of "
        f"https://github.com/audiolabs/webMUSHRA (looked in {', '.join(WEBMUSHRA_CANDIDATES)})"
    )


def _is_webmushra(folder: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, f)) for f in WEBMUSHRA_FILES)


def read_key(test_dir: str, flag: str = "--test") -> dict:
    """key.json of a folder written by ``prepare``, checked to be one."""
    path = os.path.join(test_dir, "key.json")
    return _load_key(path, f"{flag} {path}",
                     missing=f"{flag} {test_dir}: no key.json; give the folder that prepare --out wrote")


def _load_key(path: str, label: str, missing: str) -> dict:
    """The key ``prepare`` wrote at ``path``; errors start with ``label``, a missing file says ``missing``."""
    try:
        with open(path, encoding="utf-8") as f:
            key = json.load(f)
    except FileNotFoundError:
        raise ListeningTestError(missing) from None
    except json.JSONDecodeError as e:
        raise ListeningTestError(f"{label}: not valid JSON ({e})") from None
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT:
        raise ListeningTestError(f"{label}: not a key written by eval.listening_test prepare")
    return key


def results_folder_name(test_id: str) -> str:
    """The folder webMUSHRA's service/write.php writes a test's CSVs to: its sanitize() of the testId."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^\w\-]+", "-", test_id)).lower()


def _copy_writable(source: str, target: str) -> None:
    """Copy the folder ``source`` to the new folder ``target`` with plain (writable) modes.

    A read-only source (a CI checkout, a package) would otherwise give a read-only copy, and
    webMUSHRA could not create its results folder. Built beside ``target`` and renamed into place,
    so an interrupted copy is never mistaken for a webMUSHRA to reuse.
    """
    work = staging_folder(target)
    try:
        shutil.copytree(source, work, dirs_exist_ok=True, copy_function=shutil.copyfile,
                        ignore=shutil.ignore_patterns(".git", "node_modules"))
        for folder, _, _ in os.walk(work):
            give_plain_mode(folder, folder=True)
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def install_test(test_dir: str, webmushra: str | None = None, work: str | None = None) -> tuple[str, dict]:
    """Make ``work`` (default ``test_dir/webmushra``) a webMUSHRA serving the test in ``test_dir``.

    A new ``work`` gets a copy of webMUSHRA; an existing one (an earlier ``serve``) is reused, so
    the ratings already in its results/ stay and new sessions are appended to them. The test's
    YAML and audio are copied (again) into its configs/; key.json is not: it never goes where the
    server can hand it out.

    Returns:
        ``(work, key)``.
    """
    key = read_key(test_dir)
    test_id = key["test_id"]
    config = os.path.join(test_dir, "configs", f"{test_id}.yaml")
    audio = os.path.join(test_dir, "configs", "resources", "audio", test_id)
    for path in (config, audio):
        if not os.path.exists(path):
            raise ListeningTestError(f"--test {test_dir}: {os.path.relpath(path, test_dir)} is missing; prepare it again")
    work = os.path.abspath(work or os.path.join(test_dir, SERVER_FOLDER))
    if os.path.exists(work):
        if not _is_webmushra(work):
            raise ListeningTestError(f"--work {work}: exists and is not a webMUSHRA folder; choose another")
    else:
        _copy_writable(find_webmushra(webmushra), work)
    target_audio = os.path.join(work, "configs", "resources", "audio", test_id)
    shutil.rmtree(target_audio, ignore_errors=True)
    shutil.copytree(audio, target_audio, copy_function=shutil.copyfile)
    shutil.copyfile(config, os.path.join(work, "configs", f"{test_id}.yaml"))
    write_text_atomic(os.path.join(work, ROUTER), PHP_ROUTER)
    return work, key


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_php() -> str:
    """The php executable, or a ListeningTestError naming the package to install."""
    php = shutil.which("php")
    if php is None:
        raise ListeningTestError("php not found: webMUSHRA needs PHP's command line (Debian/Ubuntu: apt-get install php-cli)")
    return php


def start_php(root: str, host: str, port: int, timeout_s: float = 10.0) -> subprocess.Popen:
    """``php -S host:port`` serving ``root`` through its router, once it accepts connections; its log goes
    to root/php-server.log.

    Started in its own session, so Ctrl-C reaches only this script, which then stops it.

    Raises:
        ListeningTestError: no php, or it did not start (the port taken, ...; its last log line).
    """
    php = find_php()
    log_path = os.path.join(root, SERVER_LOG)
    with open(log_path, "ab") as log:
        start = log.tell()
        process = subprocess.Popen([php, "-S", f"{host}:{port}", "-t", root, os.path.join(root, ROUTER)],
                                   cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout_s
    # Ready when php says so: a connection alone could reach another program that holds the port.
    while process.poll() is None and time.monotonic() < deadline:
        if "Development Server" in _read_from(log_path, start):
            return process
        time.sleep(0.05)
    stop_php(process)
    lines = [line.strip() for line in _read_from(log_path, start).splitlines() if line.strip()]
    raise ListeningTestError(f"php -S {host}:{port} did not start ({lines[-1] if lines else 'no output'}); "
                             "if the port is taken, choose another with --port")


def _read_from(path: str, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


def stop_php(process: subprocess.Popen) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def serving(test_dir: str, webmushra: str | None = None, port: int = 8000, host: str = "127.0.0.1",
            work: str | None = None) -> Iterator[Server]:
    """Install the test (:func:`install_test`), run PHP's built-in server on it, stop it on exit.

    ``port`` 0 picks a free port. The ratings stay in ``Server.results_csv`` after the server stops.
    """
    find_php()  # before copying anything
    root, key = install_test(test_dir, webmushra, work)
    if port == 0:
        port = _free_port(host)
    process = start_php(root, host, port)
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    try:
        yield Server(
            url=f"http://{shown}:{port}/?config={key['test_id']}.yaml",
            root=root,
            results_csv=os.path.join(root, "results", results_folder_name(key["test_id"]), "mushra.csv"),
            key=os.path.join(os.path.abspath(test_dir), "key.json"),
            test_dir=os.path.abspath(test_dir),
            process=process,
        )
    finally:
        stop_php(process)


def count_sessions(results_csv: str) -> int:
    """How many assessor sessions ``results_csv`` holds (0 if it does not exist yet)."""
    try:
        with open(results_csv, newline="", encoding="utf-8") as f:
            return len({row.get("session_uuid") for row in csv.DictReader(f)})
    except FileNotFoundError:
        return 0


def run_server(test_dir: str, webmushra: str | None, port: int, host: str, work: str | None) -> int:
    """``serve``: print the URL, serve until Ctrl-C, then say where the ratings are and how to analyse them."""
    with serving(test_dir, webmushra, port, host, work) as server:
        print(f"webMUSHRA ({server.root}) serves {test_dir}:\n\n    {server.url}\n")
        print("Open it in Chrome or Firefox, with headphones; share it with the assessors "
              "(--host 0.0.0.0 to serve the local network). Ctrl-C stops the server.", flush=True)
        try:
            code = server.process.wait()
        except KeyboardInterrupt:
            code = None
    report = os.path.join(test_dir, "results")
    print(f"\n{count_sessions(server.results_csv)} session(s) in {server.results_csv}; analyse with:\n\n"
          f"    python -m eval.listening_test analyze {server.results_csv} --key {server.key} --out {report}\n")
    if code is not None:
        print(f"error: php -S stopped by itself (exit status {code}); see {os.path.join(server.root, SERVER_LOG)}",
              file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.listening_test",
                                     description="MUSHRA (ITU-R BS.1534-3) listening test for webMUSHRA.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build the stimuli, the webMUSHRA config and the key")
    p.add_argument("--model", action="append", required=True, help="sinc, folding, an exported model folder, or NAME=SPEC; repeat")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder of real 16 kHz speech (the references)")
    source.add_argument("--pairs", nargs=2, metavar=("NB_DIR", "WB_DIR"),
                        help="real narrowband recordings and their wideband references, paired by file name")
    p.add_argument("--max-offset-ms", type=float, default=DEFAULT_MAX_OFFSET_MS,
                   help="largest lag searched when aligning --pairs (default %(default)s)")
    p.add_argument("--out", required=True, help="new folder for configs/ and key.json")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-lufs", type=float, default=-23.0)
    p.add_argument("--test-id", default="bwe_mushra", help="webMUSHRA testId: names the config and the results folder")
    p.add_argument("--fixed-order", action="store_true", help="same trial order for every assessor (default: webMUSHRA shuffles per session)")
    v = sub.add_parser("serve", help="serve a prepared test with webMUSHRA (PHP's built-in server) until Ctrl-C")
    v.add_argument("--test", required=True, help="the folder prepare --out wrote")
    v.add_argument("--webmushra", help="webMUSHRA folder to copy (default: $BWE_WEBMUSHRA, else shared/third_party/webMUSHRA)")
    v.add_argument("--port", type=int, default=8000, help="port to serve on; 0 picks a free one (default %(default)s)")
    v.add_argument("--host", default="127.0.0.1", help="address to serve on; 0.0.0.0 for the local network (default %(default)s)")
    v.add_argument("--work", help=f"the webMUSHRA copy to serve and keep the results in, made or reused "
                                  f"(default: TEST/{SERVER_FOLDER})")
    a = sub.add_parser("analyze", help="post-screen the ratings and write report.md")
    a.add_argument("results", help="webMUSHRA's results/<testId>/mushra.csv")
    a.add_argument("--out", required=True, help="folder for report.md, summary.json, ratings.png")
    a.add_argument("--key", help="key.json written by prepare (maps C1..Cn back to conditions)")
    a.add_argument("--assessor-column", help="column that identifies an assessor (default: session_uuid)")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            key = prepare(
                args.model,
                args.data,
                args.out,
                trials=args.trials,
                seed=args.seed,
                target_lufs=args.target_lufs,
                test_id=args.test_id,
                shuffle_per_assessor=not args.fixed_order,
                progress=True,
                pairs=args.pairs,
                max_offset_ms=args.max_offset_ms,
            )
            print(
                f"{len(key['trials'])} trials x {len(key['systems']) + 3} conditions in {args.out}; "
                f"serve them with: python -m eval.listening_test serve --test {args.out} "
                f"(keep {os.path.join(args.out, 'key.json')} private)"
            )
        elif args.command == "serve":
            return run_server(args.test, args.webmushra, args.port, args.host, args.work)
        else:
            summary = analyze(args.results, args.out, args.key, args.assessor_column)
            print(
                f"{len(summary['kept'])} of {summary['assessors']} assessors kept; "
                f"report in {os.path.join(args.out, 'report.md')}"
            )
    except (ListeningTestError, AudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

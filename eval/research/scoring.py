"""Perceptual scores of several variants of one output, on the files every variant can be scored on."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from bwe.metrics import dnsmos, pesq_wb, visqol_speech
from eval.evaluate import METRIC_LABELS

P808 = "dnsmos_p808"
# Column labels of every scorer's key (P.808 is scored only here, not by eval.evaluate).
LABELS = {**METRIC_LABELS, P808: "P.808"}


def dnsmos_p808(reference: np.ndarray, signal: np.ndarray) -> float:
    """DNSMOS P.808 MOS of ``signal``, a scorer like the others; DNSMOS hears the signal alone, so the
    reference is not used."""
    return dnsmos(signal)["p808"]


def perceptual_scorers(visqol: bool, p808: bool = False) -> dict[str, Callable]:
    """The perceptual metrics to score, by their ``bwe.metrics`` function: WB-PESQ, and ViSQOL and DNSMOS
    P.808 if asked for."""
    return {"pesq_wb": pesq_wb, **({"visqol": visqol_speech} if visqol else {}),
            **({P808: dnsmos_p808} if p808 else {})}


def score_all_or_none(reference: np.ndarray, signals: dict[str, np.ndarray], scorers: dict[str, Callable],
                      scores: dict[str, dict[str, list[float]]]) -> list[str]:
    """Score every signal against ``reference`` with every scorer (a ``bwe.metrics`` function that
    returns None for an unscorable pair) into ``scores[metric][signal name]``. A file one signal cannot
    be scored on by a metric adds nothing to that metric, so signals are compared on the same files.
    Returns the metrics this file was left out of."""
    left_out = []
    for metric, scorer in scorers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unscorable files are counted, not scored
            scored = {name: scorer(reference, signal) for name, signal in signals.items()}
        if any(v is None for v in scored.values()):
            left_out.append(metric)
            continue
        for name, value in scored.items():
            scores.setdefault(metric, {}).setdefault(name, []).append(value)
    return left_out

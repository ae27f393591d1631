"""Figures for the evaluation reports: box plots per metric or condition, spectrogram panels.

Matplotlib runs headless (Agg backend) and every PNG is written atomically (temporary file in the
target folder, then renamed), so an interrupted run never leaves half a figure behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np  # noqa: E402

from bwe.files import replacing  # noqa: E402


def save_figure(fig: "matplotlib.figure.Figure", path: str | os.PathLike, dpi: int = 120) -> str:
    """Write ``fig`` as PNG to ``path`` atomically, close it, and return the path."""
    path = os.fspath(path)
    try:
        with replacing(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def boxplot(
    groups: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    ylabel: str,
    title: str = "",
    ylim: tuple[float, float] | None = None,
) -> str:
    """One box per group (median, quartiles, 1.5 IQR whiskers, outliers) with the mean as a marker.

    Groups keep the mapping's order; NaN values (e.g. unscorable PESQ) are left out of their box.
    """
    names = list(groups)
    data = [np.asarray(groups[n], dtype=float) for n in names]
    data = [d[np.isfinite(d)] for d in data]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 4.0))
    ax.boxplot(data, showmeans=True, meanprops={"marker": "D", "markersize": 5})
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def spectrogram_panels(
    signals: Mapping[str, np.ndarray],
    rate: int,
    path: str | os.PathLike,
    title: str = "",
    n_fft: int = 512,
    hop_length: int = 128,
) -> str:
    """Stack log-power spectrograms of ``signals`` (name -> float [time] at ``rate``), one row each.

    All panels share the colour scale (0 dB = the loudest bin over all panels, 80 dB range), so a
    missing or over-bright high band is visible at a glance. Narrowband signals given at 8 kHz must
    be upsampled by the caller first; every row is drawn up to ``rate / 2``.
    """
    import librosa
    import librosa.display

    names = list(signals)
    specs = []
    for name in names:
        x = np.asarray(signals[name], dtype=np.float32)
        specs.append(np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop_length)) ** 2)
    top = max(float(s.max()) for s in specs) or 1.0
    fig, axes = plt.subplots(len(names), 1, figsize=(8.0, 1.9 * len(names) + 0.6), sharex=True, squeeze=False)
    image = None
    for ax, name, spec in zip(axes[:, 0], names, specs):
        db = librosa.power_to_db(spec, ref=top, top_db=None)
        image = librosa.display.specshow(
            db, sr=rate, hop_length=hop_length, x_axis="time", y_axis="linear", ax=ax, vmin=-80.0, vmax=0.0, cmap="magma"
        )
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("Hz")
        ax.label_outer()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes[:, 0].tolist(), format="%+.0f dB", shrink=0.8)
    return save_figure(fig, path)

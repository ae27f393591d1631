"""Streaming-aware time-axis layers (kws_streaming style): modes, causal/centred convs, weight norm."""

from bwe.layers.modes import STREAMING_MODES, Modes

__all__ = ["Modes", "STREAMING_MODES"]

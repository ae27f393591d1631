"""Conversion of a built generator to streaming models (internal or external state)."""

from bwe.streaming.convert import NotStreamableError, check_streamable, copy_weights, to_streaming, zero_states

__all__ = ["NotStreamableError", "check_streamable", "copy_weights", "to_streaming", "zero_states"]

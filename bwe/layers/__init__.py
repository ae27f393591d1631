"""Streaming-aware time-axis layers (kws_streaming style)."""

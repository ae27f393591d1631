"""Conversion of a built causal model into a frame-by-frame streaming model."""

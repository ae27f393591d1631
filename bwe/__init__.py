"""bwe: real-time speech bandwidth extension, 8 kHz narrowband in, 16 kHz wideband out."""

__version__ = "0.1.0"

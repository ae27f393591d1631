"""The four modes a time-axis layer can be built in (the kws_streaming convention).

A model is defined once. The same definition is built in TRAINING mode (whole segments, weight
normalisation active), NON_STREAM_INFERENCE (whole signals, plain kernels), or one of the two
streaming modes, where the model sees one fixed-length frame per call and every layer that looks
into the past carries that past between calls as state:

* STREAM_INTERNAL_STATE_INFERENCE: the state lives in non-trainable variables inside the layers
  (convenient from Python/TensorFlow; call ``reset_states`` between utterances).
* STREAM_EXTERNAL_STATE_INFERENCE: the graph is stateless; every state is an extra named input and
  output that the caller feeds back (what TFLite and phone runtimes want).
"""

from __future__ import annotations

import enum


class Modes(enum.Enum):
    TRAINING = "training"
    NON_STREAM_INFERENCE = "non_stream_inference"
    STREAM_INTERNAL_STATE_INFERENCE = "stream_internal_state_inference"
    STREAM_EXTERNAL_STATE_INFERENCE = "stream_external_state_inference"

    @property
    def is_streaming(self) -> bool:
        return self in (Modes.STREAM_INTERNAL_STATE_INFERENCE, Modes.STREAM_EXTERNAL_STATE_INFERENCE)

    @classmethod
    def parse(cls, value: "Modes | str") -> "Modes":
        """Accept a Modes member or its serialised value (what ``get_config`` stores)."""
        if isinstance(value, Modes):
            return value
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown mode {value!r} (known: {known})") from None


STREAMING_MODES = (Modes.STREAM_INTERNAL_STATE_INFERENCE, Modes.STREAM_EXTERNAL_STATE_INFERENCE)

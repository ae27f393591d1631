"""metadata.json, the contract between ``bwe-export`` and ``bwe.runtime``: one typed schema for both.

bwe-export builds a `ModelMetadata` and writes it; the runtime loads it and reads attributes. Loading
checks the format version, then every key's presence and type against the dataclasses below, and
names the file and the key in each refusal. The JSON keys are the field names, in field order.

Format 1 gained keys after it was first written; the fields for them have a default (None), so
older exports still load, and a None among them is left out of the file. A field without a default
is in every format-1 file (it may still hold null, e.g. ``checks.int8_calibration``). Keys this
version does not know are ignored: a later bwe may add keys without a new format version.

Standard library only: the runtime that reads this never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from typing import Any

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "generator.weights.h5"  # beside it: the TRAINING generator's Keras weights
FORMAT_VERSION = 1  # bwe-export writes it; a reader refuses any other


class MetadataError(ValueError):
    """metadata.json is unreadable, of another format version, or lacks or mistypes a key; the message
    names the file and the key."""


@dataclass(frozen=True, kw_only=True)
class ModelFile:
    """One .tflite file of the export and how to call it."""

    file: str
    signature: str
    dtype: str  # of the weights: float32 or int8
    quantization: str | None = None  # int8 files: how they were quantised
    frames_per_call: int | None = None  # 16 ms frames per call; None for the resizable whole-signal model
    io_dtype: str | None = None  # int8 files: the dtype of their audio and states (float32)
    input_shape: tuple[int, ...] | None = None  # the whole-signal model: -1 marks the resizable axis
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class StateTensor:
    """One state of the streaming and block models: fed back from output to input, starting at zeros."""

    input: str
    output: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, kw_only=True)
class TensorNames:
    """A file's signature names -> the tensor names inside it (for runtimes without signature support)."""

    inputs: dict[str, str]
    outputs: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class Int8Calibration:
    """What full-integer int8 was calibrated on."""

    frames: int
    audio: str


@dataclass(frozen=True, kw_only=True)
class ExportChecks:
    """What the export measured on its own files."""

    max_abs_error_vs_tensorflow: dict[str, float]
    int8_snr_db_vs_float: float
    int8_highband_snr_db_vs_float: float | None = None
    block_int8_snr_db_vs_float: float | None = None
    # Integer exports: the largest difference between the int8 streaming and block files on the same
    # audio, in steps of the output's quantisation (the streaming file against its own offline twin).
    int8_block_vs_streaming_lsb: float | None = None
    int8_calibration: Int8Calibration | None  # None: dynamic-range int8 needs no calibration


@dataclass(frozen=True, kw_only=True)
class ModelMetadata:
    """The content of an export's metadata.json."""

    format_version: int = FORMAT_VERSION
    bwe_version: str
    input_rate: int
    output_rate: int
    frame_input_samples: int
    frame_output_samples: int
    frame_ms: float
    delay_samples: int  # the output lags the input by this many output samples
    delay_ms: float
    architectural_latency_ms: float
    lookahead_ms: float | None = None
    latency_note: str
    audio_input: str
    audio_output: str
    files: dict[str, ModelFile]
    offline_runtime: str
    states: tuple[StateTensor, ...]  # in feed order
    tensor_names: dict[str, TensorNames]
    highband_gain: float | None = None
    params: int
    macs_per_frame: int
    causal: bool
    checks: ExportChecks
    source: str
    recipe: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Any, source: str = METADATA_FILE) -> ModelMetadata:
        """Check and convert a parsed metadata.json; ``source`` names it in errors."""
        if not isinstance(data, dict):
            raise MetadataError(f"{source}: holds {_show(data)}, expected a JSON object")
        version = data.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise MetadataError(f"{source}: format_version {version!r}, this bwe reads {FORMAT_VERSION} "
                                "(export the model again with this version's bwe-export)")
        return _from_object(cls, data, "", source)

    def to_dict(self) -> dict:
        """The JSON object: keys in field order, absent optional keys left out."""
        return _plain(self)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelMetadata:
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
            raise MetadataError(f"{path}: unreadable ({e})") from None
        return cls.from_dict(data, path)

    def write(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)


# ---- conversion, driven by the dataclasses' type annotations ------------------------------------

_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _from_object(cls: type, value: Any, key: str, source: str):
    """A JSON object -> dataclass ``cls``, each field converted by its annotation."""
    if not isinstance(value, dict):
        raise MetadataError(f"{source}: {key} is {_show(value)}, expected an object")
    fields = dataclasses.fields(cls)
    missing = [_key(key, f.name) for f in fields if f.name not in value and f.default is dataclasses.MISSING]
    if missing:
        raise MetadataError(f"{source}: missing keys {missing}")
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _typed(value[f.name], hints[f.name], _key(key, f.name), source)
                  for f in fields if f.name in value})


def _typed(value: Any, hint: Any, key: str, source: str):
    """``value`` checked against the annotation ``hint``; objects become dataclasses, lists tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _from_object(hint, value, key, source)
    if origin in (types.UnionType, typing.Union):  # X | None
        (inner,) = [a for a in args if a is not type(None)]
        return None if value is None else _typed(value, inner, key, source)
    if origin is tuple:  # tuple[X, ...]
        _expect(isinstance(value, list), value, "a list", key, source)
        return tuple(_typed(item, args[0], f"{key}[{i}]", source) for i, item in enumerate(value))
    if origin is dict:
        _expect(isinstance(value, dict), value, "an object", key, source)
        return {name: _typed(item, args[1], _key(key, name), source) for name, item in value.items()}
    if hint is Any:
        return value
    if hint is float:  # JSON has one number type: an integer is a valid float
        _expect(type(value) in (int, float), value, _KINDS[float], key, source)
        return float(value)
    _expect(type(value) is hint, value, _KINDS[hint], key, source)  # type(), so that True is no integer
    return value


def _expect(ok: bool, value: Any, kind: str, key: str, source: str) -> None:
    if not ok:
        raise MetadataError(f"{source}: {key} is {_show(value)}, expected {kind}")


def _plain(value: Any):
    """Dataclasses -> dicts (fields with a default left out when None), tuples -> lists, recursively."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (getattr(value, f.name) is None and f.default is None)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {name: _plain(item) for name, item in value.items()}
    return value

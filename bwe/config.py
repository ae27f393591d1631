"""Recipes: YAML files loaded into typed dataclasses.

A recipe has one section per stage (model, discriminators, losses, optim, data, train, export).
Each section is a dataclass below; loading checks every key and type against it, so a typo or a
wrong type fails at load time with the full key path (``model.strides[2]``) instead of deep
inside training. ``key=value`` overrides from the command line go through the same checks.

This module imports no TensorFlow: `bwe-export --recipe` and the inference tools read recipes too.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe key is unknown, missing or of the wrong type. The message names the key path."""


@dataclass
class ModelConfig:
    """SEANet generator. Shapes in docstrings are channels-last: [batch, time, channels]."""

    causal: bool = True
    channels: int = 8  # channels of the first conv; doubled at every downsampling block
    max_channels: int = 128
    strides: list[int] = field(default_factory=lambda: [2, 2, 8, 8])
    kernel_size: int = 7
    residual_kernel_size: int = 7
    dilations: list[int] = field(default_factory=lambda: [1, 3, 9])
    last_kernel_size: int = 7
    skip_connections: bool = True
    weight_norm: bool = True
    upsampler_taps: int = 32  # fixed windowed-sinc 8 -> 16 kHz interpolator inside the model


@dataclass
class ExportConfig:
    int8_calibration_frames: int = 400  # frames streamed through the model to calibrate int8


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp``; raise RecipeError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, path)
            except RecipeError:
                pass
        raise RecipeError(f"{path}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{path or 'recipe'}: expected a mapping, got {type(value).__name__}")
        return _build_dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{path}: expected a string, got {value!r}")
        return value
    raise RecipeError(f"{path}: unsupported field type {tp!r}")


def _build_dataclass(cls: type, values: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise RecipeError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _convert(values[f.name], hints[f.name], f"{path}.{f.name}" if path else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{path}.{f.name}: missing required key" if path else f"{f.name}: missing")
    return cls(**kwargs)


def _apply_override(tree: dict, override: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested dict; the value is parsed as YAML."""
    if "=" not in override:
        raise RecipeError(f"override {override!r}: expected key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"override {override!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw)


def recipe_from_dict(values: dict, overrides: typing.Sequence[str] = ()) -> Recipe:
    tree = dict(values or {})
    for override in overrides:
        _apply_override(tree, override)
    return _convert(tree, Recipe, "")


def load_recipe(path: str | os.PathLike, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Load a YAML recipe, apply ``key=value`` overrides, and check it against `Recipe`."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if values is not None and not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections")
    try:
        return recipe_from_dict(values or {}, overrides)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the fully resolved recipe atomically (temp file + rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".recipe-", suffix=".yaml", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(recipe_to_dict(recipe), f, sort_keys=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

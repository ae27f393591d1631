"""Whole-generator streaming == offline in TensorFlow (internal state, external state, blocks)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from bwe.config import load_recipe
from bwe.layers.modes import Modes
from bwe.models.seanet import FRAME_INPUT_SAMPLES, build_generator, reset_generator_states
from bwe.streaming import NotStreamableError, to_streaming, zero_states
from signals import speech_like

tf.config.experimental.enable_op_determinism()
TINY = load_recipe("recipes/tiny.yaml").model
FRAMES = 8


@pytest.fixture(scope="module")
def trained_like():
    """A tiny generator with random, non-trivial weights (biases too) and its offline output."""
    keras.utils.set_random_seed(0)
    model = build_generator(TINY, Modes.TRAINING)
    rng = np.random.default_rng(0)
    for w in model.trainable_weights:
        if w.path.endswith("bias"):
            w.assign(rng.normal(0, 0.05, w.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def utterances():
    a = speech_like(FRAMES * FRAME_INPUT_SAMPLES / 8000, rate=8000, seed=1)
    b = speech_like(FRAMES * FRAME_INPUT_SAMPLES / 8000, rate=8000, seed=2)
    return a, b


def _offline(model, x):
    return np.asarray(model(x[None, :, None]))[0, :, 0]


def _stream_external(model, x, frame=FRAME_INPUT_SAMPLES):
    states = zero_states(model)
    out = []
    for start in range(0, len(x), frame):
        y, *states = model([x[None, start : start + frame, None]] + states)
        states = [np.asarray(s) for s in states]
        out.append(np.asarray(y)[0, :, 0])
    return np.concatenate(out)


def _stream_internal(model, x):
    out = [np.asarray(model(x[None, s : s + FRAME_INPUT_SAMPLES, None]))[0, :, 0]
           for s in range(0, len(x), FRAME_INPUT_SAMPLES)]
    return np.concatenate(out)


def test_internal_state_equals_offline_and_resets(trained_like, utterances):
    a, b = utterances
    offline = to_streaming(trained_like, Modes.NON_STREAM_INFERENCE)
    model = to_streaming(trained_like, Modes.STREAM_INTERNAL_STATE_INFERENCE)
    assert model.inputs[0].shape == (1, FRAME_INPUT_SAMPLES, 1)
    ya = _stream_internal(model, a)
    np.testing.assert_allclose(ya, _offline(offline, a), atol=1e-5)
    np.testing.assert_allclose(ya, _offline(trained_like, a), atol=1e-5)
    # Without a reset the second utterance is coloured by the first; after one it equals b alone.
    yb_dirty = _stream_internal(model, b)
    reset_generator_states(model)
    yb = _stream_internal(model, b)
    np.testing.assert_allclose(yb, _offline(offline, b), atol=1e-5)
    assert np.max(np.abs(yb_dirty - yb)) > 1e-4


def test_external_state_equals_offline_and_resets(trained_like, utterances):
    a, b = utterances
    model = to_streaming(trained_like, Modes.STREAM_EXTERNAL_STATE_INFERENCE)
    n_states = len(model.inputs) - 1
    assert n_states == len(model.state_input_names) == len(model.state_output_names) > 10
    assert model.inputs[0].name == "audio"
    assert [t.name for t in model.inputs[1:]] == model.state_input_names
    ya = _stream_external(model, a)
    np.testing.assert_allclose(ya, _offline(trained_like, a), atol=1e-5)
    both = _stream_external(model, np.concatenate([a, b]))
    # Restarting from zero states is the reset; streaming b after a differs from b alone.
    yb = _stream_external(model, b)
    np.testing.assert_allclose(yb, _offline(trained_like, b), atol=1e-5)
    assert np.max(np.abs(both[len(ya):] - yb)) > 1e-4


def test_block_model_equals_frame_by_frame(trained_like, utterances):
    a, _ = utterances
    block = to_streaming(trained_like, Modes.STREAM_EXTERNAL_STATE_INFERENCE, frames_per_call=4)
    assert block.inputs[0].shape == (1, 4 * FRAME_INPUT_SAMPLES, 1)
    y = _stream_external(block, a, frame=4 * FRAME_INPUT_SAMPLES)
    np.testing.assert_allclose(y, _offline(trained_like, a), atol=1e-5)


def test_batched_streams_are_independent(trained_like, utterances):
    a, b = utterances
    model = to_streaming(trained_like, Modes.STREAM_EXTERNAL_STATE_INFERENCE, batch_size=2)
    states = zero_states(model)
    out = []
    for s in range(0, len(a), FRAME_INPUT_SAMPLES):
        frame = np.stack([a[s : s + FRAME_INPUT_SAMPLES], b[s : s + FRAME_INPUT_SAMPLES]])[..., None]
        y, *states = model([frame] + states)
        states = [np.asarray(s) for s in states]
        out.append(np.asarray(y)[..., 0])
    out = np.concatenate(out, axis=1)
    np.testing.assert_allclose(out[0], _offline(trained_like, a), atol=1e-5)
    np.testing.assert_allclose(out[1], _offline(trained_like, b), atol=1e-5)


def test_refuses_noncausal_and_foreign_models():
    noncausal = build_generator(dataclasses.replace(TINY, causal=False))
    with pytest.raises(NotStreamableError, match="is centred"):
        to_streaming(noncausal, Modes.STREAM_EXTERNAL_STATE_INFERENCE)
    inputs = keras.Input(shape=(None, 1))
    foreign = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match="not built by bwe.models.seanet.build_generator"):
        to_streaming(foreign)
    model = build_generator(TINY)
    with pytest.raises(ValueError, match="frames_per_call must be >= 1"):
        to_streaming(model, frames_per_call=0)
    with pytest.raises(ValueError, match="cannot convert to training"):
        to_streaming(model, Modes.TRAINING)

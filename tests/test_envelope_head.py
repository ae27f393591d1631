"""The envelope head (model.envelope_bands): its filter bank and spectrum, level-ratio gains, identity
until switched on, streaming and causality, look-ahead, its training phase, a head added to a trained
run, export and its high-band gain, refusals."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from bwe.config import RecipeError, load_recipe, save_recipe
from bwe.layers.envelope import (
    LEVEL_CENTRE,
    EXACT_LOG_GAIN,
    LEVEL_SPREAD,
    MAX_LOG_GAIN,
    CrossfadeGains,
    FrameLevels,
    LevelRatioGains,
    LogPowerSpectrum,
    ShiftByLevel,
    SpectrumLevel,
    soft_limit,
)
from bwe.layers.modes import Modes
from bwe.models.seanet import (
    SPECTRUM_WINDOW,
    ModelConfigError,
    activate_envelope_head,
    band_split_kernel,
    build_envelope_predictor,
    build_generator,
    envelope_filter_bank,
    envelope_head_active,
    envelope_head_variables,
    gain_pair_kernel,
    gap_band_kernel,
    generator_delay_samples,
    generator_parts,
    spectrum_kernel,
)
from bwe.streaming import to_streaming
from signals import speech_like

tf.config.experimental.enable_op_determinism()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "recipes", "tiny.yaml")
HEAD = ["model.envelope_bands=4", "model.envelope_crossfade=32"]
CFG = load_recipe(TINY, HEAD).model
# The offline model's kind of head: 8 ms frames, 500 Hz bands, two frames (16 ms) of look-ahead.
LOOKAHEAD_CFG = load_recipe(TINY, ["model.envelope_bands=8", "model.envelope_frame=128", "model.envelope_crossfade=32",
                                   "model.envelope_filter_taps=65", "model.envelope_lookahead_frames=2"]).model
RELATIVE_CFG = dataclasses.replace(LOOKAHEAD_CFG, envelope_relative_levels=True)
SPLIT_CFG = dataclasses.replace(RELATIVE_CFG, split_taps=65)
GAP_CFG = dataclasses.replace(SPLIT_CFG, envelope_gap_hz=3500.0)


def _response_db(kernel, freq, rate):
    n = np.arange(len(kernel))
    return 20 * np.log10(np.abs(np.sum(kernel * np.exp(-2j * np.pi * freq * n / rate))) + 1e-12)


def _same_trained_weights(source_cfg, target_cfg, seed):
    """Offline generators of both configs, the target holding the source's trainable weights."""
    keras.utils.set_random_seed(seed)
    source = build_generator(source_cfg, Modes.NON_STREAM_INFERENCE)
    target = build_generator(target_cfg, Modes.NON_STREAM_INFERENCE)
    for layer in source.layers:
        if layer.trainable_weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
    return source, target


def _randomise_head(model, seed=0):
    """Give the head random weights and switch it on (until then it is the identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.startswith("envelope_"):
            for w in layer.trainable_weights:
                w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    activate_envelope_head(model)


def test_band_bank_sums_to_the_delayed_high_pass_and_separates_its_bands():
    bank = envelope_filter_bank(CFG)[:, 0]  # [taps, K]
    highpass = band_split_kernel(CFG.upsampler_taps)[:, 1, 0]
    extra = (CFG.envelope_filter_taps - 1) // 2
    np.testing.assert_allclose(bank.sum(axis=-1), np.eye(len(bank))[extra], atol=1e-6)  # a pure delay
    bands = np.stack([np.convolve(highpass, bank[:, k]) for k in range(bank.shape[1])], axis=1)[:, None]
    for k, centre in enumerate((4500, 5500, 6500, 7500)):
        assert _response_db(bands[:, 0, k], centre, 16000) > -1.5  # 4.5 kHz: still in the high-pass's skirt
        for other in {4500, 5500, 6500, 7500} - {centre}:
            assert _response_db(bands[:, 0, k], other, 16000) < -20.0
        assert _response_db(bands[:, 0, k], 1000, 16000) < -40.0  # the high-pass in front of the bank


def test_spectrum_is_numpys_windowed_dft_and_gain_interpolation_sums_to_one():
    x = np.random.default_rng(4).normal(0, 0.1, 8 * 64).astype(np.float32)
    kernel = spectrum_kernel()
    frames = tf.nn.conv1d(x[None, :, None], kernel, 64, "VALID")  # the causal conv's frames, past its state
    log_power = np.asarray(LogPowerSpectrum()(frames))[0]  # [frames, bins]
    window = np.hanning(SPECTRUM_WINDOW + 1)[:-1]  # periodic Hann
    for t in range(log_power.shape[0]):
        segment = x[64 * t: 64 * t + SPECTRUM_WINDOW]
        power = np.abs(np.fft.rfft(segment * window) / window.sum()) ** 2
        expected = (np.log10(power + 1e-10) - LEVEL_CENTRE) / LEVEL_SPREAD
        np.testing.assert_allclose(log_power[t], expected, atol=2e-4)
    gains = np.random.default_rng(0).uniform(0.1, 3.0, (1, 5, 3)).astype(np.float32)  # 5 frames, 3 bands
    pairs = tf.nn.conv1d(np.pad(gains, ((0, 0), (1, 0), (0, 0))), gain_pair_kernel(3), 1, "VALID")
    for crossfade in (256, 32):
        per_sample = np.asarray(CrossfadeGains(256, crossfade)(pairs))[0]  # [5 * 256, 3]
        previous = np.concatenate([np.zeros((1, 3)), gains[0, :-1]])  # zeros before the first frame
        ramp = np.minimum(np.arange(1, 257) / crossfade, 1.0)[:, None, None]
        expected = (previous[None] * (1 - ramp) + gains[0][None] * ramp).transpose(1, 0, 2).reshape(-1, 3)
        np.testing.assert_allclose(per_sample, expected, rtol=1e-6)
    assert gain_pair_kernel(3).size < 1024  # below dynamic-range int8's size limit: the gains stay float


def test_gains_bring_each_band_to_its_predicted_level_and_are_limited():
    predicted = np.array([[[0.5, -1.0, 2.0]]], np.float32)
    measured = np.array([[[-0.5, -1.0, -9.0]]], np.float32)  # the last band far too quiet to reach
    layer = LevelRatioGains()
    assert np.all(np.asarray(layer([predicted, measured])) == 1.0)  # switched off: the identity
    layer.active.assign(1.0)
    gains = np.asarray(layer([predicted, measured]))[0, 0]
    # In bels: the measured level plus 2 log10(gain) is the predicted level (standardised units undone).
    reached = measured[0, 0, :2] * LEVEL_SPREAD + 2 * np.log10(gains[:2])
    np.testing.assert_allclose(reached, predicted[0, 0, :2] * LEVEL_SPREAD, atol=1e-5)
    assert gains[1] == 1.0
    assert np.exp(0.95 * MAX_LOG_GAIN) < gains[2] <= np.exp(MAX_LOG_GAIN) * (1 + 1e-6)  # 23 bels asked for: limited
    x = tf.Variable(np.linspace(-9, 9, 181, dtype=np.float32))
    with tf.GradientTape() as tape:
        y = soft_limit(x, EXACT_LOG_GAIN, MAX_LOG_GAIN)
    slope = tape.gradient(y, x).numpy()
    inside = np.abs(x.numpy()) <= EXACT_LOG_GAIN
    np.testing.assert_array_equal(y.numpy()[inside], x.numpy()[inside])
    bent = np.sign(x.numpy()) * (EXACT_LOG_GAIN + (MAX_LOG_GAIN - EXACT_LOG_GAIN)
                                 * np.tanh((np.abs(x.numpy()) - EXACT_LOG_GAIN) / (MAX_LOG_GAIN - EXACT_LOG_GAIN)))
    np.testing.assert_allclose(y.numpy()[~inside], bent[~inside], rtol=1e-6)
    assert np.all(np.abs(y.numpy()) <= MAX_LOG_GAIN) and np.all(slope > 0) and np.all(np.diff(y.numpy()) > 0)


@pytest.mark.parametrize("cfg", [CFG, LOOKAHEAD_CFG], ids=["4-bands", "8-bands"])
def test_switched_on_head_sets_the_band_to_the_predicted_level(cfg):
    keras.utils.set_random_seed(3)
    model = build_generator(cfg, Modes.NON_STREAM_INFERENCE)
    activate_envelope_head(model)
    level = model.get_layer("envelope_level")
    kernel, bias = level.get_weights()
    x = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    freqs = np.fft.rfftfreq(24000, 1 / 16000)
    band = (freqs >= 5000) & (freqs < 7500)  # above the interpolated input's skirt
    measured = []
    for target_bels in (-3.0, -2.0):  # every band's mean square at 10^-3, then ten times that
        level.set_weights([np.zeros_like(kernel), np.full_like(bias, (target_bels - LEVEL_CENTRE) / LEVEL_SPREAD)])
        y = np.asarray(model(x[None, :, None]))[0, 8000:, 0]  # past the start-up
        mean_square_per_bin = 2 * np.abs(np.fft.rfft(y)) ** 2 / len(y) ** 2
        measured.append(10 * np.log10(mean_square_per_bin[band].sum()))
    expected = 10 * np.log10(cfg.envelope_bands * 10 ** -3.0 * 2500 / 4000)
    # Overlapping neighbours of the bank add up slightly louder than their levels; the regression absorbs it.
    assert abs(measured[0] - expected) < 3.0
    assert measured[1] - measured[0] == pytest.approx(10.0, abs=0.2)  # the level is the predictor's, exactly


def test_untrained_head_is_the_identity_delayed_by_the_bank():
    headless_cfg = dataclasses.replace(CFG, envelope_bands=0)
    headless, with_head = _same_trained_weights(headless_cfg, CFG, seed=0)
    extra = generator_delay_samples(CFG) - generator_delay_samples(headless_cfg)
    assert extra == (CFG.envelope_filter_taps - 1) // 2
    x = speech_like(0.2, rate=8000, seed=3)[None, :, None]
    y, y0 = np.asarray(with_head(x))[0, :, 0], np.asarray(headless(x))[0, :, 0]
    # The gains start at 0 before the first frame and reach 1 at its end: identical from then on.
    np.testing.assert_allclose(y[256 + extra:], y0[256: len(y0) - extra], atol=1e-5)


@pytest.mark.parametrize("cfg", [CFG, LOOKAHEAD_CFG, RELATIVE_CFG, SPLIT_CFG, GAP_CFG],
                         ids=["16ms-frames", "8ms-frames-lookahead", "relative-levels", "65-tap-split", "gap-band"])
def test_trained_head_streams_exactly_and_is_causal(cfg):
    keras.utils.set_random_seed(1)
    model = build_generator(cfg, Modes.TRAINING)
    _randomise_head(model)
    x = speech_like(0.16 * 2, rate=8000, seed=5)[None, :, None].astype(np.float32)  # 20 frames
    offline = np.asarray(to_streaming(model, Modes.NON_STREAM_INFERENCE)(x))
    stream = to_streaming(model, Modes.STREAM_EXTERNAL_STATE_INFERENCE)
    states = [np.zeros(t.shape, np.float32) for t in stream.inputs[1:]]
    frames = []
    for start in range(0, x.shape[1], 128):
        result = stream([x[:, start:start + 128]] + states)
        frames.append(np.asarray(result[0]))
        states = [np.asarray(s) for s in result[1:]]
    np.testing.assert_allclose(np.concatenate(frames, axis=1), offline, rtol=1e-4, atol=1e-5)
    future = x.copy()
    future[:, 1280:] = 0.3  # from frame 10 on: the first 10 frames' output must not change
    np.testing.assert_array_equal(np.asarray(model(future))[:, :2560], np.asarray(model(x))[:, :2560])
    gains = [layer for layer in model.layers if layer.name == "envelope_gain"]
    assert gains, "the head's gains are a named layer"


def _wide_range_dft(rng, frames=300):
    """DFT-like frames (real parts, then imaginary parts, of 65 bins) over 90 dB: frame levels from -80 to
    +10 dB, a random spectral tilt of up to 60 dB, and some bins exactly zero."""
    level = 10 ** rng.uniform(-4, 0.5, (frames, 1, 1))
    tilt = 10 ** (-rng.uniform(0, 3, (frames, 1, 1)) * np.linspace(0, 1, 65))
    dft = rng.normal(0, 1, (frames, 1, 2, 65)) * (level * tilt)[:, :, None]
    dft[::7, :, :, 40:] = 0.0
    return dft.reshape(frames, 1, 130).astype(np.float32)


def _bels(mean_square):
    return (np.log10(mean_square + 1e-10) - LEVEL_CENTRE) / LEVEL_SPREAD


def test_level_layers_log_domain_forms_match_numpy():
    """``integer_ops`` computes the same levels in the log domain (no tensor holds a power): NumPy's, also
    90 dB down and at exact zeros (the floor)."""
    rng = np.random.default_rng(8)
    dft = _wide_range_dft(rng)
    power = dft[..., :65].astype(np.float64) ** 2 + dft[..., 65:].astype(np.float64) ** 2
    np.testing.assert_allclose(np.asarray(LogPowerSpectrum(True)(dft)), _bels(power), atol=2e-5)
    np.testing.assert_allclose(np.asarray(SpectrumLevel(True)(dft)), _bels(power.mean(-1, keepdims=True)), atol=2e-5)
    bands = (rng.normal(0, 1, (2, 4 * 16, 3)) * 10 ** rng.uniform(-4, 0, (2, 4 * 16, 1))).astype(np.float32)
    bands[0, :16] = 0.0  # a silent frame
    frames = bands.astype(np.float64).reshape(2, 4, 16, 3)
    np.testing.assert_allclose(np.asarray(FrameLevels(16, True)(bands)), _bels((frames**2).mean(2)), atol=2e-5)


def _int16_error(layer, data) -> float:
    """RMS error (standardised bels) of ``layer`` converted in TFLite's 16x8 mode, calibrated on ``data``."""
    from ai_edge_litert.interpreter import Interpreter

    inputs = keras.Input(batch_shape=(1,) + data.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([frame[None]] for frame in data[::2])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    run = interpreter.get_signature_runner()
    errors = [run(**{run.get_input_details().popitem()[0]: frame[None]}).popitem()[1] - model(frame[None]).numpy()
              for frame in data[1::2]]
    return float(np.sqrt(np.mean(np.square(errors))))


def test_log_domain_levels_survive_int16_arithmetic():
    """The predictor's features in an integer (16x8) file: the power form loses everything a power's int16
    tensor cannot resolve (and integer LOG's lookup table is coarse near zero); the log-domain form keeps
    each bin's level to about a dB over 60 dB of speech-like levels."""
    rng = np.random.default_rng(9)
    level = 10 ** rng.uniform(-3, 0, (200, 1, 1))
    tilt = 10 ** (-rng.uniform(0, 2, (200, 1, 1)) * np.linspace(0, 1, 65))
    dft = (rng.normal(0, 1, (200, 1, 2, 65)) * (level * tilt)[:, :, None]).reshape(200, 1, 130).astype(np.float32)
    power_form, log_form = _int16_error(LogPowerSpectrum(), dft), _int16_error(LogPowerSpectrum(True), dft)
    assert power_form > 1.0  # standardised bels (x 20 dB): 20 dB RMS
    assert log_form < 0.1  # 2 dB, measured 1.1 dB


def test_spectrum_level_and_level_shifts_match_numpy():
    rng = np.random.default_rng(3)
    dft = rng.normal(0, 0.1, (2, 5, 2 * 65)).astype(np.float32)
    power = dft[..., :65] ** 2 + dft[..., 65:] ** 2
    expected = (np.log10(power.mean(-1, keepdims=True) + 1e-10) - LEVEL_CENTRE) / LEVEL_SPREAD
    level = np.asarray(SpectrumLevel()(dft))
    np.testing.assert_allclose(level, expected, rtol=1e-5, atol=1e-5)
    levels = rng.normal(0, 1, (2, 5, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(ShiftByLevel(-1.0)([levels, level])), levels - level, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ShiftByLevel(1.0)([levels, level])), levels + level, atol=1e-6)
    with pytest.raises(ValueError, match="sign must be -1 or \\+1"):
        ShiftByLevel(2.0)


def test_relative_levels_move_with_the_input_gain_and_absolute_ones_do_not():
    """A 20 dB louder input moves every predicted band level by 20 dB (log10(10**2) / LEVEL_SPREAD = 1
    standardised bel) once the first frame's onset has left the predictor's context, up to the few
    spectrum bins near the level floor (a DC bin of noise can be nearly empty); the absolute predictor
    does not follow the gain."""
    x = speech_like(3.0, rate=8000, seed=11) * 0.1
    x = (x + np.random.default_rng(0).normal(0, 1e-3, x.shape))[None, :, None].astype(np.float32)  # no digital silence
    context = 2 + 2 * sum(RELATIVE_CFG.envelope_dilations)  # frames the first frame's level change reaches
    deviation = {}
    for relative in (True, False):
        keras.utils.set_random_seed(2)
        predictor = build_envelope_predictor(dataclasses.replace(RELATIVE_CFG, envelope_relative_levels=relative))
        _randomise_head(predictor, seed=2)
        quiet, loud = (np.asarray(predictor(x * gain))[0, context:] for gain in (1.0, 10.0))
        deviation[relative] = np.percentile(np.abs(loud - quiet - 1.0), [50, 90])
    assert deviation[True][0] < 0.01 and deviation[True][1] < 0.05, deviation
    assert deviation[False][0] > 0.3, deviation


def test_lookahead_reads_ahead_by_exactly_its_frames():
    """With look-ahead the gains react to a change of input before the change reaches the output
    (the predictor reads ahead); the model stays causal and its delay grows by the look-ahead."""
    lookahead = LOOKAHEAD_CFG.envelope_lookahead_frames * LOOKAHEAD_CFG.envelope_frame
    base = dataclasses.replace(LOOKAHEAD_CFG, envelope_lookahead_frames=0)
    assert generator_delay_samples(LOOKAHEAD_CFG) - generator_delay_samples(base) == lookahead
    keras.utils.set_random_seed(4)
    model = build_generator(LOOKAHEAD_CFG, Modes.NON_STREAM_INFERENCE)
    _randomise_head(model, seed=4)
    delay = generator_delay_samples(LOOKAHEAD_CFG)
    x = speech_like(0.2, rate=8000, seed=7)[None, :, None].astype(np.float32)
    changed = x.copy()
    change = 800  # input sample (8 kHz) from which the input differs
    changed[:, change:] *= 4.0
    y, y2 = np.asarray(model(x))[0, :, 0], np.asarray(model(changed))[0, :, 0]
    differs = np.flatnonzero(np.abs(y - y2) > 1e-7)
    # Aligned to the input (delay removed), the first difference comes before the change itself.
    first_aligned = differs[0] - delay
    assert -lookahead - 128 <= first_aligned < 2 * change - 64
    np.testing.assert_array_equal(y[: differs[0]], y2[: differs[0]])


def _batch(seed):
    from signals import speech_like as speech

    wb = np.stack([speech(4096 / 16000, seed=seed + i) for i in range(2)])[..., None].astype(np.float32)
    return tf.constant(wb[:, ::2].copy()), tf.constant(wb)


def test_head_phase_trains_the_head_alone_on_the_envelope_loss(tmp_path):
    from bwe.train import Trainer

    recipe = load_recipe(TINY, HEAD + ["train.warmup_steps=1", "train.steps=30", "train.envelope_head_steps=20",
                                       "optim.envelope_lr=0.01"])
    trainer = Trainer(recipe, str(tmp_path))
    head = {id(v) for v in trainer.head_variables}
    assert trainer.head_variables and all(v.path.startswith("envelope_") for v in trainer.head_variables)
    for step in (0, 1):  # warm-up and GAN steps leave the head alone
        before = [v.numpy().copy() for v in trainer.head_variables]
        assert trainer.train_step(*_batch(0), step)["finite"]
        assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, trainer.head_variables))
    frozen = [v.numpy().copy() for v in trainer.generator.weights + trainer.discriminators.weights
              if id(v) not in head and not v.path.endswith("/active")]  # the switch goes on with the phase
    losses = []
    for step in range(10, 30):
        metrics = trainer.train_step(*_batch(0), step)
        assert metrics["finite"] and set(metrics) >= {"loss/envelope", "grad_norm/envelope_head"}
        assert "loss/adversarial" not in metrics
        losses.append(float(metrics["loss/envelope"]))
    after = [v.numpy() for v in trainer.generator.weights + trainer.discriminators.weights
             if id(v) not in head and not v.path.endswith("/active")]
    assert all(np.array_equal(a, b) for a, b in zip(frozen, after))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])  # one fixed batch: the head must fit it
    assert envelope_head_active(trainer.generator)


@pytest.mark.parametrize("cfg", [CFG, RELATIVE_CFG], ids=["absolute-levels", "relative-levels"])
def test_the_head_is_held_by_handles_in_every_mode_not_by_layer_names(cfg):
    """What the head's phase trains and what switches it on come from the handles build_generator attaches
    (model.bwe_parts): exactly the standalone predictor's trainable variables, in every mode, whatever the
    layers are called."""
    predictor = build_envelope_predictor(cfg)
    model = build_generator(cfg, Modes.TRAINING)
    head = envelope_head_variables(model)
    assert [(v.path, tuple(v.shape)) for v in head] == [(v.path, tuple(v.shape))
                                                         for v in predictor.trainable_variables]
    assert envelope_head_variables(predictor) == predictor.trainable_variables
    parts = generator_parts(model)
    for mode in (Modes.NON_STREAM_INFERENCE, Modes.STREAM_INTERNAL_STATE_INFERENCE,
                 Modes.STREAM_EXTERNAL_STATE_INFERENCE):
        rebuilt = to_streaming(model, mode)
        rebuilt_parts, layers = generator_parts(rebuilt), {id(layer) for layer in rebuilt.layers}
        assert {id(layer) for layer in rebuilt_parts.envelope_predictor} <= layers
        assert id(rebuilt_parts.head_switch) in layers and id(rebuilt_parts.highband_gain) in layers
        assert [layer.name for layer in rebuilt_parts.envelope_predictor] == [
            layer.name for layer in parts.envelope_predictor]
    for i, layer in enumerate(model.layers):  # names no longer say which layers are the head's
        layer.name = f"renamed_{i}"
    assert [id(v) for v in envelope_head_variables(model)] == [id(v) for v in head]
    assert not envelope_head_active(model)
    activate_envelope_head(model)
    assert envelope_head_active(model) and float(parts.head_switch.active.numpy()) == 1.0


@pytest.mark.parametrize("schedule", ["constant", "cosine"])  # the optimizers' checkpointed state differs
def test_a_trained_run_gains_a_head_and_anything_else_is_refused(tmp_path, schedule):
    from bwe.rundir import RunDirError
    from bwe.train import Trainer

    rates = [f"optim.lr_schedule={schedule}"]
    headless = Trainer(load_recipe(TINY, rates), str(tmp_path))
    headless.train_step(*_batch(0), 10)  # a GAN step: optimizer slots and discriminators hold values
    headless.step.assign(7)
    headless._save("latest")
    grown = Trainer(load_recipe(TINY, HEAD + rates + ["train.envelope_head_steps=5"]), str(tmp_path))
    assert grown.restore() == 7
    for layer in headless.generator.layers:
        if layer.trainable_weights:
            for a, b in zip(layer.get_weights(), grown.generator.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    for a, b in zip(headless.discriminators.weights, grown.discriminators.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(headless.generator_optimizer.variables, grown.generator_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not envelope_head_active(grown.generator)  # still the identity: its phase switches it on
    grown._save("latest")
    assert Trainer(load_recipe(TINY, HEAD + rates), str(tmp_path)).restore() == 7  # a head checkpoint resumes
    other = Trainer(load_recipe(TINY, HEAD + rates + ["model.channels=8"]), str(tmp_path))
    with pytest.raises(RunDirError, match="does not fit this recipe's networks"):
        other.restore()


def test_refusals_name_the_key():
    from bwe.models.seanet import validate_model_config
    from bwe.train import Trainer

    for change, message in ((dict(envelope_bands=-1), "model.envelope_bands: must be an integer >= 0"),
                            (dict(envelope_filter_taps=32), "model.envelope_filter_taps: must be odd"),
                            (dict(highband_residual=False), "needs model.highband_residual: true"),
                            (dict(envelope_channels=0), "model.envelope_channels: must be a positive integer"),
                            (dict(envelope_dilations=[]), "model.envelope_dilations: the envelope head needs"),
                            (dict(envelope_crossfade=0), "model.envelope_crossfade: must be a positive integer"),
                            (dict(envelope_frame=96), "model.envelope_frame: must be even and divide"),
                            (dict(envelope_frame=128, envelope_crossfade=200), "model.envelope_crossfade: at most"),
                            (dict(envelope_lookahead_frames=-1), "model.envelope_lookahead_frames: must be"),
                            (dict(envelope_gap_hz=4000.0), "model.envelope_gap_hz: 0 .* or a frequency in 3000-3900"),
                            (dict(envelope_gap_hz=True), "model.envelope_gap_hz: 0"),
                            (dict(envelope_bands=0, envelope_gap_hz=3500.0), "the gap band is one of the envelope")):
        with pytest.raises(ModelConfigError, match=message):
            validate_model_config(dataclasses.replace(CFG, **change))
    with pytest.raises(RecipeError, match="train.envelope_head_steps: the model has no envelope head"):
        Trainer(load_recipe(TINY, ["train.envelope_head_steps=5"]), "unused")
    with pytest.raises(RecipeError, match="is more than train.steps"):
        Trainer(load_recipe(TINY, HEAD + ["train.envelope_head_steps=50"]), "unused")
    with pytest.raises(RecipeError, match="optim.envelope_lr: must be > 0"):
        load_recipe(TINY, ["optim.envelope_lr=0"])


@pytest.fixture(scope="module")
def exported_head(tmp_path_factory):
    """A tiny head model with a non-trivial head, exported through the CLI at gains 1 and 0.5."""
    from bwe.export import main

    root = tmp_path_factory.mktemp("head")
    run_dir = root / "run"
    os.makedirs(run_dir / "checkpoints")
    recipe = load_recipe(TINY, HEAD)
    save_recipe(recipe, str(run_dir / "recipe.yaml"))
    keras.utils.set_random_seed(2)
    generator = build_generator(recipe.model, Modes.TRAINING)
    _randomise_head(generator, seed=2)
    tf.train.CheckpointManager(tf.train.Checkpoint(generator=generator), str(run_dir / "checkpoints"), 1).save()
    for gain in (1.0, 0.5):
        assert main([str(run_dir), str(root / f"gain{gain}"), "--block-frames", "8", "--set",
                     f"export.highband_gain={gain}", "-q"]) == 0
    assert main([str(run_dir), str(root / "top_band_half"), "--block-frames", "8", "--set",
                 "export.band_gains=[1, 1, 1, 0.5]", "-q"]) == 0
    return generator, root


def test_exported_head_matches_keras_and_its_gain_scales_the_generated_band_only(exported_head):
    from bwe.runtime import ExportedModel

    generator, root = exported_head
    with open(root / "gain1.0" / "metadata.json", encoding="utf-8") as f:
        metadata = json.load(f)
    assert metadata["delay_samples"] == generator_delay_samples(CFG) == 48
    assert metadata["architectural_latency_ms"] == pytest.approx(19.0)
    x = speech_like(16 * 128 / 8000, rate=8000, seed=11)
    full, half = ExportedModel(str(root / "gain1.0"))(x), ExportedModel(str(root / "gain0.5"))(x)
    offline = np.asarray(to_streaming(generator, Modes.NON_STREAM_INFERENCE)(
        np.pad(x, (0, 24))[None, :, None].astype(np.float32)))[0, 48:48 + 2 * len(x), 0]
    np.testing.assert_allclose(full, offline, atol=1e-4)
    generated = 2 * (full - half)
    spectrum = np.abs(np.fft.rfft(generated)) ** 2
    freqs = np.fft.rfftfreq(len(generated), 1 / 16000)
    assert spectrum[freqs < 3000].sum() < 1e-3 * spectrum[freqs > 4000].sum()
    assert np.sum(generated ** 2) > 1e-6 * np.sum(full ** 2)


def test_exported_head_has_no_block_int8_and_int8_files_run_frame_by_frame(exported_head):
    """A block-shaped dynamic-range int8 file quantises a whole block's input with one scale, which
    corrupts the head's view of quiet frames; head models therefore ship streaming_int8.tflite only."""
    from bwe.runtime import ExportedModel

    _, root = exported_head
    model = ExportedModel(str(root / "gain1.0"), int8=True)
    assert "block_int8" not in model.metadata.files
    assert not os.path.exists(root / "gain1.0" / "block_int8.tflite")
    assert model.block_stream()._block is None
    x = speech_like(10 * 128 / 8000, rate=8000, seed=12)
    assert model(x).shape == (2 * len(x),)


def test_band_gains_scale_their_own_band_only(exported_head, capsys):
    """export.band_gains=[1, 1, 1, 0.5] halves the top of four 1 kHz bands (7-8 kHz) and nothing else: the
    change is half the top band's content, spectrally confined to it; a list of the wrong length is refused."""
    from bwe.export import main
    from bwe.runtime import ExportedModel

    _, root = exported_head
    x = speech_like(16 * 128 / 8000, rate=8000, seed=11)
    full, tilted = ExportedModel(str(root / "gain1.0"))(x), ExportedModel(str(root / "top_band_half"))(x)
    removed = full - tilted
    spectrum = np.abs(np.fft.rfft(removed)) ** 2
    freqs = np.fft.rfftfreq(len(removed), 1 / 16000)
    assert spectrum[freqs < 6500].sum() < 0.02 * spectrum[freqs > 7000].sum()
    assert np.sum(removed ** 2) > 1e-4 * np.sum((full - ExportedModel(str(root / "gain0.5"))(x)) ** 2)
    assert main([str(root / "gain1.0"), str(root / "wrong"), "--set", "export.band_gains=[1, 0.5]", "-q"]) == 2
    assert "2 gain(s) for a model with 4 envelope band(s)" in capsys.readouterr().err


def test_gap_band_kernel_passes_what_the_split_stops_above_its_edge():
    """The gap band is the network's output from envelope_gap_hz (-6 dB) up to the split, as long as the
    split and the bank in a row; with the bands above it, it sums to the network's output less a
    low-pass at the edge (golden: the same composition in NumPy)."""
    kernel = gap_band_kernel(GAP_CFG)[:, 0, 0]
    split, bank_taps = 65, GAP_CFG.envelope_filter_taps
    assert len(kernel) == split + bank_taps - 1
    assert _response_db(kernel, 3500, 16000) == pytest.approx(-6.0, abs=0.3)
    assert all(_response_db(kernel, f, 16000) > -3.5 for f in (3600, 3700, 3800, 3900))
    assert all(_response_db(kernel, f, 16000) < -55 for f in (1000, 2000, 2500, 3000))
    assert _response_db(kernel, 4000, 16000) == pytest.approx(-6.0, abs=0.3)
    assert _response_db(kernel, 4600, 16000) < -50
    split_kernel = band_split_kernel(split)
    above_bands = np.convolve(split_kernel[:, 1, 0], envelope_filter_bank(GAP_CFG)[:, 0, :].sum(axis=1))
    edge = scipy.signal.firwin(bank_taps, 3500.0, window=("kaiser", 4.0), fs=16000)
    delta = np.zeros(len(kernel))
    delta[(len(kernel) - 1) // 2] = 1.0
    expected = delta - np.convolve(split_kernel[:, 0, 0] - split_kernel[:, 1, 0], edge)
    np.testing.assert_allclose(kernel + above_bands, expected, atol=1e-6)


def test_gated_bands_are_silent_until_the_head_is_switched_on():
    """LevelRatioGains(gated_bands=1): before the head's phase the first band's gain is 0 and the others 1
    (the head adds nothing the body never learned); once on, every band gets its level-ratio gain."""
    rng = np.random.default_rng(4)
    predicted, measured = (rng.normal(0, 0.5, (2, 3, 5)).astype(np.float32) for _ in range(2))
    gated, plain = LevelRatioGains(gated_bands=1), LevelRatioGains()
    plain([predicted, measured])  # builds it
    off = np.asarray(gated([predicted, measured]))
    np.testing.assert_array_equal(off[..., 0], 0.0)
    np.testing.assert_allclose(off[..., 1:], 1.0)
    for layer in (gated, plain):
        layer.active.assign(1.0)
    np.testing.assert_allclose(np.asarray(gated([predicted, measured])), np.asarray(plain([predicted, measured])))
    with pytest.raises(ValueError, match="gated_bands must be >= 0"):
        LevelRatioGains(gated_bands=-1)


def test_gap_band_adds_nothing_before_the_head_phase():
    """A model with a gap band, its head off, is the same model without one: the gap's gain is 0."""
    plain, with_gap = _same_trained_weights(SPLIT_CFG, GAP_CFG, seed=6)
    x = speech_like(0.3, rate=8000, seed=8)[None, :, None].astype(np.float32)
    np.testing.assert_allclose(np.asarray(with_gap(x)), np.asarray(plain(x)), atol=1e-6)
    assert with_gap.get_layer("envelope_level").output.shape[-1] == GAP_CFG.envelope_bands
    assert with_gap.get_layer("envelope_all_levels").output.shape[-1] == GAP_CFG.envelope_bands + 1


def test_a_model_without_a_gap_band_starts_a_run_with_one(exported_head):
    """train.init_from an export without a gap band: every trained weight comes from it, the gap band's
    layers start afresh; the gap band's gain takes the first of export.band_gains (one more than the bands)."""
    from bwe.export import main
    from bwe.train import Trainer
    from exported_tiny import assert_same_trained_weights

    generator, root = exported_head
    recipe = load_recipe(TINY, HEAD + ["model.envelope_gap_hz=3500", f"train.init_from={root / 'gain1.0'}"])
    trainer = Trainer(recipe, str(root / "gap_run"))
    assert trainer.restore() == 0
    assert_same_trained_weights(generator, trainer.generator)
    assert trainer.generator.get_layer("envelope_gap_level").trainable_weights
    trainer._save("latest")
    save_recipe(recipe, str(root / "gap_run" / "recipe.yaml"))
    assert main([str(root / "gap_run"), str(root / "gap_export"), "--block-frames", "8", "--set",
                 "export.band_gains=[0.5, 1, 1, 1, 1]", "-q"]) == 0
    assert main([str(root / "gap_run"), str(root / "gap_wrong"), "--set", "export.band_gains=[1, 1, 1, 1]", "-q"]) == 2

"""bwe-export: metadata contract, TFLite float == TensorFlow, int8 bound, atomic output, CLI errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bwe import export as export_module
from bwe.config import load_recipe, save_recipe
from bwe.export import ExportError, main
from bwe.layers.modes import Modes
from bwe.metadata import StateTensor
from bwe.models.seanet import count_params, macs_per_frame
from bwe.streaming import to_streaming
from exported_tiny import RECIPE, assert_same_trained_weights, exported_tiny
from signals import speech_like

tf.config.experimental.enable_op_determinism()
# Documented int8 bound (export.int8_mode: dynamic, the default): on the random-init tiny model, int8
# output SNR against the float model, whole band and 4-8 kHz (measured: 34 dB).
INT8_MIN_SNR_DB = 25.0
# export.int8_mode: full only has to run and be honest about its (much worse) figures: a fixed scale
# per tensor (measured: 9 dB on the tiny model, 17 dB whole band / 3 dB high band on the default model).
FULL_INT8_MIN_SNR_DB = 3.0


@pytest.fixture(scope="module")
def exported():
    generator, run_dir, out_dir = exported_tiny()
    with open(os.path.join(out_dir, "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    return generator, run_dir, out_dir, metadata


@pytest.fixture(scope="module")
def audio():
    return speech_like(16 * 128 / 8000, rate=8000, seed=11)  # 16 frames


def _reference(generator, x):
    return np.asarray(generator(x[None, :, None]))[0, :, 0]


def _stream_with_metadata_only(model_dir, x, file_key="streaming"):
    """The loop docs/export-and-stream.md documents: everything comes from metadata.json, nothing from bwe."""
    from ai_edge_litert.interpreter import Interpreter

    with open(os.path.join(model_dir, "metadata.json"), encoding="utf-8") as f:
        meta = json.load(f)
    entry = meta["files"][file_key]
    runner = Interpreter(model_path=os.path.join(model_dir, entry["file"])).get_signature_runner(entry["signature"])
    states = {s["input"]: np.zeros(s["shape"], np.float32) for s in meta["states"]}
    n = meta["frame_input_samples"] * entry["frames_per_call"]
    out = []
    for start in range(0, len(x), n):
        result = runner(**{meta["audio_input"]: x[None, start : start + n, None]}, **states)
        out.append(result[meta["audio_output"]][0, :, 0])
        states = {s["input"]: result[s["output"]] for s in meta["states"]}
    return np.concatenate(out)


def test_metadata_contract(exported):
    generator, _, out_dir, meta = exported
    recipe = load_recipe(RECIPE)
    assert meta["input_rate"] == 8000 and meta["output_rate"] == 16000
    assert meta["frame_input_samples"] == 128 and meta["frame_output_samples"] == 256
    assert meta["delay_samples"] == 32  # interpolator + band-split filter, 16 samples each
    assert meta["architectural_latency_ms"] == pytest.approx(18.0)  # 16 ms frame + 2 ms of filter delay
    assert meta["causal"] is True
    assert meta["params"] == count_params(recipe.model)
    assert meta["macs_per_frame"] == macs_per_frame(recipe.model)
    assert meta["recipe"]["model"] == load_recipe(RECIPE).__dict__["model"].__dict__
    stream = to_streaming(generator, Modes.STREAM_EXTERNAL_STATE_INFERENCE)
    assert [s["input"] for s in meta["states"]] == stream.state_input_names
    assert [s["output"] for s in meta["states"]] == stream.state_output_names
    assert [tuple(s["shape"]) for s in meta["states"]] == [tuple(t.shape) for t in stream.inputs[1:]]
    assert all(s["dtype"] == "float32" for s in meta["states"])
    for entry in meta["files"].values():
        assert os.path.isfile(os.path.join(out_dir, entry["file"]))
    assert os.path.isfile(os.path.join(out_dir, "saved_model", "saved_model.pb"))
    assert meta["files"]["block"]["frames_per_call"] == 8
    assert meta["source"].startswith(os.path.join(exported[1], "checkpoints"))
    # Nothing left over from the temporary export folder.
    assert [p for p in os.listdir(os.path.dirname(out_dir)) if p.startswith(".")] == []


def test_streaming_tflite_equals_tensorflow(exported, audio):
    generator, _, out_dir, _ = exported
    y = _stream_with_metadata_only(out_dir, audio)
    assert np.max(np.abs(y - _reference(generator, audio))) <= 1e-4


def test_block_tflite_equals_tensorflow(exported, audio):
    generator, _, out_dir, _ = exported
    y = _stream_with_metadata_only(out_dir, audio, "block")
    assert np.max(np.abs(y - _reference(generator, audio))) <= 1e-4


@pytest.mark.parametrize("length", [384, 2048, 1000])
def test_offline_tflite_resizes(exported, audio, length):
    from ai_edge_litert.interpreter import Interpreter

    generator, _, out_dir, meta = exported
    interpreter = Interpreter(model_path=os.path.join(out_dir, meta["files"]["offline"]["file"]))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [1, length, 1])
    interpreter.allocate_tensors()
    x = audio[:length]
    interpreter.set_tensor(index, x[None, :, None])
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, :, 0]
    assert y.shape == (2 * length,)
    assert np.max(np.abs(y - _reference(generator, x))) <= 1e-4


def test_int8_within_documented_bound(exported, audio):
    _, _, out_dir, meta = exported
    float_out = _stream_with_metadata_only(out_dir, audio)
    int8_out = _stream_with_metadata_only(out_dir, audio, "streaming_int8")
    sizes = {k: os.path.getsize(os.path.join(out_dir, e["file"])) for k, e in meta["files"].items()}
    assert export_module.snr_db(float_out, int8_out) >= INT8_MIN_SNR_DB
    highband_snr = export_module.snr_db(export_module.highband(float_out, 16000), export_module.highband(int8_out, 16000))
    assert highband_snr >= INT8_MIN_SNR_DB
    assert meta["checks"]["int8_snr_db_vs_float"] >= INT8_MIN_SNR_DB
    assert meta["checks"]["int8_highband_snr_db_vs_float"] >= INT8_MIN_SNR_DB
    assert meta["files"]["streaming_int8"]["quantization"].startswith("dynamic range")
    assert meta["checks"]["int8_calibration"] is None  # dynamic range needs no calibration
    # The int8 block model (the fast path for files) stays within the same bound of the float one.
    assert meta["files"]["block_int8"]["frames_per_call"] == meta["files"]["block"]["frames_per_call"]
    block_int8_out = _stream_with_metadata_only(out_dir, audio, "block_int8")
    assert export_module.snr_db(_stream_with_metadata_only(out_dir, audio, "block"), block_int8_out) >= INT8_MIN_SNR_DB
    assert meta["checks"]["block_int8_snr_db_vs_float"] >= INT8_MIN_SNR_DB
    assert sizes["block_int8"] < sizes["block"]
    assert sizes["streaming_int8"] < sizes["streaming"]


def test_exported_folder_is_a_source_that_exports_the_same_model(exported, tmp_path):
    """The weights an export writes restore the generator exactly, and exporting the folder again
    with another export.* setting gives the same float files' output."""
    generator, _, out_dir, _ = exported
    loaded, recipe, source = export_module.load_generator(out_dir)
    assert source.endswith(export_module.WEIGHTS_FILE)
    for a, b in zip(generator.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again = str(tmp_path / "again")
    assert main([out_dir, again, "--block-frames", "8", "--set", "export.highband_gain=1.0", "-q"]) == 0
    with open(os.path.join(again, "metadata.json"), encoding="utf-8") as f:
        assert json.load(f)["source"].endswith(export_module.WEIGHTS_FILE)
    with open(os.path.join(out_dir, "streaming.tflite"), "rb") as a, open(os.path.join(again, "streaming.tflite"), "rb") as b:
        assert a.read() == b.read()


def test_a_trained_model_takes_another_band_split_and_nothing_else(exported, tmp_path, capsys):
    """model.split_taps sets a fixed filter only: a folder's generator is rebuilt with a longer split (its
    trained weights by layer name, the split from the new value), 16 samples later, as bwe-export --set
    does before exporting; any other model key is refused by name."""
    from bwe.models.seanet import generator_delay_samples

    generator, _, out_dir, _ = exported
    loaded, recipe, _ = export_module.load_generator(out_dir)
    split, split_recipe = export_module.with_overrides(loaded, recipe, ["model.split_taps=65"])
    assert split_recipe.model.split_taps == 65 and split_recipe.export == recipe.export
    assert generator_delay_samples(split_recipe.model) == generator_delay_samples(recipe.model) + 16
    assert_same_trained_weights(generator, split)
    assert split.get_layer("band_split").get_weights()[0].shape[0] == 65
    assert main([out_dir, str(tmp_path / "wider"), "--set", "model.channels=8", "-q"]) == 2
    assert "model.split_taps can be overridden" in capsys.readouterr().err


def test_exported_folder_without_weights_is_refused(exported, tmp_path, capsys):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(exported[2], folder)
    os.remove(folder / export_module.WEIGHTS_FILE)
    assert main([str(folder), str(tmp_path / "out"), "-q"]) == 2
    assert "without generator.weights.h5" in capsys.readouterr().err


def test_saved_model_signatures(exported, audio):
    generator, _, out_dir, _ = exported
    loaded = tf.saved_model.load(os.path.join(out_dir, "saved_model"))
    assert set(loaded.signatures) == {"serving_default", "streaming", "block"}
    y = loaded.signatures["serving_default"](audio=tf.constant(audio[None, :, None]))["audio"]
    np.testing.assert_allclose(np.asarray(y)[0, :, 0], _reference(generator, audio), atol=1e-5)


def test_failed_export_leaves_previous_intact(exported, tmp_path, monkeypatch):
    _, _, out_dir, _ = exported
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("previous export")

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export_module, "_convert", broken)
    with pytest.raises(RuntimeError, match="converter exploded"):
        main(["--recipe", RECIPE, "--random-init", str(target), "-q"])
    assert (target / "keep.txt").read_text() == "previous export"
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_cli_refusals(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out"), "-q"]) == 2
    assert "neither a run directory nor a checkpoint prefix" in capsys.readouterr().err
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    assert main([str(empty_run), str(tmp_path / "out"), "-q"]) == 2
    assert "no checkpoint found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--random-init", str(tmp_path / "out")])
    assert "--random-init needs --recipe" in capsys.readouterr().err
    noncausal = tmp_path / "noncausal.yaml"
    save_recipe(load_recipe(RECIPE, ["model.causal=false"]), noncausal)
    assert main(["--recipe", str(noncausal), "--random-init", str(tmp_path / "out"), "-q"]) == 2
    assert "only a causal model can be exported" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_model_is_refused(exported, tmp_path, capsys):
    _, run_dir, _, _ = exported
    other = tmp_path / "other.yaml"
    save_recipe(load_recipe(RECIPE, ["model.channels=8", "model.max_channels=32"]), other)
    assert main([run_dir, str(tmp_path / "out"), "--recipe", str(other), "-q"]) == 2
    assert "does not match the recipe's model" in capsys.readouterr().err


def test_calibration_dir_errors(tmp_path):
    with pytest.raises(ExportError, match="no such directory"):
        export_module.calibration_audio(str(tmp_path / "nope"), 10, 128)
    with pytest.raises(ExportError, match="no audio files"):
        export_module.calibration_audio(str(tmp_path), 10, 128)


def test_full_integer_int8_is_calibrated_and_reported(tmp_path):
    out = tmp_path / "full"
    assert main(["--recipe", RECIPE, "--random-init", str(out), "--set", "export.int8_mode=full",
                 "--set", "export.int8_calibration_frames=40", "--block-frames", "8", "-q"]) == 0
    with open(out / "metadata.json", encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["files"]["streaming_int8"]["quantization"].startswith("full integer")
    assert meta["checks"]["int8_calibration"]["frames"] == 40
    assert "sample_8k.wav" in meta["checks"]["int8_calibration"]["audio"]
    assert meta["checks"]["int8_snr_db_vs_float"] >= FULL_INT8_MIN_SNR_DB
    assert meta["files"]["block_int8"]["frames_per_call"] == 8  # the offline twin, calibrated on the same audio
    assert export_module.float_ops((out / "block_int8.tflite").read_bytes()) == []


def test_an_integer_file_computes_as_its_offline_twin(tmp_path):
    """The integer streaming file, frame by frame, against its integer block file (the offline twin: the
    same layers on the same calibration audio, so the same ranges) on audio calibration never saw: equal to
    within one step of the output's quantisation. The states carry the arithmetic across frames exactly."""
    out = tmp_path / "int16"
    assert main(["--recipe", RECIPE, "--random-init", str(out), "--set", "export.int8_mode=16x8",
                 "--set", "export.int8_calibration_frames=20", "--block-frames", "8", "-q"]) == 0
    with open(out / "metadata.json", encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["checks"]["int8_calibration"]["frames"] == 24  # 20 rounded up to whole blocks of 8
    assert meta["checks"]["int8_block_vs_streaming_lsb"] <= 1.0
    states = tuple(StateTensor(**{**s, "shape": tuple(s["shape"])}) for s in meta["states"])
    audio = speech_like(3 * 8 * 128 / 8000, rate=8000, seed=5)
    step = export_module.output_step(str(out / "streaming_int8.tflite"), "streaming")
    frames = export_module._stream_tflite(str(out / "streaming_int8.tflite"), "streaming", states, audio)
    blocks = export_module._stream_tflite(str(out / "block_int8.tflite"), "block", states, audio)
    assert np.max(np.abs(frames - blocks)) <= step
    assert np.max(np.abs(frames)) > 100 * step  # not two silent outputs


def test_16x8_export_is_integer_only_with_int16_activations(exported, tmp_path):
    """export.int8_mode=16x8: every op computes in integers (float32 only in the QUANTIZE/DEQUANTIZE at
    the interface), the activations are int16 and the weights int8, read off the flatbuffer; the
    dynamic-range file, whose activations are float, is what the same check flags."""
    from ai_edge_litert.interpreter import Interpreter

    out = tmp_path / "int16"
    assert main(["--recipe", RECIPE, "--random-init", str(out), "--set", "export.int8_mode=16x8",
                 "--set", "export.int8_calibration_frames=40", "--set", "export.int8_tensor_names=false",
                 "--block-frames", "8", "-q"]) == 0
    model = (out / "streaming_int8.tflite").read_bytes()
    assert export_module.float_ops(model) == []
    interpreter = Interpreter(model_content=model)
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert convs and all(dtypes[op["inputs"][0]] == np.int16 and dtypes[op["inputs"][1]] == np.int8
                         and dtypes[op["outputs"][0]] == np.int16 for op in convs)
    with open(out / "metadata.json", encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["files"]["streaming_int8"]["quantization"].startswith("full integer: int8 weights, int16")
    assert not os.path.exists(out / export_module.INTEGER_SAVED_MODEL)
    # Without inner names (export.int8_tensor_names: false) the interface still carries them.
    names = {t["name"] for t in interpreter.get_tensor_details()}
    assert set(meta["tensor_names"]["streaming_int8"]["inputs"].values()) <= names and "" in names
    dynamic = open(os.path.join(exported[2], "streaming_int8.tflite"), "rb").read()
    assert "CONV_2D" in export_module.float_ops(dynamic)


def test_an_integer_file_without_inner_names_computes_the_same_and_is_smaller(tmp_path, audio):
    """drop_unread_fields: the same 16x8 arithmetic (bit-identical output through the metadata's
    interface, which keeps its names) in fewer bytes; no exported integer file carries the calibration
    min/max its runtime never reads."""
    import shutil

    from tensorflow.lite.tools import flatbuffer_utils

    from bwe.integer_conversion import drop_unread_fields

    named = tmp_path / "named"
    assert main(["--recipe", RECIPE, "--random-init", str(named), "--set", "export.int8_mode=16x8",
                 "--set", "export.int8_calibration_frames=16", "--block-frames", "8", "-q"]) == 0
    nameless = tmp_path / "nameless"
    shutil.copytree(named, nameless)
    model = (named / "streaming_int8.tflite").read_bytes()
    (nameless / "streaming_int8.tflite").write_bytes(drop_unread_fields(model, keep_names=False))
    assert os.path.getsize(nameless / "streaming_int8.tflite") < 0.95 * len(model)
    np.testing.assert_array_equal(_stream_with_metadata_only(nameless, audio, "streaming_int8"),
                                  _stream_with_metadata_only(named, audio, "streaming_int8"))
    for folder in (named, nameless):
        tree = flatbuffer_utils.read_model(str(folder / "streaming_int8.tflite"))
        (sig,) = tree.signatureDefs
        interface = {t.tensorIndex for t in [*sig.inputs, *sig.outputs]}
        tensors = tree.subgraphs[0].tensors
        assert all(t.quantization is None or t.quantization.min is None for t in tensors)
        assert all(tensors[i].name for i in interface)
        inner_names = [t.name for i, t in enumerate(tensors) if i not in interface]
        assert all(inner_names) if folder == named else not any(inner_names)


def test_the_bundled_model_in_16x8_keeps_the_generated_band(tmp_path):
    """The shipped streaming weights as a full-integer 16x8 file (calibrated on the bundled sample, the
    default): the band survives int16 arithmetic because the fixed filters are two int8 kernels each and
    the head's levels are computed in the log domain (before both: 26 dB overall, -4 dB in 4-8 kHz;
    measured now 47 / 18 dB). The check plays audio calibration never saw (the sample reversed)."""
    bundle = os.path.join(os.path.dirname(export_module.__file__), "pretrained")
    out = tmp_path / "int16"
    assert main([bundle, str(out), "--set", "export.int8_mode=16x8", "-q"]) == 0
    with open(out / "metadata.json", encoding="utf-8") as f:
        checks = json.load(f)["checks"]
    assert checks["int8_snr_db_vs_float"] >= 40.0
    assert checks["int8_highband_snr_db_vs_float"] >= 15.0


def test_highband_keeps_only_bins_above_cutoff():
    t = np.arange(1600) / 16000
    low, high = np.sin(2 * np.pi * 1000 * t), 0.1 * np.sin(2 * np.pi * 6000 * t)
    np.testing.assert_allclose(export_module.highband(low + high, 16000), high, atol=1e-9)


def test_calibration_spreads_over_the_folder(tmp_path):
    import soundfile as sf

    for i in range(3):  # each file a constant of its own value, so each share can be found
        sf.write(tmp_path / f"f{i}.wav", np.full(8000, 0.1 * (i + 1), np.float32), 8000, subtype="FLOAT")
    audio, description = export_module.calibration_audio(str(tmp_path), 30, 128)
    assert audio.shape == (30 * 128,)
    assert description.startswith("3 file(s)")
    for i in range(3):  # an equal share (1280 samples) from each file
        assert np.sum(np.isclose(audio, 0.1 * (i + 1), atol=1e-3)) >= 1200


def test_unknown_int8_mode_is_refused_with_the_key(tmp_path, capsys):
    from bwe.config import RecipeError

    with pytest.raises(RecipeError, match=r"export.int8_mode: 'int4' is not one of dynamic, full"):
        load_recipe(RECIPE, ["export.int8_mode=int4"])
    assert main(["--recipe", RECIPE, "--random-init", str(tmp_path / "out"), "--set", "export.int8_mode=int4",
                 "-q"]) == 2
    assert "export.int8_mode" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_highband_gain_scales_the_generated_band_only(exported, audio, tmp_path):
    from bwe.runtime import ExportedModel

    _, run_dir, out_dir, metadata = exported
    assert metadata["highband_gain"] == 1.0
    outputs = {1.0: ExportedModel(out_dir)(audio)}
    for gain in (0.5, 0.25):
        out = tmp_path / f"gain{gain}"
        assert main([run_dir, str(out), "--block-frames", "8", "--set", f"export.highband_gain={gain}", "-q"]) == 0
        with open(out / "metadata.json", encoding="utf-8") as f:
            assert json.load(f)["highband_gain"] == gain
        outputs[gain] = ExportedModel(str(out))(audio)
    generated = outputs[1.0] - outputs[0.5]  # half of the generated band
    # The output is the interpolated input plus gain x the generated band: exactly affine in the gain.
    np.testing.assert_allclose(outputs[0.5] - outputs[0.25], generated / 2, atol=1e-5)
    # ... and what the gain scales is a high band: the network's branch passes the complementary high-pass.
    spectrum = np.abs(np.fft.rfft(generated)) ** 2
    freqs = np.fft.rfftfreq(len(generated), 1 / 16000)
    assert spectrum[freqs < 3000].sum() < 1e-3 * spectrum[freqs > 4000].sum()


@pytest.mark.parametrize("overrides", [[], ["model.envelope_bands=4", "model.envelope_crossfade=32"]],
                         ids=["headless", "envelope-head"])
def test_highband_gain_scales_exactly_the_layer_the_model_names(overrides):
    """export.highband_gain scales the layer each model's handle names (model.bwe_parts.highband_gain: the
    output conv, or the head's gain-pairs conv) and nothing else, whatever the layers are called."""
    from bwe.export import scale_highband
    from bwe.models.seanet import build_generator, generator_parts

    recipe = load_recipe(RECIPE, overrides + ["export.highband_gain=0.5"])
    generator = build_generator(recipe.model, Modes.TRAINING)
    models = [to_streaming(generator, Modes.NON_STREAM_INFERENCE),
              to_streaming(generator, Modes.STREAM_EXTERNAL_STATE_INFERENCE)]
    expected = "envelope_gain_pairs" if recipe.model.envelope_bands else "output_conv"
    for model in models:
        assert generator_parts(model).highband_gain is model.get_layer(expected)
        for i, layer in enumerate(model.layers):
            layer.name = f"renamed_{i}"
    before = [[w.copy() for w in layer.get_weights()] for model in models for layer in model.layers]
    scale_highband(models, recipe)
    after = [layer.get_weights() for model in models for layer in model.layers]
    scaled = [generator_parts(model).highband_gain for model in models]
    assert all(layer.get_weights() for layer in scaled)
    for layer, old, new in zip([layer for model in models for layer in model.layers], before, after):
        factor = 0.5 if any(layer is s for s in scaled) else 1.0
        for a, b in zip(old, new):
            np.testing.assert_array_equal(b, a * factor)


def test_highband_gain_needs_the_highband_residual(tmp_path, capsys):
    from bwe.config import RecipeError

    with pytest.raises(RecipeError, match="export.highband_gain: must be > 0"):
        load_recipe(RECIPE, ["export.highband_gain=0"])
    with pytest.raises(RecipeError, match="export.band_gains: every gain must be > 0"):
        load_recipe(RECIPE, ["export.band_gains=[1, 0]"])
    assert main(["--recipe", RECIPE, "--random-init", str(tmp_path / "out"), "--set", "model.highband_residual=false",
                 "--set", "export.highband_gain=0.5", "-q"]) == 2
    assert "needs model.highband_residual" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")

"""bwe.runtime: offline and streaming use of an export with LiteRT + NumPy only."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bwe.runtime import ExportedModel, ModelError
from exported_tiny import exported_tiny
from signals import speech_like

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported():
    return exported_tiny()


def _tf_reference(generator, x, total):
    """The TensorFlow generator's output on x followed by zeros, ``total`` 16 kHz samples."""
    padded = np.zeros(total // 2, np.float32)
    padded[: len(x)] = x
    return np.asarray(generator(padded[None, :, None]))[0, :, 0]


@pytest.mark.parametrize("n", [1, 127, 128, 1000, 3000])
def test_offline_call_is_delay_compensated(exported, n):
    generator, _, out_dir = exported
    model = ExportedModel(out_dir)
    x = speech_like(n / 8000 if n > 200 else 0.025, rate=8000, seed=n)[:n]
    y = model(x)
    assert y.shape == (2 * n,) and y.dtype == np.float32
    delay = model.metadata.delay_samples
    reference = _tf_reference(generator, x, 2 * n + delay + 512)[delay : delay + 2 * n]
    assert np.max(np.abs(y - reference)) <= 1e-4


def test_long_input_runs_in_blocks_and_equals_one_piece(exported):
    from ai_edge_litert.interpreter import Interpreter

    _, _, out_dir = exported
    model = ExportedModel(out_dir)
    x = speech_like(3.0, rate=8000, seed=7)
    y_one_piece = model(x)
    # The block model carries the state across its calls exactly as the one-frame model does: one
    # session over the whole padded signal, frame by frame, gives the same samples up to float
    # rounding (the two files' kernels round differently).
    frame, delay = model.frame_input_samples, model.delay_samples
    padded = np.zeros(-(-(len(x) + delay) // frame) * frame + frame, np.float32)
    padded[: len(x)] = x
    frame_by_frame = model.stream().process(padded)[delay : delay + 2 * len(x)]
    np.testing.assert_allclose(frame_by_frame, y_one_piece, atol=1e-5)
    # And the whole-signal offline.tflite agrees.
    meta = model.metadata
    interpreter = Interpreter(model_path=os.path.join(out_dir, meta.files["offline"].file))
    index = interpreter.get_input_details()[0]["index"]
    padded = np.concatenate([x, np.zeros(128, np.float32)])
    interpreter.resize_tensor_input(index, [1, len(padded), 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, padded[None, :, None])
    interpreter.invoke()
    offline = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, :, 0]
    delay = meta.delay_samples
    assert np.max(np.abs(offline[delay : delay + len(y_one_piece)] - y_one_piece)) <= 1e-4


def test_stream_session_and_reset(exported):
    generator, _, out_dir = exported
    model = ExportedModel(out_dir)
    a = speech_like(0.128, rate=8000, seed=1)
    b = speech_like(0.128, rate=8000, seed=2)
    session = model.stream()
    ya = np.concatenate([session.process(a[i : i + 128]) for i in range(0, len(a), 128)])
    assert np.max(np.abs(ya - np.asarray(generator(a[None, :, None]))[0, :, 0])) <= 1e-4
    dirty = session.process(b)
    session.reset()
    yb = session.process(b)  # several frames in one call are fine too
    assert np.max(np.abs(yb - np.asarray(generator(b[None, :, None]))[0, :, 0])) <= 1e-4
    assert np.max(np.abs(dirty - yb)) > 1e-4
    with pytest.raises(ValueError, match="multiple of 128"):
        session.process(np.zeros(100, np.float32))


def test_session_records_each_calls_inputs(exported):
    """`process(x, record=...)` (int8 calibration's representative data) keeps what each call was fed."""
    _, _, out_dir = exported
    model = ExportedModel(out_dir)
    x = speech_like(3 * 128 / 8000, rate=8000, seed=5)
    session, records = model.stream(), []
    session.process(x, record=records)
    runner = model.runner("streaming")
    assert len(records) == 3
    assert [list(r) for r in records] == [runner.input_names] * 3
    meta = model.metadata
    np.testing.assert_array_equal(records[1][meta.audio_input], x[None, 128:256, None])
    assert all(not np.any(records[0][s.input]) for s in meta.states)  # a stream starts at zeros
    _, states = runner.run(x[:128], [np.zeros(s.shape, np.float32) for s in meta.states])
    for state, recorded in zip(states, [records[1][s.input] for s in meta.states]):
        np.testing.assert_array_equal(recorded, state)  # the second call got the first call's states


def test_int8_session(exported):
    _, _, out_dir = exported
    x = speech_like(0.256, rate=8000, seed=3)
    y_float = ExportedModel(out_dir).stream().process(x)
    y_int8 = ExportedModel(out_dir, int8=True).stream().process(x)
    snr = 10 * np.log10(np.sum(y_float**2) / np.sum((y_float - y_int8) ** 2))
    assert snr >= 25.0  # dynamic-range int8, the export default (see test_export.INT8_MIN_SNR_DB)


def test_int8_whole_file_runs_block_int8(exported):
    _, _, out_dir = exported
    x = speech_like(1.5, rate=8000, seed=4)
    model = ExportedModel(out_dir, int8=True)
    session = model.block_stream()
    assert session._block is model.runner("block_int8")  # the fast path, not frame by frame
    y_float, y_int8 = ExportedModel(out_dir)(x), model(x)
    assert y_int8.shape == y_float.shape == (2 * len(x),)
    assert 10 * np.log10(np.sum(y_float**2) / np.sum((y_float - y_int8) ** 2)) >= 25.0


def test_runtime_never_imports_tensorflow(exported):
    _, _, out_dir = exported
    code = (
        "import sys, numpy as np\n"
        "from bwe.runtime import ExportedModel\n"
        f"m = ExportedModel({out_dir!r})\n"
        "assert m(np.zeros(1000, np.float32)).shape == (2000,)\n"
        "assert m.stream().process(np.zeros(128, np.float32)).shape == (256,)\n"
        "assert ExportedModel(m.model_dir, int8=True).stream().process(np.zeros(128, np.float32)).shape == (256,)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'scipy'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    # Three interpreters (block, frame, int8 frame) were built, and LiteRT's delegate notice was
    # held back each time: a quiet run leaves stderr empty.
    assert result.stderr == "", result.stderr[-2000:]


def test_only_the_delegate_notice_is_held_back():
    # Native writes to file descriptor 2 inside the filter: the notice goes, other lines come through
    # in order, after the block, also when the block raises.
    code = (
        "import os, sys\n"
        "from bwe.runtime import DELEGATE_NOTICE, without_delegate_notice\n"
        "with without_delegate_notice():\n"
        "    os.write(2, (DELEGATE_NOTICE + '\\nWARNING: kept 1\\n').encode())\n"
        "try:\n"
        "    with without_delegate_notice():\n"
        "        os.write(2, (DELEGATE_NOTICE + '\\nERROR: kept 2\\n').encode())\n"
        "        raise RuntimeError('boom')\n"
        "except RuntimeError:\n"
        "    pass\n"
        "print('after', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "WARNING: kept 1\nERROR: kept 2\nafter\n"


def test_bad_model_folders(exported, tmp_path):
    _, _, out_dir = exported
    with pytest.raises(ModelError, match="not found"):
        ExportedModel(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(out_dir, broken)
    (broken / "metadata.json").write_text("{not json")
    with pytest.raises(ModelError, match="metadata.json: unreadable"):
        ExportedModel(broken)
    meta = json.load(open(os.path.join(out_dir, "metadata.json"), encoding="utf-8"))
    del meta["states"]
    (broken / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"missing keys \['states'\]"):
        ExportedModel(broken)
    meta = json.load(open(os.path.join(out_dir, "metadata.json"), encoding="utf-8"))
    meta["states"][0]["shape"] = "1x31"
    (broken / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"metadata.json: states\[0\].shape is '1x31', expected a list"):
        ExportedModel(broken)
    meta = json.load(open(os.path.join(out_dir, "metadata.json"), encoding="utf-8"))
    meta["states"][0]["input"] = "no_such_state"
    (broken / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="no_such_state"):
        ExportedModel(broken).stream()
    for version in (None, 2):
        meta = json.load(open(os.path.join(out_dir, "metadata.json"), encoding="utf-8"))
        meta["format_version"] = version
        (broken / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(ModelError, match=f"format_version {version}, this bwe reads 1"):
            ExportedModel(broken)
    (broken / "metadata.json").write_text(json.dumps(json.load(open(os.path.join(out_dir, "metadata.json")))))
    os.rename(broken / "block.tflite", broken / "moved.tflite")
    with pytest.raises(ModelError, match=r"block.tflite: not found \(.*metadata.json lists it\)"):
        ExportedModel(broken)
    os.rename(broken / "moved.tflite", broken / "block.tflite")
    (broken / "streaming.tflite").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="streaming.tflite: not a loadable TFLite model"):
        ExportedModel(broken).stream()


def test_bad_input_is_refused(exported):
    model = ExportedModel(exported[2])
    with pytest.raises(ValueError, match="mono signal"):
        model(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(np.array([0.0, np.nan], np.float32))

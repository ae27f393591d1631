"""Run an exported model (``bwe-export`` output) with LiteRT and NumPy only: no TensorFlow.

    model = ExportedModel("exported/")
    y16k = model(x8k)                     # whole signal, delay-compensated, len(y16k) == 2 * len(x8k)
    session = model.stream()              # frame by frame, e.g. from a microphone callback
    out_256 = session.process(frame_128)  # 128 samples at 8 kHz in -> 256 samples at 16 kHz out
    session.reset()                       # before the next, unrelated utterance

Everything is driven by ``metadata.json`` (`bwe.metadata.ModelMetadata`): file names, tensor names
and the list of state tensors (fed back from each call's outputs to the next call's inputs, starting
at zeros). Sessions return the model's raw output, which lags the input by ``metadata.delay_samples``
16 kHz samples;
``ExportedModel.__call__`` and ``ExportedModel.aligned()`` (for audio that arrives in pieces, e.g. a
file read in blocks) remove that lag by dropping the first ``delay_samples`` outputs and flushing
the model with zeros.

Whole signals run through ``block.tflite`` (256 frames = 4.1 s per call by default) with the state
carried across calls, then frame by frame for the last partial block: memory stays bounded for
hour-long input and the output is identical to one-piece processing, because the block and the
frame model share one state layout.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from bwe.metadata import METADATA_FILE, MetadataError, ModelMetadata, StateTensor

# LiteRT's C++ logger announces every XNNPACK delegate on file descriptor 2, which Python cannot
# silence: in a pipe like ``arecord | bwe-enhance --streaming - - | aplay`` that line is noise.
DELEGATE_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


class ModelError(RuntimeError):
    """An exported model folder is missing, incomplete or inconsistent; the message names the file."""


def _interpreter(path: str, num_threads: int, keep_all_tensors: bool = False):
    from ai_edge_litert.interpreter import Interpreter

    if not os.path.isfile(path):
        raise ModelError(f"{path}: model file not found")
    try:
        return Interpreter(model_path=path, num_threads=num_threads, experimental_preserve_all_tensors=keep_all_tensors)
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a loadable TFLite model ({e})") from None


@contextlib.contextmanager
def without_delegate_notice():
    """Run the block with file descriptor 2 captured; then pass on everything LiteRT wrote there
    except its delegate notice (warnings and errors still reach the user)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        saved = None
    if saved is None:  # no usable stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if line.strip() != DELEGATE_NOTICE)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class StatefulRunner:
    """One .tflite with external state: binds the audio and state tensors once, then runs calls.

    The one loop step every LiteRT user of an export shares (sessions, the export's own checks, the
    timing tool): ``run`` = `feed`, `invoke`, `fetch`, kept apart so that the invoke can be timed alone.
    ``keep_all_tensors`` keeps every intermediate tensor readable after a call (diagnostics; slower).
    """

    def __init__(self, path: str, signature: str, states: Sequence[StateTensor], audio_input: str,
                 audio_output: str, num_threads: int = 1, keep_all_tensors: bool = False):
        self.path = path
        self.interpreter = _interpreter(path, num_threads, keep_all_tensors)
        with without_delegate_notice():
            self.interpreter.allocate_tensors()
        try:
            runner = self.interpreter.get_signature_runner(signature)
        except ValueError:
            raise ModelError(f"{path}: no signature {signature!r}") from None
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        try:
            self.audio_in = inputs[audio_input]["index"]
            self.audio_out = outputs[audio_output]["index"]
            self.state_pairs = [(inputs[s.input]["index"], outputs[s.output]["index"]) for s in states]
        except KeyError as e:
            raise ModelError(f"{path}: tensor {e} named in {METADATA_FILE} is not in the model") from None
        for state in states:
            actual = tuple(int(d) for d in inputs[state.input]["shape"])
            if actual != state.shape:
                raise ModelError(f"{path}: state {state.input} has shape {actual}, metadata says {state.shape}")
        # Signature names of the inputs, in feed order: what `feed_dict` keys its arrays by.
        self.input_names = [audio_input] + [s.input for s in states]
        self.frame_in = int(inputs[audio_input]["shape"][1])
        self.zero_states = [np.zeros(s.shape, np.float32) for s in states]

    def feed(self, frame: np.ndarray, states: list[np.ndarray]) -> None:
        """Set the inputs of one call: ``frame`` [frame_in] float32 and the states."""
        interpreter = self.interpreter
        interpreter.set_tensor(self.audio_in, frame.reshape(1, -1, 1))
        for (index, _), state in zip(self.state_pairs, states):
            interpreter.set_tensor(index, state)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def fetch(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The outputs of the last call: audio [2*frame_in] and the new states."""
        interpreter = self.interpreter
        new_states = [interpreter.get_tensor(out) for _, out in self.state_pairs]
        return interpreter.get_tensor(self.audio_out).reshape(-1), new_states

    def run(self, frame: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One call: ``frame`` [frame_in] float32 and the states in; output [2*frame_in] and new states out."""
        self.feed(frame, states)
        self.invoke()
        return self.fetch()

    def feed_dict(self, frame: np.ndarray, states: list[np.ndarray]) -> dict[str, np.ndarray]:
        """One call's inputs by signature name, copied: e.g. a TFLite converter's representative dataset."""
        arrays = [frame.reshape(1, -1, 1)] + list(states)
        return {name: np.array(array, np.float32) for name, array in zip(self.input_names, arrays)}


class StreamSession:
    """Frame-by-frame processing with the model's state kept between calls.

    ``process(x)`` takes any whole number of frames (``frame_input_samples`` each, 8 kHz) and returns
    twice as many 16 kHz samples: the raw model output, lagging the input by ``delay_samples``. A
    session over a block runner alone runs whole blocks (its "frame" is then a block).
    """

    def __init__(self, frame_runner: StatefulRunner, block_runner: StatefulRunner | None = None):
        self._frame = frame_runner
        self._block = block_runner
        self.frame_input_samples = frame_runner.frame_in
        # Input per block-model call, or 0 without one; callers batch input to multiples of it.
        self.block_input_samples = block_runner.frame_in if block_runner is not None else 0
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next call starts from the all-zero state, as at the start of a stream."""
        self._states = [s.copy() for s in self._frame.zero_states]

    def process(self, x: np.ndarray, record: list | None = None) -> np.ndarray:
        """``x`` through the model; with ``record``, each call's inputs are appended to it (`feed_dict`)."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if len(x) % self.frame_input_samples:
            raise ValueError(f"process: got {len(x)} samples, need a multiple of {self.frame_input_samples} "
                             "(buffer the rest until the next call)")
        out = np.empty(2 * len(x), np.float32)
        start = 0
        if self._block is not None:
            start = self._run_calls(self._block, x, start, out, record)
        self._run_calls(self._frame, x, start, out, record)
        return out

    def _run_calls(self, runner: StatefulRunner, x: np.ndarray, start: int, out: np.ndarray,
                   record: list | None) -> int:
        """As many whole calls of ``runner`` as fit from ``start``; returns where they stopped."""
        step = runner.frame_in
        while len(x) - start >= step:
            frame = x[start : start + step]
            if record is not None:
                record.append(runner.feed_dict(frame, self._states))
            y, self._states = runner.run(frame, self._states)
            out[2 * start : 2 * (start + step)] = y
            start += step
        return start


class AlignedStream:
    """Pushes 8 kHz audio of any block size through a session; returns delay-compensated 16 kHz audio.

    The causal model's output lags its input by ``delay_samples`` output samples (the group delay of
    its fixed interpolation and band-split filters). Offline we can afford to wait: the first
    ``delay_samples`` outputs are dropped, and `finish` feeds zeros to flush the last ones, so output
    sample k lines up with input time k.
    """

    def __init__(self, session: StreamSession, delay_samples: int):
        self.session = session
        self.frame = session.frame_input_samples
        # Input is held back until a whole number of these is ready: one frame when streaming, one
        # block of the block model otherwise. Feeding a file's 10 s read blocks as they come would
        # send each block's remainder frame by frame, which made whole-file runs ~15 % slower.
        self.granule = session.block_input_samples or self.frame
        self._pending = np.zeros(0, np.float32)
        self._to_drop = delay_samples

    def _run(self, x8: np.ndarray) -> np.ndarray:
        y = self.session.process(x8)
        if self._to_drop:
            dropped = min(self._to_drop, len(y))
            y = y[dropped:]
            self._to_drop -= dropped
        return y

    def push(self, x8: np.ndarray) -> np.ndarray:
        """Feed any number of 8 kHz samples; returns the 16 kHz samples that are now final."""
        buf = np.concatenate([self._pending, np.asarray(x8, np.float32).reshape(-1)])
        usable = len(buf) // self.granule * self.granule
        self._pending = buf[usable:]
        if usable == 0:
            return np.zeros(0, np.float32)
        return self._run(buf[:usable])

    def finish(self, total_output: int, produced: int) -> np.ndarray:
        """Flush the tail so that exactly `total_output` samples have been produced in all."""
        missing = total_output - produced
        if missing <= 0:
            return np.zeros(0, np.float32)
        # The held-back input, then zeros, up to whole frames covering the delayed last samples.
        needed = max(len(self._pending), -(-(missing + self._to_drop) // 2))
        needed = -(-needed // self.frame) * self.frame
        x = np.concatenate([self._pending, np.zeros(needed - len(self._pending), np.float32)])
        self._pending = np.zeros(0, np.float32)
        return self._run(x)[:missing]


class ExportedModel:
    """An exported bwe model folder: metadata, offline enhancement and streaming sessions.

    Args:
      model_dir: folder written by ``bwe-export``.
      int8: stream with ``streaming_int8.tflite`` instead of the float model.
      num_threads: LiteRT threads per interpreter (1 = the real-time, one-core setting).
    """

    def __init__(self, model_dir: str | os.PathLike, int8: bool = False, num_threads: int = 1):
        self.model_dir = os.fspath(model_dir)
        meta_path = os.path.join(self.model_dir, METADATA_FILE)
        if not os.path.isfile(meta_path):
            raise ModelError(f"{meta_path}: not found (is {self.model_dir} a bwe-export folder?)")
        try:
            self.metadata = ModelMetadata.load(meta_path)
        except MetadataError as e:
            raise ModelError(str(e)) from None
        files = self.metadata.files
        for key in ("streaming", "block") + (("streaming_int8",) if int8 else ()):
            if key not in files:
                raise ModelError(f"{meta_path}: files.{key} missing")
            path = os.path.join(self.model_dir, files[key].file)
            if not os.path.isfile(path):
                raise ModelError(f"{path}: not found ({meta_path} lists it)")
        self.int8 = int8
        self.num_threads = num_threads
        self.delay_samples = self.metadata.delay_samples
        self.frame_input_samples = self.metadata.frame_input_samples
        self._runners: dict[str, StatefulRunner] = {}

    def runner(self, key: str) -> StatefulRunner:
        """The runner of the file listed as ``key`` in metadata.json (e.g. "streaming"), built once."""
        if key not in self._runners:
            meta, entry = self.metadata, self.metadata.files[key]
            self._runners[key] = StatefulRunner(os.path.join(self.model_dir, entry.file), entry.signature,
                                                meta.states, meta.audio_input, meta.audio_output, self.num_threads)
        return self._runners[key]

    def stream(self) -> StreamSession:
        """A frame-by-frame session on ``streaming.tflite`` (or the int8 one)."""
        return StreamSession(self.runner("streaming_int8" if self.int8 else "streaming"))

    def block_stream(self) -> StreamSession:
        """Like `stream`, but whole blocks go through the block model for speed (float: the same output).

        With ``int8``: ``block_int8.tflite`` when the export has it, else ``streaming_int8.tflite`` frame by
        frame. An integer export's block file computes exactly as its streaming file (`bwe.integer_conversion`);
        a dynamic-range one quantises each call's activations from their own range, so its output is close
        to, not identical with, ``streaming_int8.tflite``'s.
        """
        if self.int8:
            if "block_int8" not in self.metadata.files:
                return self.stream()
            return StreamSession(self.runner("streaming_int8"), self.runner("block_int8"))
        return StreamSession(self.runner("streaming"), self.runner("block"))

    def aligned(self, streaming: bool = False) -> AlignedStream:
        """A delay-compensated session: `stream` (frame by frame) or `block_stream` (whole blocks)."""
        return AlignedStream(self.stream() if streaming else self.block_stream(), self.delay_samples)

    def __call__(self, x8k: np.ndarray) -> np.ndarray:
        """Enhance a whole 8 kHz signal: float32 [n] -> 16 kHz float32 [2n], time-aligned with the input."""
        x = np.asarray(x8k, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a mono signal of shape [n], got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("input contains NaN or Inf samples")
        stream = self.aligned()
        out = np.empty(2 * len(x), np.float32)
        produced = 0
        # One block-model call at a time bounds the memory beside the output.
        for start in range(0, len(x), stream.granule):
            y = stream.push(x[start : start + stream.granule])
            out[produced : produced + len(y)] = y
            produced += len(y)
        out[produced:] = stream.finish(len(out), produced)
        return out

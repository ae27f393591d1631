"""`bwe-enhance`: narrowband speech in, wideband (16 kHz) speech out, with an exported model.

    bwe-enhance IN OUT                      one file (any rate / channels in, 16 kHz mono out)
    bwe-enhance IN_DIR OUT_DIR              every audio file below IN_DIR, folder structure kept
    bwe-enhance --streaming IN OUT          frame by frame (16 ms) through streaming.tflite
    bwe-enhance --streaming - -             raw 16-bit 8 kHz PCM on stdin -> 16 kHz PCM on stdout

Without ``--model`` files and folders go through the bundled offline model (it looks ahead, so its
output waits a little longer, which a file does not mind), and ``--streaming`` through the bundled
streaming model (causal, 16 ms frames).

Files are read in blocks, resampled to 8 kHz with a streaming soxr resampler and pushed through the
model's state, so memory stays bounded for hour-long input and the result equals processing the
whole file at once. Output is written to a temporary file beside the target and renamed into place
only when complete: a failure never leaves a partial output or touches the input.

Runs on LiteRT and NumPy only; TensorFlow is never imported here.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import soundfile as sf
import soxr

from bwe.config import INPUT_RATE, OUTPUT_RATE
from bwe.data.audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    check_output_path,
    list_audio_files,
    open_audio,
    output_format,
)
from bwe.files import replacing

READ_BLOCK_SECONDS = 10.0
# A file whose energy above 4 kHz is more than this fraction of its total is already wideband.
# Speech has little energy up there: in the real-speech corpus' wideband files the median fraction
# is 0.3-1 % by source, so the -20 dB (1 %) used before missed about 62 % of them; at -30 dB about
# 83 % are flagged, while 8 kHz speech upsampled by soxr stays below -50 dB. Upsampling without an
# anti-imaging filter (linear interpolation: median -28 dB) leaves images there, which the model
# replaces too, so the warning is true of them as well.
WIDEBAND_ENERGY_RATIO = 1e-3
STREAMING_MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
OFFLINE_MODEL_DIR = os.path.join(STREAMING_MODEL_DIR, "offline")


class EnhanceError(Exception):
    """A user-facing failure: printed as one line, no traceback."""


def default_model_dir(streaming: bool) -> str:
    """The bundled model for the job: the streaming one for --streaming, the offline one for files."""
    return STREAMING_MODEL_DIR if streaming else OFFLINE_MODEL_DIR


def load_model(model_dir: str | None, int8: bool = False, threads: int = 1, streaming: bool = False):
    """Load an exported model folder (default: the bundled one for the job) and check its contract."""
    model_dir = model_dir or default_model_dir(streaming)
    if not os.path.isdir(model_dir):
        raise EnhanceError(f"model directory not found: {model_dir}")
    from bwe.runtime import ExportedModel, ModelError  # imported here so --help stays instant

    try:
        model = ExportedModel(model_dir, int8=int8, num_threads=threads)
    except ModelError as e:
        raise EnhanceError(str(e)) from None
    meta = model.metadata
    if meta.input_rate != INPUT_RATE or meta.output_rate != OUTPUT_RATE:
        raise EnhanceError(
            f"{model_dir}: model metadata says {meta.input_rate} Hz -> {meta.output_rate} Hz;"
            f" bwe-enhance needs {INPUT_RATE} Hz -> {OUTPUT_RATE} Hz"
        )
    return model


def _wideband_ratio(block: np.ndarray, rate: int) -> tuple[float, float]:
    """(energy above 4 kHz, total energy) of a mono block at `rate`."""
    if rate <= INPUT_RATE or len(block) < 2:
        return 0.0, float(np.sum(block.astype(np.float64) ** 2))
    power = np.abs(np.fft.rfft(block.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(block), 1.0 / rate)
    return float(power[freqs > 4000].sum()), float(power.sum())


def enhance_file(model, in_path: str, out_path: str, subtype: str = "PCM_16", streaming: bool = False) -> None:
    """Enhance one file to a 16 kHz mono file of the same duration (see module docstring)."""
    check_output_path(out_path, protect=[in_path])
    out_format, subtype = output_format(out_path, subtype)
    source = open_audio(in_path)
    with source, replacing(out_path, suffix=os.path.splitext(out_path)[1] or ".wav") as tmp_path:
        rate = source.samplerate
        total_output = int(round(source.frames * OUTPUT_RATE / rate))
        resampler = None if rate == INPUT_RATE else soxr.ResampleStream(
            rate, INPUT_RATE, 1, dtype="float32", quality="VHQ")
        stream = model.aligned(streaming)
        high = total = 0.0
        produced = 0
        block_frames = max(int(READ_BLOCK_SECONDS * rate), 1)
        with sf.SoundFile(tmp_path, "w", OUTPUT_RATE, 1, subtype=subtype,
                          format=out_format) as sink:
            read = 0
            while read < source.frames:
                try:
                    block = source.read(min(block_frames, source.frames - read), dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as e:
                    raise EnhanceError(f"{in_path}: audio data is truncated or corrupt ({e})") from None
                if len(block) == 0:
                    raise EnhanceError(f"{in_path}: audio data is truncated (read {read} of {source.frames} frames)")
                read += len(block)
                mono = block.mean(axis=1)
                if not np.all(np.isfinite(mono)):
                    raise EnhanceError(f"{in_path}: contains NaN or infinite samples")
                h, t = _wideband_ratio(mono, rate)
                high, total = high + h, total + t
                x8 = mono if resampler is None else resampler.resample_chunk(mono, last=read >= source.frames)
                y = stream.push(x8)
                y = y[: max(total_output - produced, 0)]
                sink.write(y)
                produced += len(y)
            sink.write(stream.finish(total_output, produced))
    if total > 0 and high / total > WIDEBAND_ENERGY_RATIO:
        print(f"bwe-enhance: warning: {in_path}: {100 * high / total:.2g} % of the energy "
              f"({10 * np.log10(high / total):.0f} dB) is above 4 kHz; the input is already wideband and "
              "that band will be replaced by the model's estimate", file=sys.stderr)


def enhance_pipe(model, stdin, stdout) -> None:
    """Real-time pipe: raw 16-bit 8 kHz mono PCM in, raw 16-bit 16 kHz PCM out, frame by frame.

    Each 16 ms input frame is answered as soon as it is read and stdout is flushed, so the output
    lags the input only by the model's latency. At EOF the partial last frame is zero-padded and the
    delayed tail is flushed, so the total output is exactly twice the input length.
    """
    stream = model.aligned(streaming=True)
    frame_bytes = stream.frame * 2
    produced = consumed = 0
    carry = b""
    while True:
        chunk = stdin.read(frame_bytes - len(carry))
        if not chunk:
            break
        carry += chunk
        if len(carry) < frame_bytes:
            continue
        x = np.frombuffer(carry, "<i2").astype(np.float32) / 32768.0
        carry = b""
        consumed += len(x)
        y = stream.push(x)
        produced += len(y)
        stdout.write(_to_pcm16(y))
        stdout.flush()
    if len(carry) % 2:
        raise EnhanceError("stdin: input ended in the middle of a 16-bit sample")
    if carry:
        x = np.frombuffer(carry, "<i2").astype(np.float32) / 32768.0
        consumed += len(x)
        y = stream.push(x)
        produced += len(y)
        stdout.write(_to_pcm16(y))
    stdout.write(_to_pcm16(stream.finish(2 * consumed, produced)))
    stdout.flush()


def _to_pcm16(y: np.ndarray) -> bytes:
    return (np.clip(y, -1.0, 1.0 - 1.0 / 32768) * 32768.0).round().astype("<i2").tobytes()


def enhance_folder(model, in_dir: str, out_dir: str, subtype: str, streaming: bool) -> int:
    """Enhance every audio file below `in_dir` into `out_dir` (structure kept, .wav out).

    A failing file is reported and skipped; the rest are processed. Returns the number of failures.
    """
    from tqdm import tqdm

    if os.path.abspath(out_dir) == os.path.abspath(in_dir):
        raise EnhanceError(f"{out_dir}: output folder is the input folder; refusing to overwrite inputs")
    # An output folder inside the input folder holds the last run's results: they are outputs, not
    # inputs (a rerun would otherwise enhance them again into out/out/...).
    out_abs = os.path.abspath(out_dir)
    files = [os.path.relpath(p, in_dir) for p in list_audio_files(in_dir)
             if os.path.commonpath([os.path.abspath(p), out_abs]) != out_abs]
    if not files:
        raise EnhanceError(f"{in_dir}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)})")
    failures = []
    for rel in tqdm(files, desc="bwe-enhance", unit="file", file=sys.stderr):
        target = os.path.join(out_dir, os.path.splitext(rel)[0] + ".wav")
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            enhance_file(model, os.path.join(in_dir, rel), target, subtype, streaming)
        except (EnhanceError, AudioError, OSError) as e:
            failures.append(f"{rel}: {e}")
    if failures:
        print(f"bwe-enhance: {len(failures)} of {len(files)} files failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return len(failures)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bwe-enhance",
        description="Bandwidth extension: narrowband speech in, 16 kHz wideband speech out.",
    )
    parser.add_argument("input", help="input audio file, folder, or - for raw 16-bit 8 kHz PCM on stdin (--streaming)")
    parser.add_argument("output", help="output file (its extension picks the container: .wav, .flac, .ogg, .mp3, "
                                       "...), folder (of .wav files), or - for raw 16-bit 16 kHz PCM on stdout "
                                       "(--streaming)")
    parser.add_argument("--model", metavar="DIR",
                        help="exported model folder (default: the bundled offline model, or with --streaming the "
                             "bundled streaming model)")
    parser.add_argument("--subtype", default="PCM_16",
                        help="output sample format, e.g. PCM_16 (default; .ogg and .mp3 use their codec), PCM_24, "
                             "FLOAT")
    parser.add_argument("--streaming", action="store_true",
                        help="run streaming.tflite frame by frame (16 ms) instead of the block model; without "
                             "--model, the bundled causal streaming model")
    parser.add_argument("--int8", action="store_true",
                        help="run the int8 models: block_int8.tflite for files where the export has one (bwe-export "
                             "writes it; the bundled models leave it out), else streaming_int8.tflite frame by frame")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="LiteRT threads (default: all cores; real-time streaming on a phone uses 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pipe = args.input == "-" or args.output == "-"
        if pipe and not (args.input == "-" and args.output == "-" and args.streaming):
            raise EnhanceError("stdin/stdout mode needs both '-' and --streaming: bwe-enhance --streaming - -")
        if args.threads < 1:
            raise EnhanceError(f"--threads must be at least 1, got {args.threads}")
        model = load_model(args.model, args.int8, args.threads, streaming=args.streaming)
        if pipe:
            enhance_pipe(model, sys.stdin.buffer, sys.stdout.buffer)
            return 0
        if os.path.isdir(args.input):
            if os.path.exists(args.output) and not os.path.isdir(args.output):
                raise EnhanceError(f"{args.output}: input is a folder, so the output must be a folder too")
            os.makedirs(args.output, exist_ok=True)
            return 1 if enhance_folder(model, args.input, args.output, args.subtype, args.streaming) else 0
        if os.path.isdir(args.output):
            suggestion = os.path.join(args.output, os.path.splitext(os.path.basename(args.input))[0] + ".wav")
            raise EnhanceError(f"{args.output}: is a folder; name the output file, e.g. {suggestion}")
        enhance_file(model, args.input, args.output, args.subtype, args.streaming)
        return 0
    except (EnhanceError, AudioError) as e:
        print(f"bwe-enhance: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"bwe-enhance: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

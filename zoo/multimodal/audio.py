"""Audio in any everyday form -> 16 kHz mono float32 waveforms, split into Whisper's 30 s windows.

    path | bytes | (rate, array) from gradio | array + sampling_rate
        --decode (soundfile)--> [frames, channels] --mean over channels--> [frames]
        --int to float, checks (empty, non-finite, rate, duration)--> --resample to 16 kHz--> waveform [N]
        --chunk_waveform--> 30 s chunks [<= 480000] (the last one shorter; nothing is dropped)

Decoding uses soundfile (torchaudio.load needs torchcodec, which does not work here) and resampling
torchaudio.functional.resample (band-limited sinc, its default Hann window of width 6). Any rate from
8 to 48 kHz is accepted. Bad input raises before any work: FileNotFoundError for a missing file,
ValueError naming the file/source and the problem for an unreadable file, no samples, NaN/inf samples,
a rate outside the range, or a clip longer than `max_seconds` (checked from the header, before the
samples are decoded, so an oversized upload is refused cheaply).

Array layout: 1-D arrays are mono; 2-D arrays are [frames, channels] as soundfile and gradio give
them, or [channels, frames] when the first axis is clearly the channel axis (at most 8 long and the
other axis longer); anything else is refused as ambiguous. Integer samples are scaled to [-1, 1]
(int16 / 32768, int32 / 2**31, uint8 centred on 128).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch

SAMPLING_RATE = 16_000  # Whisper's input rate
CHUNK_SECONDS = 30  # Whisper's window
CHUNK_SAMPLES = SAMPLING_RATE * CHUNK_SECONDS
MIN_SAMPLING_RATE, MAX_SAMPLING_RATE = 8_000, 48_000
DEFAULT_MAX_SECONDS = 600.0  # 10 minutes = 20 Whisper windows
MAX_CHANNELS = 8


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"audio file {str(source)!r}"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"audio bytes ({len(source):,} bytes)"
    return "audio array"


def _check_rate(rate, what: str) -> int:
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
        raise ValueError(f"{what}: sampling rate must be an integer in Hz, got {rate!r}")
    rate = int(rate)
    if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
        raise ValueError(f"{what}: sampling rate {rate} Hz is outside the supported "
                         f"{MIN_SAMPLING_RATE}-{MAX_SAMPLING_RATE} Hz")
    return rate


def _check_duration(frames: int, rate: int, max_seconds: float | None, what: str) -> None:
    if frames == 0:
        raise ValueError(f"{what} holds no samples (empty audio)")
    if max_seconds is not None and frames / rate > max_seconds:
        raise ValueError(f"{what} is {frames / rate:.1f} s long, more than the maximum of {max_seconds:g} s; refused")


def _decode(source, max_seconds: float | None, what: str) -> tuple[np.ndarray, int]:
    """soundfile decode of a path or bytes -> ([frames, channels] float32, rate); header checked first."""
    import soundfile as sf

    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"{what} does not exist")
        opener = lambda: sf.SoundFile(source)  # noqa: E731
    else:
        data = bytes(source)
        opener = lambda: sf.SoundFile(io.BytesIO(data))  # noqa: E731
    try:
        with opener() as f:
            rate = _check_rate(f.samplerate, what)
            if f.frames > 0 or f.seekable():  # a known length: refuse oversized clips before decoding
                _check_duration(f.frames, rate, max_seconds, what)
            samples = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:  # not audio soundfile can read
        raise ValueError(f"{what} is not audio that soundfile can read ({error})") from None
    return samples, rate


def _as_frames_by_channels(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 1:
        return array[:, None]
    if array.ndim == 2:
        frames, channels = array.shape
        if channels <= MAX_CHANNELS and (frames > MAX_CHANNELS or frames == 0):
            return array
        if frames <= MAX_CHANNELS < channels:
            return array.T  # [channels, frames] (torchaudio's layout)
    raise ValueError(f"{what}: expected [frames] or [frames, channels] (at most {MAX_CHANNELS} channels), "
                     f"got shape {tuple(array.shape)}")


def _to_float(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return (array.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(array.dtype, np.signedinteger):
        return array.astype(np.float32) / float(2 ** (8 * array.dtype.itemsize - 1))
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise ValueError(f"{what}: samples must be integers or floats, got dtype {array.dtype}")


def load_audio(audio, sampling_rate: int | None = None, *, max_seconds: float | None = DEFAULT_MAX_SECONDS,
               target_rate: int = SAMPLING_RATE) -> torch.Tensor:
    """Any accepted audio -> mono float32 waveform [N] at `target_rate` (16 kHz).

    `audio`: a path; the bytes of a file (wav, flac, ogg: what soundfile reads); a `(rate, array)`
    tuple as gradio's Audio component gives it; or a numpy array / torch tensor with `sampling_rate`.
    """
    what = _describe(audio)
    if isinstance(audio, tuple):
        if len(audio) != 2:
            raise ValueError(f"an audio tuple must be (sampling_rate, array) as gradio gives it, got {len(audio)} items")
        if sampling_rate is not None:
            raise ValueError("sampling_rate is given twice: in the (rate, array) tuple and as an argument")
        sampling_rate, audio = audio
        what = _describe(audio)
    if isinstance(audio, (str, os.PathLike, bytes, bytearray, memoryview)):
        if sampling_rate is not None:
            raise ValueError(f"{what}: sampling_rate is read from the file; do not pass it")
        samples, rate = _decode(audio, max_seconds, what)
    else:
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
        if not isinstance(audio, np.ndarray):
            raise ValueError(f"expected audio as a path, bytes, (rate, array) or array + sampling_rate, "
                             f"got {type(audio).__name__}")
        if sampling_rate is None:
            raise ValueError(f"{what}: pass sampling_rate with a raw array")
        rate = _check_rate(sampling_rate, what)
        samples = _as_frames_by_channels(audio, what)
        _check_duration(samples.shape[0], rate, max_seconds, what)
        samples = _to_float(samples, what)
    _check_duration(samples.shape[0], rate, max_seconds, what)  # also for streams without a known length
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise ValueError(f"{what} has {bad} non-finite (NaN or infinite) samples")
    mono = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32)))  # [N]
    if rate != target_rate:
        import torchaudio.functional as AF

        mono = AF.resample(mono, rate, target_rate)
    return mono


def chunk_waveform(waveform: torch.Tensor, chunk_samples: int = CHUNK_SAMPLES) -> list[torch.Tensor]:
    """[N] -> ceil(N / chunk_samples) consecutive chunks; the last is the remainder (never padded or dropped)."""
    if waveform.dim() != 1 or waveform.numel() == 0:
        raise ValueError(f"chunk_waveform expects a non-empty 1-D waveform, got shape {tuple(waveform.shape)}")
    return list(torch.split(waveform, chunk_samples))


def num_chunks(num_samples: int, chunk_samples: int = CHUNK_SAMPLES) -> int:
    return math.ceil(num_samples / chunk_samples)


def load_audio_chunks(audio, sampling_rate: int | None = None, *, max_seconds: float | None = DEFAULT_MAX_SECONDS,
                      chunk_seconds: float = CHUNK_SECONDS) -> list[torch.Tensor]:
    """load_audio, then chunk_waveform into `chunk_seconds` windows (16 kHz samples each)."""
    return chunk_waveform(load_audio(audio, sampling_rate, max_seconds=max_seconds),
                          int(round(chunk_seconds * SAMPLING_RATE)))

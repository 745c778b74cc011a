"""Audio files to float32 waveforms at a model's sample rate, decoded and resampled block by block.

soundfile (libsndfile 1.2) reads the formats in `AUDIO_SUFFIXES`; `soxr.ResampleStream` resamples each ~1 s block,
so peak memory is the output array plus one block, never the whole track at the input rate. The container formats
in `OTHER_SUFFIXES` go through `torchaudio.load`, which needs torchcodec and FFmpeg (decoded whole, then resampled).

Truncated files: libsndfile trims the frame count of PCM containers (WAV, AIFF, ...) to the bytes present, so those
return the audio that is there. Compressed formats raise `DecodeError`: a libsndfile error while decoding (FLAC
"lost sync"), an Ogg stream whose log says it ended without its end-of-stream page, or fewer frames decoded than
the header announces (MP3), beyond a 1% tolerance for frame counts that are estimates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {
        ".wav", ".wave", ".bwf", ".w64", ".rf64", ".flac", ".ogg", ".oga", ".opus", ".mp3",
        ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".voc", ".sd2", ".paf", ".svx", ".8svx", ".avr", ".htk",
    }
)  # fmt: skip
OTHER_SUFFIXES: frozenset[str] = frozenset({".m4a", ".aac", ".mp4", ".wma", ".webm", ".mka"})

_QUALITY = "HQ"
_SHORTFALL_TOLERANCE = 0.01  # decoded frames may fall this far below the header's count (MP3 counts are estimates)
_OGG_TRUNCATION_MARKS = ("ended unexpectedly", "lacks an end-of-stream")


class DecodeError(Exception):
    """A file that cannot give audio; str(error) is the reason written to failures.tsv."""


def read_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int,
    mono: bool = True,
    offset: float = 0.0,
    max_seconds: float | None = None,
    silence_threshold: float = 1e-4,
) -> np.ndarray:
    """float32 waveform at `sample_rate`: shape (samples,) when mono (channel mean), else (channels, samples).

    `offset` seconds are skipped and at most `max_seconds` of input are read. Raises `DecodeError` for a file that
    gives no usable audio (empty, unreadable, truncated, silent below `silence_threshold`, non-finite samples).
    """
    _check_arguments(sample_rate, offset, max_seconds)
    path = Path(path)
    suffix = path.suffix.lower()
    _check_file(path)
    if suffix in OTHER_SUFFIXES:
        wave = _read_with_torchaudio(path, sample_rate, mono, offset, max_seconds)
    else:
        wave = _read_with_soundfile(path, sample_rate, mono, offset, max_seconds)
    _check_signal(wave, silence_threshold)
    return wave


@dataclass(frozen=True)
class AudioLoader:
    """Decodes one file in a worker process: a 1-D float32 array (mono), else (channels, samples). It needs no torch,
    so a decoding process (a local worker, a Ray task) does not import it; `audio_common.as_tensors` turns the arrays
    into tensors where the model runs."""

    sample_rate: int
    mono: bool = True
    offset: float = 0.0
    max_seconds: float | None = None

    def __call__(self, path: Any) -> np.ndarray:
        wave = read_audio(path, sample_rate=self.sample_rate, mono=self.mono, offset=self.offset,
                          max_seconds=self.max_seconds)
        return np.ascontiguousarray(wave, dtype=np.float32)


def split_windows(wave: Any, window: int, hop: int | None = None) -> list[Any]:
    """Views of the last axis (numpy arrays or torch tensors, no copy): windows of `window` samples every `hop`
    (default: window) until one reaches the end; the last keeps its own (shorter) length; a wave shorter than
    one window is one window."""
    hop = window if hop is None else hop
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got window={window}, hop={hop}")
    starts = [0]
    while starts[-1] + window < wave.shape[-1]:
        starts.append(starts[-1] + hop)
    return [wave[..., start : start + window] for start in starts]


def _check_arguments(sample_rate: int, offset: float, max_seconds: float | None) -> None:
    """Reject arguments that are programming errors, not file problems."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")


def _check_file(path: Path) -> None:
    """Raise for a missing, non-regular or empty file."""
    if not path.exists():
        raise DecodeError("file not found")
    if not path.is_file():
        raise DecodeError("not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError("empty file")


def _check_signal(wave: np.ndarray, silence_threshold: float) -> None:
    """Raise for a waveform with no samples or one whose peak is below the silence threshold."""
    if wave.shape[-1] == 0:
        raise DecodeError("no audio frames")
    peak = max(float(wave.max()), -float(wave.min()))  # no full-size temporary, unlike np.abs
    if peak < silence_threshold:
        raise DecodeError(f"silent (peak {peak:.3g} below {silence_threshold:g})")


def _check_finite(block: np.ndarray) -> None:
    """Raise for NaN or infinite samples (float files), which would poison the resampler and the model."""
    if not np.isfinite(block).all():
        raise DecodeError("non-finite samples (NaN or inf)")


def _libsndfile_reason(error: Exception) -> str:
    """libsndfile's own words for an error, without soundfile's "Error opening '<path>'" prefix."""
    return str(getattr(error, "error_string", None) or error)


# --- soundfile path -------------------------------------------------------------------------------------------------


def _read_with_soundfile(
    path: Path, sample_rate: int, mono: bool, offset: float, max_seconds: float | None
) -> np.ndarray:
    """Decode with libsndfile and resample block by block; unknown suffixes fall back to torchaudio."""
    import soundfile as sf

    suffix = path.suffix.lower()
    try:
        handle = sf.SoundFile(str(path))
    except (RuntimeError, TypeError, ValueError) as error:  # LibsndfileError is a RuntimeError
        if suffix in AUDIO_SUFFIXES:
            raise DecodeError(f"cannot decode {suffix or 'file'}: {_libsndfile_reason(error)}") from error
        return _read_with_torchaudio(path, sample_rate, mono, offset, max_seconds, why=_libsndfile_reason(error))
    with handle:
        try:
            return _decode_stream(handle, sample_rate, mono, offset, max_seconds)
        except RuntimeError as error:
            raise DecodeError(f"cannot decode {suffix or 'file'}: {_libsndfile_reason(error)}") from error


def _decode_stream(handle, sample_rate: int, mono: bool, offset: float, max_seconds: float | None) -> np.ndarray:
    """Read an open SoundFile from `offset` for at most `max_seconds`, resampling each block as it comes."""
    in_rate = handle.samplerate
    _check_ogg_log(handle)
    if handle.frames <= 0:
        raise DecodeError("no audio frames")
    start = round(offset * in_rate)
    if start >= handle.frames:
        raise DecodeError(f"offset beyond the end ({offset:g} s, file has {handle.frames / in_rate:.3f} s)")
    _skip_to(handle, start)
    limit = handle.frames - start if max_seconds is None else min(handle.frames - start, round(max_seconds * in_rate))
    channels = 1 if mono else handle.channels
    resampler = _make_resampler(in_rate, sample_rate, channels)
    out = _Output(None if mono else channels, _expected_length(limit, in_rate, sample_rate))
    read = 0
    for block in _blocks(handle, limit, block_frames=max(1024, in_rate)):
        read += len(block)
        out.append(_resample(resampler, _mix(block, mono), last=False))
    out.append(_resample(resampler, np.zeros((0,) if mono else (0, channels), np.float32), last=True))
    _check_shortfall(read, limit)
    return out.result()


def _check_ogg_log(handle) -> None:
    """Raise when libsndfile's log says an Ogg stream stops before its end-of-stream page (a truncated file)."""
    if handle.format != "OGG":
        return
    marks = [line.strip() for line in handle.extra_info.splitlines() if any(m in line for m in _OGG_TRUNCATION_MARKS)]
    if marks:
        raise DecodeError(f"truncated Ogg stream (libsndfile: {' '.join(marks)})")


def _skip_to(handle, start: int) -> None:
    """Seek to frame `start`; read and discard when the format cannot seek."""
    if start == 0:
        return
    try:
        handle.seek(start)
        return
    except (RuntimeError, ValueError):
        pass
    for _ in _blocks(handle, start, block_frames=65536):
        pass


def _blocks(handle, limit: int, block_frames: int):
    """Yield (frames, channels) float32 blocks until `limit` frames are read or the stream ends early."""
    buffer = np.empty((min(block_frames, max(limit, 1)), handle.channels), np.float32)
    remaining = limit
    while remaining > 0:
        want = min(remaining, len(buffer))
        block = handle.read(want, dtype="float32", always_2d=True, out=buffer[:want])
        if len(block) == 0:
            return
        _check_finite(block)
        remaining -= len(block)
        yield block


def _mix(block: np.ndarray, mono: bool) -> np.ndarray:
    """Channel mean as a contiguous 1-D block when `mono`, else the (frames, channels) block itself."""
    if not mono:
        return block
    return np.ascontiguousarray(block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32))


def _make_resampler(in_rate: int, out_rate: int, channels: int):
    """A soxr stream, or None when the rates are equal."""
    if in_rate == out_rate:
        return None
    import soxr

    return soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality=_QUALITY)


def _resample(resampler, block: np.ndarray, last: bool) -> np.ndarray:
    """Resample one block (a copy when there is no resampler, since the read buffer is reused)."""
    if resampler is None:
        return block.copy()
    return resampler.resample_chunk(block, last=last)


def _expected_length(frames: int, in_rate: int, out_rate: int) -> int:
    """Output samples soxr gives for `frames` input frames (its rounding of frames * out / in)."""
    return round(frames * out_rate / in_rate)


def _check_shortfall(read: int, announced: int) -> None:
    """Raise when the stream ended well before the frame count the header announced (a truncated file)."""
    if announced - read > _SHORTFALL_TOLERANCE * announced:
        raise DecodeError(f"truncated: header announces {announced} frames, only {read} decoded")


class _Output:
    """Output samples written into one preallocated array; grows only when the length estimate was short."""

    def __init__(self, channels: int | None, capacity: int) -> None:
        self._lead: tuple[int, ...] = () if channels is None else (channels,)
        self._buffer = np.empty((*self._lead, max(capacity, 0)), np.float32)
        self._length = 0

    def append(self, chunk: np.ndarray) -> None:
        """Add a (samples,) or (samples, channels) chunk."""
        end = self._length + len(chunk)
        if end > self._buffer.shape[-1]:
            self._grow(end)
        self._buffer[..., self._length : end] = chunk.T
        self._length = end

    def _grow(self, needed: int) -> None:
        bigger = np.empty((*self._lead, max(needed, self._buffer.shape[-1] * 3 // 2)), np.float32)
        bigger[..., : self._length] = self._buffer[..., : self._length]
        self._buffer = bigger

    def result(self) -> np.ndarray:
        """The samples written, contiguous; copies only when the buffer was not filled exactly."""
        if self._length == self._buffer.shape[-1]:
            return self._buffer
        return self._buffer[..., : self._length].copy()


# --- torchaudio / torchcodec path -----------------------------------------------------------------------------------


def _read_with_torchaudio(
    path: Path, sample_rate: int, mono: bool, offset: float, max_seconds: float | None, why: str = ""
) -> np.ndarray:
    """Decode a container soundfile cannot read with torchaudio (torchcodec + FFmpeg), then slice and resample."""
    wave, in_rate = _torchaudio_load(path, why)
    start = round(offset * in_rate)
    if start >= wave.shape[-1] > 0:
        raise DecodeError(f"offset beyond the end ({offset:g} s, file has {wave.shape[-1] / in_rate:.3f} s)")
    stop = None if max_seconds is None else start + round(max_seconds * in_rate)
    wave = wave[:, start:stop]
    _check_finite(wave)
    if mono:
        wave = wave.mean(axis=0, dtype=np.float32)
    return _resample_whole(wave, in_rate, sample_rate)


def _torchaudio_load(path: Path, why: str) -> tuple[np.ndarray, int]:
    """(channels, frames) float32 and its rate from torchaudio.load; DecodeError naming what is missing."""
    suffix = path.suffix.lower() or "file"
    needs = f"cannot decode {suffix}: needs torchcodec and FFmpeg (pip install torchcodec; apt install ffmpeg)"
    detail = f"; libsndfile: {why}" if why else ""
    try:
        import torchaudio

        tensor, in_rate = torchaudio.load(str(path))
    except ImportError as error:
        raise DecodeError(f"{needs}{detail}") from error
    except Exception as error:  # torchcodec raises RuntimeError/ValueError for missing FFmpeg and for bad files alike
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if any(word in message.lower() for word in ("torchcodec", "ffmpeg", "libav")):
            raise DecodeError(f"{needs} ({message}){detail}") from error
        raise DecodeError(f"cannot decode {suffix}: {message}{detail}") from error
    return np.ascontiguousarray(tensor.numpy(), dtype=np.float32), int(in_rate)


def _resample_whole(wave: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a (samples,) or (channels, samples) array in one call; contiguous float32."""
    if in_rate == out_rate or wave.shape[-1] == 0:
        return np.ascontiguousarray(wave, dtype=np.float32)
    import soxr

    resampled = soxr.resample(np.ascontiguousarray(wave.T), in_rate, out_rate, _QUALITY)
    return np.ascontiguousarray(resampled.T, dtype=np.float32)

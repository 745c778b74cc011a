"""Audio decoding: formats, streaming resampling against whole-signal soxr, bad files, windows.

Every file is written into tmp_path at test time with soundfile/numpy; nothing touches the network.
"""

from __future__ import annotations

import multiprocessing
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
soxr = pytest.importorskip("soxr")

from ducho.media.audio import (  # noqa: E402
    AUDIO_SUFFIXES,
    OTHER_SUFFIXES,
    DecodeError,
    read_audio,
    split_windows,
)

EDGE = 200  # output samples ignored at each end when comparing with whole-signal resampling


def signal(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A deterministic non-silent test signal: tones plus a little noise, (frames,) or (frames, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(rate * seconds)) / rate
    tones = [0.4 * np.sin(np.pi * (440 + 220 * c) * t) + 0.2 * np.sin(3000 * np.pi * t + c) for c in range(channels)]
    data = np.ascontiguousarray((np.stack(tones) + 0.01 * rng.standard_normal((channels, len(t)))).T, dtype=np.float32)
    return data[:, 0].copy() if channels == 1 else data


def write(path: Path, data: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> Path:
    sf.write(str(path), data, rate, format=fmt, subtype=subtype)
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * fraction)])
    return path


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


# --- formats ----------------------------------------------------------------------------------------------------------

SUFFIX_FORMATS = {
    ".wav": ("WAV", "PCM_16"), ".wave": ("WAV", "PCM_16"), ".bwf": ("WAV", "PCM_16"), ".w64": ("W64", "PCM_16"),
    ".rf64": ("RF64", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"), ".oga": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"), ".mp3": ("MP3", "MPEG_LAYER_III"), ".aiff": ("AIFF", "PCM_16"),
    ".aif": ("AIFF", "PCM_16"), ".aifc": ("AIFF", "PCM_16"), ".au": ("AU", "PCM_16"), ".snd": ("AU", "PCM_16"),
    ".caf": ("CAF", "PCM_16"), ".voc": ("VOC", "PCM_16"), ".sd2": ("SD2", "PCM_16"), ".paf": ("PAF", "PCM_16"),
    ".svx": ("SVX", "PCM_16"), ".8svx": ("SVX", "PCM_16"), ".avr": ("AVR", "PCM_16"), ".htk": ("HTK", "PCM_16"),
}  # fmt: skip
LOSSY = {".ogg", ".oga", ".opus", ".mp3"}


def test_suffix_sets_are_disjoint_lowercase_and_all_covered_below():
    assert set(SUFFIX_FORMATS) == AUDIO_SUFFIXES
    assert not AUDIO_SUFFIXES & OTHER_SUFFIXES
    assert {".m4a", ".aac", ".mp4", ".wma", ".webm", ".mka"} <= OTHER_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in AUDIO_SUFFIXES | OTHER_SUFFIXES)


@pytest.mark.parametrize("suffix", sorted(SUFFIX_FORMATS))
def test_every_audio_suffix_is_read_by_soundfile(tmp_path, suffix):
    fmt, subtype = SUFFIX_FORMATS[suffix]
    data = signal(16000, 1.0)
    path = write(tmp_path / f"clip{suffix}", data, 16000, fmt, subtype)
    wave = read_audio(path, sample_rate=16000)
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.flags.c_contiguous
    if suffix in LOSSY:
        assert abs(len(wave) - len(data)) <= 0.05 * len(data)
        assert correlation(wave, data) > 0.9
    else:
        assert len(wave) == len(data)
        np.testing.assert_allclose(wave, data, atol=1e-3)


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"),
    [
        (".wav", "WAV", "PCM_16"),
        (".wav", "WAV", "FLOAT"),
        (".flac", "FLAC", "PCM_16"),
        (".ogg", "OGG", "VORBIS"),
        (".mp3", "MP3", "MPEG_LAYER_III"),
        (".opus", "OGG", "OPUS"),  # opus only takes 8/12/16/24/48 kHz
    ],
)
def test_formats_resampled_from_48k_match_whole_signal_resampling(tmp_path, suffix, fmt, subtype):
    data = signal(48000, 2.0)
    path = write(tmp_path / f"clip{suffix}", data, 48000, fmt, subtype)
    wave = read_audio(path, sample_rate=16000)
    expected = soxr.resample(data, 48000, 16000, "HQ")
    assert wave.dtype == np.float32 and wave.flags.c_contiguous
    if suffix in LOSSY:
        assert abs(len(wave) - len(expected)) <= 0.05 * len(expected)
        assert correlation(wave[EDGE:-EDGE], expected[EDGE:-EDGE]) > 0.9
    else:
        assert len(wave) == len(expected)
        assert np.abs(wave - expected)[EDGE:-EDGE].max() < 1e-3


# --- streaming resampling -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), [(44100, 16000), (22050, 16000), (16000, 44100), (48000, 32000)])
def test_streamed_result_equals_whole_signal_soxr(tmp_path, in_rate, out_rate):
    data = signal(in_rate, 3.3)  # several blocks plus a partial one
    path = write(tmp_path / "clip.wav", data, in_rate, "WAV", "FLOAT")
    wave = read_audio(path, sample_rate=out_rate)
    expected = soxr.resample(data, in_rate, out_rate, "HQ")
    assert wave.shape == expected.shape
    assert np.abs(wave - expected)[EDGE:-EDGE].max() < 1e-3


def test_stereo_44k_mono_equals_mono_mix_resampled_to_16k(tmp_path):
    data = signal(44100, 2.5, channels=2)
    path = write(tmp_path / "stereo.wav", data, 44100, "WAV", "FLOAT")
    wave = read_audio(path, sample_rate=16000, mono=True)
    converted = soxr.resample(data.mean(axis=1), 44100, 16000, "HQ")
    mixed = write(tmp_path / "mixed16k.wav", converted, 16000, "WAV", "FLOAT")
    expected = read_audio(mixed, sample_rate=16000)
    assert wave.shape == expected.shape and wave.ndim == 1
    assert np.abs(wave - expected)[EDGE:-EDGE].max() < 1e-3


def test_stereo_kept_as_channels_first(tmp_path):
    data = signal(44100, 1.7, channels=2)
    path = write(tmp_path / "stereo.wav", data, 44100, "WAV", "FLOAT")
    wave = read_audio(path, sample_rate=16000, mono=False)
    expected = soxr.resample(data, 44100, 16000, "HQ").T
    assert wave.shape == expected.shape and wave.shape[0] == 2
    assert wave.dtype == np.float32 and wave.flags.c_contiguous
    assert np.abs(wave - expected)[:, EDGE:-EDGE].max() < 1e-3


def test_mono_file_with_mono_false_has_one_channel(tmp_path):
    path = write(tmp_path / "mono.wav", signal(16000, 0.5), 16000)
    assert read_audio(path, sample_rate=16000, mono=False).shape == (1, 8000)


def test_same_rate_is_not_resampled(tmp_path):
    data = signal(16000, 2.2, channels=2)
    path = write(tmp_path / "clip.wav", data, 16000, "WAV", "FLOAT")
    np.testing.assert_array_equal(read_audio(path, sample_rate=16000, mono=False), data.T)
    np.testing.assert_array_equal(read_audio(path, sample_rate=16000), data.mean(axis=1, dtype=np.float32))


def test_offset_and_max_seconds_select_the_input_span(tmp_path):
    data = signal(16000, 3.0)
    path = write(tmp_path / "clip.wav", data, 16000, "WAV", "FLOAT")
    wave = read_audio(path, sample_rate=16000, offset=1.0, max_seconds=0.5)
    np.testing.assert_array_equal(wave, data[16000:24000])
    tail = read_audio(path, sample_rate=16000, offset=2.5, max_seconds=10.0)
    np.testing.assert_array_equal(tail, data[40000:])


def test_offset_with_resampling_matches_resampling_the_span(tmp_path):
    data = signal(44100, 3.0)
    path = write(tmp_path / "clip.wav", data, 44100, "WAV", "FLOAT")
    wave = read_audio(path, sample_rate=16000, offset=0.5, max_seconds=2.0)
    expected = soxr.resample(data[22050 : 22050 + 88200], 44100, 16000, "HQ")
    assert wave.shape == expected.shape == (32000,)
    assert np.abs(wave - expected)[EDGE:-EDGE].max() < 1e-3


@pytest.mark.parametrize(("suffix", "fmt", "subtype"), [(".ogg", "OGG", "VORBIS"), (".mp3", "MP3", "MPEG_LAYER_III")])
def test_offset_seeks_in_compressed_formats(tmp_path, suffix, fmt, subtype):
    data = signal(48000, 3.0)
    path = write(tmp_path / f"clip{suffix}", data, 48000, fmt, subtype)
    whole = read_audio(path, sample_rate=16000)
    part = read_audio(path, sample_rate=16000, offset=1.0, max_seconds=1.0)
    assert abs(len(part) - 16000) <= 1
    assert correlation(part[EDGE:-EDGE], whole[16000 + EDGE : 32000 - EDGE]) > 0.9


def test_ten_minute_stereo_44k_peak_memory_is_output_plus_a_block(tmp_path):
    path = tmp_path / "long.wav"
    second = (signal(44100, 1.0, channels=2) * 32767).astype(np.int16)
    with sf.SoundFile(str(path), "w", 44100, 2, "PCM_16", format="WAV") as handle:
        for _ in range(600):
            handle.write(second)
    tracemalloc.start()
    try:
        wave = read_audio(path, sample_rate=16000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert wave.shape == (600 * 16000,)
    whole_input = 600 * 44100 * 2 * 4  # the decoded track at the input rate, float32
    assert wave.nbytes <= peak < wave.nbytes + 16 * 2**20 < whole_input


def _read_in_worker(path: str) -> np.ndarray:
    return read_audio(path, sample_rate=16000)


def test_works_in_a_spawned_worker_process(tmp_path):
    path = write(tmp_path / "clip.wav", signal(44100, 1.0), 44100)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        (remote,) = pool.map(_read_in_worker, [str(path)])
    np.testing.assert_array_equal(remote, read_audio(path, sample_rate=16000))


# --- bad files --------------------------------------------------------------------------------------------------------


def decode_error(path: Path, **kwargs) -> str:
    with pytest.raises(DecodeError) as caught:
        read_audio(path, **{"sample_rate": 16000, **kwargs})
    return str(caught.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert decode_error(path) == "empty file"


def test_missing_file(tmp_path):
    assert decode_error(tmp_path / "nope.wav") == "file not found"


def test_wav_with_zero_frames(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    assert path.stat().st_size > 0
    assert decode_error(path) == "no audio frames"


def test_silent_file(tmp_path):
    path = write(tmp_path / "silent.wav", np.full(16000, 1e-6, np.float32), 16000, "WAV", "FLOAT")
    assert decode_error(path).startswith("silent")
    assert read_audio(path, sample_rate=16000, silence_threshold=0.0).shape == (16000,)


def test_quiet_but_audible_file_is_not_silent(tmp_path):
    data = signal(16000, 1.0) * 0.01
    path = write(tmp_path / "quiet.wav", data, 16000, "WAV", "FLOAT")
    np.testing.assert_array_equal(read_audio(path, sample_rate=16000), data)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    data = signal(16000, 1.0)
    data[5000] = bad
    path = write(tmp_path / "bad.wav", data, 16000, "WAV", "FLOAT")
    assert decode_error(path).startswith("non-finite samples")
    assert decode_error(path, sample_rate=8000).startswith("non-finite samples")


def test_corrupt_bytes_with_wav_suffix(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"this is not a RIFF header at all" + bytes(range(256)) * 8)
    assert decode_error(path) == "cannot decode .wav: Format not recognised."


def test_random_bytes_with_wav_suffix(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert decode_error(path).startswith("cannot decode .wav: ")


def test_wav_with_mangled_format_chunk(tmp_path):
    path = write(tmp_path / "mangled.wav", signal(16000, 0.5), 16000)
    content = bytearray(path.read_bytes())
    content[20:36] = b"\xff" * 16  # the fmt chunk: format tag, channels, rate, block align, bits
    path.write_bytes(bytes(content))
    assert decode_error(path).startswith("cannot decode .wav: ")


def test_unknown_suffix_with_garbage_names_suffix_and_both_decoders(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # as on a machine without torchcodec
    path = tmp_path / "clip.xyz"
    path.write_bytes(b"not audio at all" * 64)
    message = decode_error(path)
    assert ".xyz" in message and "torchcodec" in message and "libsndfile" in message


def test_unknown_suffix_with_audio_content_is_read(tmp_path):
    data = signal(16000, 0.5)
    path = tmp_path / "clip.dat"
    sf.write(str(path), data, 16000, format="WAV", subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(path, sample_rate=16000), data)


def test_truncated_flac_raises_with_libsndfile_reason(tmp_path):
    path = truncate(write(tmp_path / "clip.flac", signal(48000, 3.0), 48000, "FLAC", "PCM_16"))
    message = decode_error(path)
    assert message.startswith("cannot decode .flac:") and "lost sync" in message


@pytest.mark.parametrize(("suffix", "subtype"), [(".ogg", "VORBIS"), (".opus", "OPUS")])
def test_truncated_ogg_raises_with_libsndfile_reason(tmp_path, suffix, subtype):
    path = truncate(write(tmp_path / f"clip{suffix}", signal(48000, 3.0), 48000, "OGG", subtype))
    message = decode_error(path)
    assert message.startswith("truncated Ogg stream (libsndfile:") and "end-of-stream" in message.lower()


def test_truncated_mp3_raises_on_frames_short_of_the_header(tmp_path):
    path = truncate(write(tmp_path / "clip.mp3", signal(48000, 3.0), 48000, "MP3", "MPEG_LAYER_III"))
    assert decode_error(path).startswith("truncated: header announces 144000 frames")


def test_truncated_wav_returns_the_frames_present(tmp_path):
    data = signal(16000, 2.0)
    path = truncate(write(tmp_path / "clip.wav", data, 16000, "WAV", "FLOAT"))
    wave = read_audio(path, sample_rate=16000)
    assert 15000 < len(wave) < 16100
    np.testing.assert_array_equal(wave, data[: len(wave)])


def test_offset_beyond_the_end(tmp_path):
    path = write(tmp_path / "clip.wav", signal(16000, 1.0), 16000)
    assert decode_error(path, offset=1.0).startswith("offset beyond the end")
    assert decode_error(path, offset=5.0, sample_rate=8000).startswith("offset beyond the end")


@pytest.mark.parametrize("kwargs", [{"sample_rate": 0}, {"offset": -1.0}, {"max_seconds": 0.0}])
def test_bad_arguments_are_value_errors(tmp_path, kwargs):
    path = write(tmp_path / "clip.wav", signal(16000, 0.5), 16000)
    with pytest.raises(ValueError):
        read_audio(path, **{"sample_rate": 16000, **kwargs})


# --- other codecs through torchaudio ---------------------------------------------------------------------------------


def test_m4a_without_torchcodec_names_suffix_and_what_is_needed(tmp_path, monkeypatch):
    pytest.importorskip("torchaudio")
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import fails even where torchcodec is installed
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 256)
    message = decode_error(path)
    assert message.startswith("cannot decode .m4a: needs torchcodec and FFmpeg")
    assert "pip install torchcodec" in message and "ffmpeg" in message


def test_m4a_with_missing_ffmpeg_libraries_says_what_is_needed(tmp_path, monkeypatch):
    torchaudio = pytest.importorskip("torchaudio")

    def load(*args, **kwargs):
        raise RuntimeError("Could not load libtorchcodec. Likely causes: FFmpeg is not properly installed.")

    monkeypatch.setattr(torchaudio, "load", load)
    path = tmp_path / "clip.webm"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 64)
    message = decode_error(path)
    assert message.startswith("cannot decode .webm: needs torchcodec and FFmpeg") and "Could not load" in message


def test_other_codec_decoded_by_torchaudio_is_sliced_mixed_and_resampled(tmp_path, monkeypatch):
    torchaudio = pytest.importorskip("torchaudio")
    torch = pytest.importorskip("torch")
    data = signal(44100, 3.0, channels=2)
    monkeypatch.setattr(torchaudio, "load", lambda *args, **kwargs: (torch.from_numpy(data.T.copy()), 44100))
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"fake")
    wave = read_audio(path, sample_rate=16000, offset=0.5, max_seconds=2.0)
    expected = soxr.resample(data[22050 : 22050 + 88200].mean(axis=1), 44100, 16000, "HQ")
    assert wave.shape == expected.shape and wave.dtype == np.float32 and wave.flags.c_contiguous
    assert np.abs(wave - expected)[EDGE:-EDGE].max() < 1e-3
    stereo = read_audio(path, sample_rate=16000, mono=False)
    assert stereo.shape == (2, 48000) and stereo.flags.c_contiguous
    assert decode_error(path, offset=4.0).startswith("offset beyond the end")


# --- windows ----------------------------------------------------------------------------------------------------------


def test_split_exact():
    windows = split_windows(np.arange(12, dtype=np.float32), 4)
    assert [w.tolist() for w in windows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_split_keeps_shorter_remainder():
    windows = split_windows(np.arange(10, dtype=np.float32), 4)
    assert [len(w) for w in windows] == [4, 4, 2]
    assert windows[-1].tolist() == [8, 9]


def test_split_with_overlapping_hop_stops_once_the_end_is_covered():
    windows = split_windows(np.arange(10, dtype=np.float32), 4, hop=2)
    assert [w.tolist() for w in windows] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    odd = split_windows(np.arange(11, dtype=np.float32), 4, hop=3)
    assert [w.tolist() for w in odd] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10]]


def test_split_short_wave_is_one_window():
    wave = np.arange(3, dtype=np.float32)
    (only,) = split_windows(wave, 4)
    np.testing.assert_array_equal(only, wave)


def test_split_channels_first():
    wave = np.arange(20, dtype=np.float32).reshape(2, 10)
    windows = split_windows(wave, 4)
    assert [w.shape for w in windows] == [(2, 4), (2, 4), (2, 2)]
    np.testing.assert_array_equal(windows[1], wave[:, 4:8])
    assert all(np.shares_memory(w, wave) for w in windows)  # views: a long track is never copied per window


@pytest.mark.parametrize(("window", "hop"), [(0, None), (4, 0), (-1, 2)])
def test_split_rejects_non_positive_sizes(window, hop):
    with pytest.raises(ValueError):
        split_windows(np.zeros(8, np.float32), window, hop)

"""Audio through whole runs: reference configs, interactions from a mapping, bad files reported, resume."""

# ruff: noqa: E501  (the configs are quoted verbatim)
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from conftest import write_tsv
from ducho import run

# 1.0, demo 2 (music): Hybrid Demucs through torchaudio on a folder of songs; the layer is a 1.0 index
CONFIG_1_0 = """\
dataset_path: ./local/data/demo2
gpu list: -1

audio:
    items:
        input_path: songs
        output_path: audio_embeddings
        model: [
            { name: HDEMUCS_HIGH_MUSDB, output_layers: 4, framework: torchaudio },
        ]
"""

CONFIG_WAV2VEC2 = """\
dataset_path: ./local/data/speech
audio:
    items:
        input_path: clips
        output_path: audio_embeddings
        model: [
            { model_name: WAV2VEC2_BASE, output_layers: [7, last_hidden_state], backend: torch, batch_size: 2 },
        ]
"""


def tone(seconds: float, rate: int, freq: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(int(freq)).normal(size=t.size)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def ducho(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ducho", *args], cwd=root, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TORCH_HOME": str(root / "th")})


def test_reference_1_0_demo2_hybrid_demucs(tmp_path: Path) -> None:
    songs = tmp_path / "local" / "data" / "demo2" / "songs"
    songs.mkdir(parents=True)
    sf.write(songs / "rock.flac", tone(1.5, 44100, 220, channels=2), 44100)
    sf.write(songs / "jazz.ogg", tone(1.0, 22050, 330), 22050)
    (tmp_path / "config.yml").write_text(CONFIG_1_0)
    missing = ducho(tmp_path, "--config=config.yml")
    assert missing.returncode == 2 and "weights: none" in missing.stderr  # offline: no bundle weights to load
    done = ducho(tmp_path, "--config=config.yml", "--audio.items.model.0.weights=none")
    assert done.returncode == 0, done.stderr
    folder = songs.parent / "audio_embeddings" / "torch" / "HDEMUCS_HIGH_MUSDB" / "4"
    arrays = {p.stem: np.load(p) for p in folder.glob("*.npy")}
    assert sorted(arrays) == ["jazz", "rock"]
    assert arrays["rock"].ndim == 1 and arrays["rock"].shape == arrays["jazz"].shape
    assert "freq_encoder.4" in (folder / "manifest.json").read_text()


def test_wav2vec2_base_config_matches_torchaudio(tmp_path: Path) -> None:
    import torchaudio

    clips = tmp_path / "local" / "data" / "speech" / "clips"
    clips.mkdir(parents=True)
    sf.write(clips / "a.wav", tone(1.2, 16000, 180), 16000)
    sf.write(clips / "b.wav", tone(0.7, 16000, 260), 16000)
    (tmp_path / "config.yml").write_text(CONFIG_WAV2VEC2)
    done = ducho(tmp_path, "run", "config.yml", "audio.items.model.0.weights=none")
    assert done.returncode == 0, done.stderr
    out = clips.parent / "audio_embeddings" / "torch" / "WAV2VEC2_BASE"
    torch.manual_seed(0)
    bundle = torchaudio.pipelines.WAV2VEC2_BASE
    from torchaudio.pipelines._wav2vec2 import utils

    model = utils._get_model(bundle._model_type, bundle._params).eval()
    wave = torch.from_numpy(sf.read(clips / "b.wav", dtype="float32")[0])[None]
    with torch.inference_mode():
        layers, _ = model.extract_features(wave)
    layer7 = np.load(out / "7" / "b.npy")
    assert layer7.shape == (768,)
    assert np.abs(layer7 - layers[7].mean(dim=1)[0].numpy()).max() < 1e-4


def test_interactions_mapping_bad_files_and_resume(tmp_path: Path) -> None:
    clips = tmp_path / "voice"
    clips.mkdir()
    sf.write(clips / "m1.wav", tone(1.0, 16000, 200), 16000)
    sf.write(clips / "m2.flac", tone(0.8, 48000, 300, channels=2), 48000)
    sf.write(clips / "silent.wav", np.zeros(16000), 16000)
    (clips / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (clips / "empty.ogg").write_bytes(b"")
    write_tsv(tmp_path / "voice.tsv", ["file", "user", "item"],
              [["m1.wav", "u1", "i1"], ["m2.flac", "u2", "i1"], ["silent.wav", "u3", "i2"],
               ["broken.wav", "u4", "i2"], ["empty.ogg", "u5", "i3"]])
    config = {"dataset_path": str(tmp_path), "device": "cpu", "workers": 1, "audio": {"interactions": {
        "input_path": "voice", "output_path": "out", "mapping_path": "voice.tsv",
        "model": [{"model_name": "crepe_tiny", "batch_size": 2}]}}}
    result = run(config, progress=False)
    folder = tmp_path / "out" / "torch" / "crepe_tiny" / "embedding"
    assert sorted(p.name for p in folder.glob("*.npy")) == ["u1__i1.npy", "u2__i1.npy"]
    reasons = {s.label: s.reason for s in result.jobs[0].skipped}
    assert "silent" in reasons["u3__i2"] and "empty file" in reasons["u5__i3"] and "u4__i2" in reasons
    before = {p.name: p.read_bytes() for p in folder.glob("*.npy")}
    again = run(config, progress=False)
    assert again.jobs[0].extracted == 0  # complete outputs of the same input: nothing recomputed
    assert {p.name: p.read_bytes() for p in folder.glob("*.npy")} == before


def test_layers_command_for_audio() -> None:
    done = subprocess.run([sys.executable, "-m", "ducho", "layers", "crepe_tiny", "--modality", "audio"],
                          capture_output=True, text=True, check=True)
    assert "embedding" in done.stdout and "crepe_tiny [torch]" in done.stdout

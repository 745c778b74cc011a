"""Audio backends against direct torchaudio / transformers / torchcrepe / resemblyzer calls (tiny models, offline)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import assert_batch_close
from ducho.backends.hf_audio import TransformersAudio
from ducho.backends.torch_audio import TorchAudio, _Wav2Vec2
from ducho.config.schema import AudioModelSpec
from ducho.errors import ModelNotFoundError
from ducho.media.audio import AudioLoader

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RATE = 16000
TINY_PARAMS = {
    "extractor_mode": "group_norm", "extractor_conv_layer_config": [(16, 10, 5), (16, 3, 2)],
    "extractor_conv_bias": False, "encoder_embed_dim": 32, "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 16, "encoder_pos_conv_groups": 4, "encoder_num_layers": 3, "encoder_num_heads": 2,
    "encoder_attention_dropout": 0.0, "encoder_ff_interm_features": 37, "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.0, "encoder_layer_norm_first": False, "encoder_layer_drop": 0.0, "aux_num_out": None,
}


def build_tiny() -> torch.nn.Module:
    """A user model for `test_audio_backends:build_tiny`: (batch, samples) -> (batch, 8, frames)."""
    return torch.nn.Sequential(torch.nn.Unflatten(1, (1, -1)), torch.nn.Conv1d(1, 8, 400, stride=160),
                               torch.nn.ReLU())


def tone(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A reproducible harmonic tone with a little noise."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.1 * np.sin(2 * np.pi * 660 * t)
    return (wave + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


def write(path: Path, wave: np.ndarray, rate: int = RATE) -> Path:
    sf.write(path, wave.T if wave.ndim == 2 else wave, rate, subtype="FLOAT")
    return path


def spec(**values: object) -> AudioModelSpec:
    return AudioModelSpec(**values)


def extract(extractor: object, paths: list[Path]) -> dict[str, list[np.ndarray]]:
    loaded = [extractor.loader(p) for p in paths]
    return extractor.forward(extractor.prepare(loaded))


def tiny_torchaudio(monkeypatch: pytest.MonkeyPatch, **values: object) -> TorchAudio:
    """WAV2VEC2_BASE with tiny params (random weights): the real bundle code path on a small model."""
    from torchaudio.pipelines import WAV2VEC2_BASE

    monkeypatch.setattr(WAV2VEC2_BASE, "_params", TINY_PARAMS)
    return TorchAudio(spec(model_name="wav2vec2_base", weights="none", **values), "cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    return [write(folder / f"c{i}.wav", tone(s, seed=i)) for i, s in enumerate((0.7, 1.3, 0.7, 2.1, 0.45))]


# --- torchaudio bundles -------------------------------------------------------------------------------------------


@pytest.mark.kernels
def test_torchaudio_fidelity_and_batch_independence(monkeypatch: pytest.MonkeyPatch, clips: list[Path]) -> None:
    runs = [extract(tiny_torchaudio(monkeypatch, output_layers=["last_hidden_state", "1"], batch_size=b), clips)
            for b in (1, 3, 8)]
    model = tiny_torchaudio(monkeypatch).model.module
    for path, got_last, got_one in zip(clips, runs[0]["last_hidden_state"], runs[0]["1"]):
        wave = torch.from_numpy(sf.read(path, dtype="float32")[0])[None]
        with torch.inference_mode():
            direct = model(wave)[0][0].mean(0).numpy()
            hidden = model.extract_features(wave)[0][1][0].mean(0).numpy()
        assert got_last.shape == (32,)
        np.testing.assert_allclose(got_last, direct, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_one, hidden, atol=1e-4, rtol=0)
    for other in runs[1:]:
        for folder in ("last_hidden_state", "1"):
            for a, b in zip(runs[0][folder], other[folder]):
                assert_batch_close(a, b, folder)


def test_torchaudio_windows_are_frame_weighted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wave = tone(2.5, seed=3)
    path = write(tmp_path / "long.wav", wave)
    extractor = tiny_torchaudio(monkeypatch, window_seconds=1.0, output_layers=["transformer.-1"])
    got = extract(extractor, [path])["transformer.-1"][0]
    frames = []
    with torch.inference_mode():
        for start in range(0, len(wave), RATE):
            piece = torch.from_numpy(wave[start:start + RATE])[None]
            frames.append(extractor.model.module.extract_features(piece)[0][-1][0])
    np.testing.assert_allclose(got, torch.cat(frames).mean(0).numpy(), atol=1e-4, rtol=0)
    whole = extract(tiny_torchaudio(monkeypatch, output_layers=["transformer.-1"]), [path])["transformer.-1"][0]
    assert np.abs(whole - got).max() > 1e-4  # windowing changes edges, so the test above can fail


def test_pooling_max_and_none(monkeypatch: pytest.MonkeyPatch, clips: list[Path]) -> None:
    none = extract(tiny_torchaudio(monkeypatch, pooling="none", window_seconds=0.5), clips[:2])["last_hidden_state"]
    top = extract(tiny_torchaudio(monkeypatch, pooling="max", window_seconds=0.5), clips[:2])["last_hidden_state"]
    for frames, vector in zip(none, top):
        assert frames.ndim == 2 and frames.shape[1] == 32
        np.testing.assert_allclose(frames.max(axis=0), vector, atol=1e-6)


def test_stereo_44k_matches_mono_16k(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import soxr

    left = tone(1.5, rate=44100, seed=1)
    stereo = np.stack([left, left * 0.9])
    stereo_path = write(tmp_path / "stereo.wav", stereo, 44100)
    mono16 = soxr.resample(stereo.mean(axis=0), 44100, RATE, "HQ").astype(np.float32)
    mono_path = write(tmp_path / "mono.wav", mono16)
    extractor = tiny_torchaudio(monkeypatch)
    a, b = (extract(extractor, [p])["last_hidden_state"][0] for p in (stereo_path, mono_path))
    assert a.shape == b.shape == (32,)
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999


def test_wav2vec2_base_random_weights_layer_3(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", tone(0.5))
    extractor = TorchAudio(spec(model_name="WAV2VEC2_BASE", weights="none", output_layers=["3"]), "cpu")
    assert isinstance(extractor.model, _Wav2Vec2) and extractor.sample_rate == 16000
    out = extract(extractor, [path])["3"][0]
    assert out.shape == (768,) and np.isfinite(out).all()
    assert extractor.describe()["preprocessing"]["sample_rate"] == 16000


def test_hdemucs_random_weights_named_stage(tmp_path: Path) -> None:
    """~5 s on 2 cores: the 84M-parameter model is built at random and its forward stops after freq_encoder.3."""
    path = write(tmp_path / "mono44.wav", tone(1.0, rate=44100), 44100)
    extractor = TorchAudio(spec(model_name="hdemucs_high_musdb", weights="none", output_layers=["freq_encoder.3"],
                                batch_size=1), "cpu")
    assert extractor.sample_rate == 44100 and extractor.channels == 2
    loaded = extractor.loader(path)
    assert loaded.ndim == 1  # mono: true reads the mix, duplicated to stereo for the model
    out = extractor.forward(extractor.prepare([loaded]))["freq_encoder.3"][0]
    assert out.shape == (384 * 8,) and np.isfinite(out).all()
    assert "duplicated" in extractor.describe()["preprocessing"]["channels_note"]


def test_check_missing_bundle_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError) as error:
        TorchAudio.check(spec(model_name="HUBERT_BASE"))
    message = str(error.value)
    assert str(Path(torch.hub.get_dir()) / "checkpoints" / "hubert_fairseq_base_ls960.pth") in message
    assert str(tmp_path) in message
    assert "weights: none" in message
    assert "random" in TorchAudio.check(spec(model_name="HUBERT_BASE", weights="none"))
    with pytest.raises(ModelNotFoundError):
        TorchAudio.check(spec(model_name="NOT_A_BUNDLE"))


# --- packaged models and user models ------------------------------------------------------------------------------


def test_resemblyzer_matches_embed_utterance(clips: list[Path]) -> None:
    from resemblyzer import VoiceEncoder

    extractor = TorchAudio(spec(model_name="resemblyzer", output_layers=["embedding", "lstm"]), "cpu")
    out = extract(extractor, clips[1:4])
    encoder = VoiceEncoder("cpu", verbose=False)
    for path, got, lstm in zip(clips[1:4], out["embedding"], out["lstm"]):
        wav16k = sf.read(path, dtype="float32")[0]
        np.testing.assert_allclose(got, encoder.embed_utterance(wav16k), atol=1e-5, rtol=0)
        assert lstm.shape == (256,)


def test_crepe_matches_torchcrepe_embed(clips: list[Path]) -> None:
    import torchcrepe

    extractor = TorchAudio(spec(model_name="crepe_tiny", window_seconds=0.5, batch_size=3), "cpu")
    out = extract(extractor, clips[:2])["embedding"]
    for path, got in zip(clips[:2], out):
        audio = torch.from_numpy(sf.read(path, dtype="float32")[0])[None]
        with torch.inference_mode():
            direct = torchcrepe.embed(audio, RATE, hop_length=160, model="tiny")
        np.testing.assert_allclose(got, direct[0].flatten(1).mean(0).numpy(), atol=1e-4, rtol=0)


def test_user_callable(clips: list[Path], tmp_path: Path) -> None:
    name = "test_audio_backends:build_tiny"
    assert "user callable" in TorchAudio.check(spec(model_name=name))
    torch.manual_seed(5)
    weights = tmp_path / "tiny.pt"
    reference = build_tiny().eval()
    torch.save(reference.state_dict(), weights)
    extractor = TorchAudio(spec(model_name=name, weights=str(weights), sample_rate=RATE), "cpu")
    got = extract(extractor, clips[:1])["output"][0]
    with torch.inference_mode():
        direct = reference(torch.from_numpy(sf.read(clips[0], dtype="float32")[0])[None])[0].mean(-1)
    np.testing.assert_allclose(got, direct.numpy(), atol=1e-5)
    assert extractor.layer_shapes() == {"output": (8,)}


def test_the_loader_pickles_and_decodes_in_a_fresh_process_without_torch(clips: list[Path], tmp_path: Path) -> None:
    """What a Ray decoding task does: unpickle the loader and decode; torch is imported only where the model runs."""
    import pickle
    import subprocess
    import sys

    blob = tmp_path / "loader.pkl"
    blob.write_bytes(pickle.dumps(AudioLoader(8000, mono=True, offset=0.1, max_seconds=0.3)))
    code = ("import pickle, sys; loader = pickle.loads(open(sys.argv[1], 'rb').read()); wave = loader(sys.argv[2]); "
            "print(wave.shape, wave.dtype, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(blob), str(clips[1])], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "(2400,) float32 False"


# --- transformers -------------------------------------------------------------------------------------------------


@pytest.mark.kernels
def test_transformers_fidelity_and_batch_independence(tiny_w2v2: Path, clips: list[Path]) -> None:
    from transformers import AutoFeatureExtractor, AutoModel

    layers = ["last_hidden_state", "hidden_states.1"]
    runs = [extract(TransformersAudio(spec(model_name=str(tiny_w2v2), output_layers=layers, batch_size=b), "cpu"),
                    clips) for b in (1, 3, 8)]
    model, fe = AutoModel.from_pretrained(tiny_w2v2).eval(), AutoFeatureExtractor.from_pretrained(tiny_w2v2)
    for path, last, hidden in zip(clips, runs[0]["last_hidden_state"], runs[0]["hidden_states.1"]):
        inputs = fe(sf.read(path, dtype="float32")[0], sampling_rate=RATE, return_tensors="pt")
        with torch.inference_mode():
            out = model(**inputs, output_hidden_states=True)
        np.testing.assert_allclose(last, out.last_hidden_state[0].mean(0).numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(hidden, out.hidden_states[1][0].mean(0).numpy(), atol=1e-4, rtol=0)
    for other in runs[1:]:
        for folder in layers:
            for a, b in zip(runs[0][folder], other[folder]):
                assert_batch_close(a, b, folder)


def test_transformers_windows_and_description(tiny_w2v2: Path, tmp_path: Path) -> None:
    from transformers import AutoFeatureExtractor, AutoModel

    wave = tone(2.3, seed=2)
    path = write(tmp_path / "long.wav", wave)
    extractor = TransformersAudio(spec(model_name=str(tiny_w2v2), window_seconds=1.0), "cpu")
    got = extract(extractor, [path])["last_hidden_state"][0]
    model, fe = AutoModel.from_pretrained(tiny_w2v2).eval(), AutoFeatureExtractor.from_pretrained(tiny_w2v2)
    frames = []
    with torch.inference_mode():
        for start in range(0, len(wave), RATE):
            inputs = fe(wave[start:start + RATE], sampling_rate=RATE, return_tensors="pt")
            frames.append(model(**inputs).last_hidden_state[0])
    np.testing.assert_allclose(got, torch.cat(frames).mean(0).numpy(), atol=1e-4, rtol=0)
    described = extractor.describe()
    assert described["sample_rate"] == RATE and described["preprocessing"]["window_seconds"] == 1.0
    assert extractor.layer_shapes() == {"last_hidden_state": (32,)}
    assert extractor.sort_key(str(path)) == 0


def test_model_files_torchscript_and_pickled_behind_trust_pickle(tmp_path: Path) -> None:
    from ducho.backends.torch_audio import TorchAudio
    from ducho.errors import ConfigError

    torch.manual_seed(4)
    net = build_tiny().eval()
    wave = torch.from_numpy(np.sin(np.arange(16000) / 9.0).astype(np.float32))
    torch.jit.save(torch.jit.trace(net, wave[None, :8000]), tmp_path / "net.ts")
    torch.save(net, tmp_path / "net.pt")
    scripted = TorchAudio(AudioModelSpec(model_name=str(tmp_path / "net.ts"), output_layers=["output"]), "cpu")
    pickled = TorchAudio(AudioModelSpec(model_name=str(tmp_path / "net.pt"), output_layers=["output"],
                                        trust_pickle=True), "cpu")
    first = scripted.forward(scripted.prepare([wave]))["output"][0]
    assert np.abs(first - pickled.forward(pickled.prepare([wave]))["output"][0]).max() < 1e-5
    with pytest.raises(ConfigError, match="pickled model: loading it runs code"):
        TorchAudio.check(AudioModelSpec(model_name=str(tmp_path / "net.pt")))

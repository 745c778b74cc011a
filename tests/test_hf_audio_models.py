"""TransformersAudio on tiny Whisper, AST, CLAP, HuBERT and WavLM models against direct transformers calls (offline)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import assert_batch_close
from ducho.backends.hf_audio import TransformersAudio
from ducho.config.schema import AudioModelSpec
from ducho.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CLIP_SECONDS = (0.7, 1.3, 0.7, 1.9, 0.45)  # all shorter than every default window below
LAYERS = {
    "whisper": ["last_hidden_state", "hidden_states.1"],
    "ast": ["last_hidden_state", "pooler_output"],
    "clap": ["audio_embeds", "pooler_output", "last_hidden_state"],
    "hubert": ["hidden_states.-1"],
    "wavlm": ["hidden_states.-1"],
}
# (window_seconds given to the spec or None for the default, the window used, the long clip's seconds)
WINDOWS = {
    "whisper": (None, 30.0, 31.0),
    "ast": (None, 2.56, 6.0),
    "clap": (None, 2.0, 5.0),
    "hubert": (1.0, 1.0, 2.3),
    "wavlm": (1.0, 1.0, 2.3),
}
CONV = {"conv_dim": (16, 16), "conv_kernel": (10, 3), "conv_stride": (5, 2), "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4}
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def tone(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A reproducible harmonic tone with a little noise."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.1 * np.sin(2 * np.pi * 660 * t)
    return (wave + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


def build(name: str, folder: Path) -> Path:
    """Save a tiny random model of kind `name` with its feature extractor into `folder`."""
    import transformers as tf

    torch.manual_seed(0)
    if name == "whisper":
        config = tf.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                                  decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80,
                                  max_source_positions=1500, max_target_positions=32, vocab_size=100, pad_token_id=0,
                                  bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
        model, extractor = tf.WhisperModel(config), tf.WhisperFeatureExtractor(feature_size=80)
    elif name == "ast":
        config = tf.ASTConfig(**SMALL, max_length=256, num_mel_bins=32)
        model, extractor = tf.ASTModel(config), tf.ASTFeatureExtractor(num_mel_bins=32, max_length=256)
    elif name == "clap":
        audio = {"spec_size": 64, "num_mel_bins": 16, "window_size": 4, "depths": (1, 1), "num_attention_heads": (2, 2),
                 "hidden_size": 32, "patch_embeds_hidden_size": 16, "projection_dim": 16, "num_hidden_layers": 2}
        text = {**SMALL, "vocab_size": 99, "projection_dim": 16}
        model = tf.ClapModel(tf.ClapConfig(text_config=text, audio_config=audio, projection_dim=16))
        extractor = tf.ClapFeatureExtractor(feature_size=16, max_length_s=2, truncation="rand_trunc")
    elif name == "hubert":
        model = tf.HubertModel(tf.HubertConfig(**SMALL, **CONV))
        extractor = tf.Wav2Vec2FeatureExtractor(return_attention_mask=False)
    else:
        model = tf.WavLMModel(tf.WavLMConfig(**SMALL, **CONV, num_buckets=16, max_bucket_distance=50))
        extractor = tf.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    model.eval().save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Builds each tiny model once per module, on first use."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build(name, tmp_path_factory.mktemp("hf-audio") / name)
        return built[name]

    return get


def backend(folder: Path, **values: Any) -> TransformersAudio:
    return TransformersAudio(AudioModelSpec(model_name=str(folder), **values), "cpu")


def extract(extractor: TransformersAudio, waves: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    return extractor.forward(extractor.prepare([torch.from_numpy(w) for w in waves]))


def reference(folder: Path) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoFeatureExtractor, AutoModel

    return AutoModel.from_pretrained(folder).eval(), AutoFeatureExtractor.from_pretrained(folder)


def whisper_real_frames(samples: int, hop_length: int) -> int:
    """Encoder frames of real audio: ceil(samples / hop) mel frames, then Whisper's stride-2 convolution."""
    return (math.ceil(samples / hop_length) - 1) // 2 + 1


def direct(name: str, model: torch.nn.Module, fe: Any, wave: np.ndarray) -> dict[str, torch.Tensor]:
    """One window through transformers directly: (frames, D) per frame layer, (D,) per vector layer."""
    inputs = fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt")
    with torch.inference_mode():
        if name == "whisper":
            out = model.encoder(inputs["input_features"], output_hidden_states=True)
            keep = whisper_real_frames(len(wave), fe.hop_length)
            return {"last_hidden_state": out.last_hidden_state[0, :keep],
                    "hidden_states.1": out.hidden_states[1][0, :keep]}
        if name == "ast":
            out = model(input_values=inputs["input_values"])
            return {"last_hidden_state": out.last_hidden_state[0], "pooler_output": out.pooler_output[0]}
        if name == "clap":
            audio = {"input_features": inputs["input_features"], "is_longer": inputs["is_longer"]}
            tower = model.audio_model(**audio)
            embeds = model.get_audio_features(**audio).pooler_output[0]
            frames = tower.last_hidden_state[0].flatten(0, 1).T  # (C, F, T) -> (T, C*F)
            return {"audio_embeds": embeds, "pooler_output": tower.pooler_output[0], "last_hidden_state": frames}
        out = model(**inputs, output_hidden_states=True)
        return {"hidden_states.-1": out.hidden_states[-1][0]}


def pooled(value: torch.Tensor) -> np.ndarray:
    return (value.mean(0) if value.dim() == 2 else value).numpy()


@pytest.mark.kernels
@pytest.mark.parametrize("name", list(LAYERS))
def test_fidelity_and_batch_independence(name: str, tiny: Callable[[str], Path]) -> None:
    """Each clip (one window) equals a direct call; batch sizes 1 and 3 agree to 1e-5 of the vector's scale."""
    folder = tiny(name)
    model, fe = reference(folder)
    waves = [tone(s, fe.sampling_rate, seed=i) for i, s in enumerate(CLIP_SECONDS)]
    runs = [extract(backend(folder, output_layers=LAYERS[name], batch_size=b), waves) for b in (1, 3)]
    for i, wave in enumerate(waves):
        expected = direct(name, model, fe, wave)
        for layer in LAYERS[name]:
            got = runs[0][layer][i]
            assert got.shape == pooled(expected[layer]).shape and np.isfinite(got).all()
            np.testing.assert_allclose(got, pooled(expected[layer]), atol=1e-4, rtol=0, err_msg=f"{name} {layer}")
            assert_batch_close(runs[1][layer][i], got, f"{name} {layer} batch")


@pytest.mark.parametrize("name", list(LAYERS))
def test_long_clips_are_windowed(name: str, tiny: Callable[[str], Path]) -> None:
    """Frame layers: the mean over all frames of all windows; vector layers: the mean weighted by window samples."""
    given, seconds, length = WINDOWS[name]
    folder = tiny(name)
    model, fe = reference(folder)
    extractor = backend(folder, output_layers=LAYERS[name], window_seconds=given, batch_size=2)
    assert extractor.windowing.window_seconds == pytest.approx(seconds)
    wave = tone(length, fe.sampling_rate, seed=4)
    got = extract(extractor, [wave])
    size = round(seconds * fe.sampling_rate)
    pieces = [wave[start:start + size] for start in range(0, len(wave), size)]
    assert len(pieces) >= 2 and len(extractor.prepare([torch.from_numpy(wave)])["windows"]) == len(pieces)
    outputs = [direct(name, model, fe, piece) for piece in pieces]
    weights = torch.tensor([float(len(piece)) for piece in pieces])
    for layer in LAYERS[name]:
        parts = [out[layer] for out in outputs]
        if parts[0].dim() == 2:
            expected = torch.cat(parts).mean(0)
        else:
            expected = (torch.stack(parts) * weights[:, None]).sum(0) / weights.sum()
        np.testing.assert_allclose(got[layer][0], expected.numpy(), atol=1e-4, rtol=0, err_msg=f"{name} {layer}")


def test_whisper_padding_is_cut(tiny: Callable[[str], Path]) -> None:
    """Frames after ceil(samples / hop) mel frames (stride 2 in the encoder) are Whisper's padding and left out."""
    folder = tiny("whisper")
    model, fe = reference(folder)
    waves = [tone(s, fe.sampling_rate, seed=i) for i, s in enumerate((0.7, 0.45, 1.0))]
    frames = extract(backend(folder, pooling="none", batch_size=3), waves)["last_hidden_state"]
    assert [f.shape for f in frames] == [(35, 32), (23, 32), (50, 32)]
    extractor = backend(folder)
    assert type(extractor.encoder).__name__ == "WhisperEncoder"
    mean = extract(extractor, waves[:1])["last_hidden_state"][0]
    with torch.inference_mode():
        full = model.encoder(fe(waves[0], sampling_rate=16000, return_tensors="pt")["input_features"])
    np.testing.assert_allclose(mean, frames[0].mean(0), atol=1e-5, rtol=0)
    assert np.abs(mean - full.last_hidden_state[0].mean(0).numpy()).max() > 1e-3  # the padding would change it


def test_window_longer_than_the_extractor_input_is_refused(tiny: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match="window_seconds"):
        backend(tiny("whisper"), window_seconds=31.0)
    with pytest.raises(ConfigError, match="window_seconds"):
        backend(tiny("clap"), window_seconds=2.5)
    assert backend(tiny("whisper"), window_seconds=30.0).windowing.window_seconds == 30.0


def test_layer_checks(tiny: Callable[[str], Path]) -> None:
    """CLAP's hidden states count its Swin stages (C, F, T maps: T frames of C*F); audio_embeds needs
    get_audio_features."""
    model, fe = reference(tiny("clap"))
    wave = tone(1.0, fe.sampling_rate)
    got = extract(backend(tiny("clap"), output_layers=["hidden_states.2"]), [wave])["hidden_states.2"][0]
    with torch.inference_mode():
        maps = model.audio_model(**fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt"),
                                 output_hidden_states=True).hidden_states
    assert len(maps) == 3  # depths (1, 1): the patch embedding and two stages
    np.testing.assert_allclose(got, maps[2][0].flatten(0, 1).mean(-1).numpy(), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="out of range"):
        backend(tiny("clap"), output_layers=["hidden_states.3"])
    with pytest.raises(ConfigError, match="get_audio_features"):
        backend(tiny("ast"), output_layers=["audio_embeds"])
    shapes = backend(tiny("clap"), output_layers=LAYERS["clap"]).layer_shapes()
    assert shapes == {"audio_embeds": (16,), "pooler_output": (32,), "last_hidden_state": (64,)}

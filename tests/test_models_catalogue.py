"""`ducho models`: packaged weights, the local caches, filters, and no torch/TensorFlow import for --offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import hub_cache_entry
from ducho.catalogue import catalogue, table
from ducho.cli import main
from ducho.errors import ConfigError

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1 url basename
KERAS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"  # keras.applications.ResNet50(weights="imagenet")


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every model cache pointed at an empty folder (a fresh machine)."""
    for variable, folder in (("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub"), ("TORCH_HOME", "torch"),
                             ("KERAS_HOME", "keras"), ("KAGGLEHUB_CACHE", "kaggle")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(variable, str(tmp_path / folder))
    return tmp_path


def _folder(root: Path, files: dict[str, object]) -> Path:
    root.mkdir(parents=True)
    for name, content in files.items():
        (root / name).write_text(json.dumps(content) if isinstance(content, dict) else str(content))
    return root


def test_offline_lists_packaged_weights_with_sizes(empty_caches: Path) -> None:
    found = {(e.modality, e.backend, e.name): e for e in catalogue(offline=True)}
    for key in (("textual", "sentence_transformers", "sentence-transformers/all-MiniLM-L6-v2"),
                ("visual", "torch", "efficientnet_lite0"), ("audio", "torch", "crepe_tiny"),
                ("audio", "torch", "resemblyzer"), ("audio", "tensorflow", "musicnn_mtt")):
        assert found[key].offline and found[key].size > 100_000, key
        assert found[key].source.startswith("packaged: pip")
    assert ("visual", "handcrafted", "hog") in found and ("textual", "handcrafted", "tfidf") in found
    assert all(e.offline for e in found.values())
    assert not any(e.backend == "torch" and e.name == "resnet18" for e in found.values())


def test_offline_finds_the_local_caches(empty_caches: Path) -> None:
    hub = empty_caches / "hf" / "hub"
    text = _folder(empty_caches / "src" / "text", {"config.json": {"model_type": "bert"}, "tokenizer.json": {}})
    image = _folder(empty_caches / "src" / "image", {"config.json": {"model_type": "vit"},
                                                     "preprocessor_config.json": {"image_mean": [0.5] * 3}})
    joint = _folder(empty_caches / "src" / "joint", {"config.json": {"vision_config": {}, "text_config": {}}})
    speech = _folder(empty_caches / "src" / "speech", {"config.json": {"model_type": "wav2vec2"},
                                                       "preprocessor_config.json": {"sampling_rate": 16000}})
    for repo, source in (("org/text", text), ("org/image", image), ("org/joint", joint), ("org/speech", speech)):
        hub_cache_entry(hub, repo, source)
    (empty_caches / "keras" / "models").mkdir()
    (empty_caches / "keras" / "models" / KERAS_FILE).write_bytes(b"0" * 1000)
    (empty_caches / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (empty_caches / "torch" / "hub" / "checkpoints" / RESNET18_FILE).write_bytes(b"0" * 2000)

    found = {(e.modality, e.backend, e.name): e for e in catalogue(offline=True)}
    assert found[("textual", "transformers", "org/text")].source.startswith("Hugging Face cache")
    assert ("visual", "transformers", "org/image") in found
    assert ("visual_textual", "transformers", "org/joint") in found
    assert ("audio", "transformers", "org/speech") in found
    assert ("textual", "transformers", "org/image") not in found
    assert found[("visual", "tensorflow", "ResNet50")].size == 1000
    assert found[("visual", "torch", "resnet18")].size == 2000
    assert "IMAGENET1K_V1" in found[("visual", "torch", "resnet18")].source


def test_filters_and_the_full_catalogue(empty_caches: Path) -> None:
    musicnn = catalogue("audio", "tensorflow", offline=True)
    assert sorted(e.name for e in musicnn) == ["musicnn_msd", "musicnn_mtt", "vgg_msd", "vgg_mtt"]
    named = catalogue("visual", "tensorflow")
    resnet = next(e for e in named if e.name == "ResNet50")
    assert not resnet.offline and "weights: none" in resnet.source
    assert any(e.name.startswith("<") for e in named)  # the .keras file pattern
    assert "4 names, 4 resolve offline here" in table(musicnn)


@pytest.mark.parametrize(("flag", "value"), [("--modality", "video"), ("--backend", "pytorch")])
def test_bad_filter_names_the_accepted_values(flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{flag}.*{value}.*accepted"):
        catalogue(**{flag[2:]: value})
    assert main(["models", flag, value]) == 2


def test_models_offline_command_imports_no_model_library(empty_caches: Path) -> None:
    code = ("import sys; from ducho.cli import main; main(['models', '--offline']); "
            "assert not {'torch', 'tensorflow'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "efficientnet_lite0" in done.stdout and "resolve offline here" in done.stdout

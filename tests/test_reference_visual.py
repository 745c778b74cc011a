"""Visual configs written for the reference releases run unchanged (random weights offline: one override)."""

# ruff: noqa: E501  (the configs are quoted verbatim)
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# 1.0, demo 1 (fashion): the torch entry; the Xception (tensorflow) entry belongs to the TensorFlow backend
CONFIG_1_0 = """\
dataset_path: ./local/data/demo1
gpu list: 0

visual:
    items:
        input_path: images
        output_path: visual_embeddings
        model: [
            { name: VGG19,  output_layers: classifier.3, reshape: [224, 224], preprocessing: zscore, framework: torch},
        ]
"""

# 2.0: ResNet50 avgpool with zscore, and a model the user trained and saved to a file
CONFIG_2_0 = """\
dataset_path: ./local/data/demo_visual
gpu list: 0

visual:
    items:
        input_path: images
        output_path: visual_embeddings
        model: [
            { model_name: ResNet50,  output_layers: avgpool, reshape: [224, 224], preprocessing: zscore, backend: torch, batch_size: 2},
            { model_name: ./local/data/demo_visual/MMFashion.pt,  output_layers: avgpool, reshape: [224, 224], preprocessing: zscore, backend: torch},
        ]
"""


def images(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for n, size in enumerate(((64, 48), (50, 80), (32, 32))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"item{n}.{n}.jpg")
    return ["item0.0", "item1.1", "item2.2"]


def ducho(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ducho", *args], cwd=root, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TORCH_HOME": str(root / "th")})


def zscore_224(path: Path) -> torch.Tensor:
    """What the reference computed for reshape [224, 224] + zscore (ImageNet mean/std)."""
    image = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (tensor - mean[:, None, None]) / std[:, None, None]


def test_reference_1_0_demo1_vgg19_classifier_3(tmp_path: Path) -> None:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    data = tmp_path / "local" / "data" / "demo1"
    ids = images(data / "images")
    (tmp_path / "config.yml").write_text(CONFIG_1_0)
    done = ducho(tmp_path, "--config=config.yml", "--visual.items.model.0.weights=none")
    assert done.returncode == 0, done.stderr
    folder = data / "visual_embeddings" / "torch" / "VGG19" / "classifier.3"
    assert sorted(p.stem for p in folder.glob("*.npy")) == ids
    torch.manual_seed(0)
    model = create_feature_extractor(torchvision.models.vgg19(weights=None).eval(), {"classifier.3": "out"})
    with torch.inference_mode():
        direct = model(zscore_224(data / "images" / "item1.1.jpg")[None])["out"][0].numpy()
    written = np.load(folder / "item1.1.npy")
    assert written.shape == (4096,) and np.abs(written - direct).max() < 1e-4


def test_reference_2_0_resnet50_and_a_user_model_file(tmp_path: Path) -> None:
    import torchvision

    data = tmp_path / "local" / "data" / "demo_visual"
    ids = images(data / "images")
    torch.manual_seed(5)
    user_model = torchvision.models.resnet50(num_classes=10).eval()
    torch.save(user_model, data / "MMFashion.pt")  # the whole pickled module, as 2.0 users saved it
    (tmp_path / "config.yml").write_text(CONFIG_2_0)

    refused = ducho(tmp_path, "run", "config.yml", "visual.items.model.0.weights=none")
    assert refused.returncode == 2 and "is a pickled model: loading it runs code" in refused.stderr
    assert not (data / "visual_embeddings").exists()  # refused before any work

    done = ducho(tmp_path, "run", "config.yml", "visual.items.model.0.weights=none",
                 "visual.items.model.1.trust_pickle=true")
    assert done.returncode == 0, done.stderr
    resnet = data / "visual_embeddings" / "torch" / "ResNet50" / "avgpool"
    mine = data / "visual_embeddings" / "torch" / "MMFashion" / "avgpool"
    assert sorted(p.stem for p in resnet.glob("*.npy")) == sorted(p.stem for p in mine.glob("*.npy")) == ids
    extractor = torchvision.models.feature_extraction.create_feature_extractor(user_model, {"avgpool": "out"})
    with torch.inference_mode():
        direct = extractor(zscore_224(data / "images" / "item0.0.jpg")[None])["out"].flatten().numpy()
    written = np.load(mine / "item0.0.npy")
    assert written.shape == (2048,) and np.abs(written - direct).max() < 1e-4
    assert np.load(resnet / "item2.2.npy").shape == (2048,)

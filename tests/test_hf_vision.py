"""The transformers vision backend against direct image processor + model calls on tiny models (fp32, CPU)."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_batch_close
from ducho.backends.hf_vision import TransformersVision
from ducho.config.schema import VisualModelSpec
from ducho.errors import ConfigError
from ducho.media.image import DecodeError, decode_image

TOL = 1e-5
BATCH_SIZES = (1, 3, 32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-vision")


@pytest.fixture(scope="module")
def images(tiny_dir: Path) -> list[Path]:
    """Seven RGB images of different sizes and formats (JPEG, PNG), noise plus a gradient."""
    rng = np.random.default_rng(0)
    paths = []
    for n, (width, height) in enumerate([(32, 32), (50, 40), (40, 64), (97, 31), (33, 33), (128, 96), (20, 45)]):
        ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
        pixels = np.clip(ramp * 0.5 + rng.integers(0, 128, (height, width, 3)), 0, 255).astype(np.uint8)
        path = tiny_dir / f"img{n}.{'png' if n % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def tiny_vit_classifier(tiny_dir: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tiny_dir / "vit-cls"
    torch.manual_seed(1)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8, num_labels=5)
    ViTForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_convnext(tiny_dir: Path) -> Path:
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    folder = tiny_dir / "convnext"
    torch.manual_seed(2)
    config = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32)
    ConvNextModel(config).eval().save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tiny_dir: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tiny_dir / "clip"
    torch.manual_seed(3)
    text = {"vocab_size": 99, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 20, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 2,
            "pad_token_id": 1}
    # head size 16: torch's CPU attention kernel is batch-dependent for head size 8 at 17 tokens (no real model has
    # heads that small; ViT, CLIP and DINOv2 use 64), which would break the byte-identity check
    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 20,
              "image_size": 32, "patch_size": 8}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def build(folder: Path, **settings: Any) -> TransformersVision:
    return TransformersVision(VisualModelSpec(model_name=str(folder), **settings), "cpu")


def extract(extractor: TransformersVision, paths: list[Path], batch_size: int) -> dict[str, list[np.ndarray]]:
    """What the runner does: load each record, prepare and forward in batches, one array per record."""
    loaded = [extractor.loader(p) for p in paths]
    result: dict[str, list[np.ndarray]] = {layer.folder: [] for layer in extractor.layers}
    for start in range(0, len(loaded), batch_size):
        for folder, arrays in extractor.forward(extractor.prepare(loaded[start:start + batch_size])).items():
            assert all(a.dtype == np.float32 for a in arrays)
            result[folder].extend(arrays)
    return result


def direct(folder: Path, path: Path, model_class: str = "AutoModel", method: str | None = None) -> Any:
    """The reference: the folder's processor and model called directly on one image."""
    import transformers

    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    model = getattr(transformers, model_class).from_pretrained(folder).eval()
    pixels = processor(images=decode_image(path), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        if method:
            return getattr(model, method)(pixel_values=pixels, output_hidden_states=True)
        return model(pixel_values=pixels, output_hidden_states=True, return_dict=True)


def check_fidelity(extractor: TransformersVision, paths: list[Path],
                   references: dict[str, Callable[[Path], torch.Tensor]]) -> None:
    """Every batch size gives arrays equal to the direct call on the image alone, and to each other to 1e-5 of their
    scale."""
    runs = [extract(extractor, paths, size) for size in BATCH_SIZES]
    for folder, reference in references.items():
        for n, path in enumerate(paths):
            expected = reference(path).numpy()
            for run in runs:
                assert run[folder][n].shape == expected.shape, folder
                assert np.abs(run[folder][n] - expected).max() < TOL, folder
            for run in runs[1:]:
                assert_batch_close(run[folder][n], runs[0][folder][n], folder)


VIT_CASES = {
    "pooler_output": (None, lambda o: o.pooler_output[0]),
    "last_hidden_state": ("cls", lambda o: o.last_hidden_state[0, 0]),
    "hidden_states.1": ("cls", lambda o: o.hidden_states[1][0, 0]),
    "hidden_states.-1": ("mean", lambda o: o.hidden_states[-1][0].mean(dim=0)),
}


@pytest.mark.kernels
@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "none"])
def test_vit_last_hidden_state_poolings_match_direct_call(tiny_vit: Path, images: list[Path], pooling: str) -> None:
    extractor = build(tiny_vit, output_layers=["last_hidden_state"], pooling=pooling)
    outputs = {p: direct(tiny_vit, p).last_hidden_state[0] for p in images}
    pooled = {"cls": lambda s: s[0], "mean": lambda s: s.mean(dim=0), "max": lambda s: s.amax(dim=0),
              "none": lambda s: s}[pooling]
    check_fidelity(extractor, images, {"last_hidden_state": lambda p: pooled(outputs[p])})
    assert extractor.layers[0].pooling == pooling
    expected_shape = (17, 32) if pooling == "none" else (32,)  # 16 patches + CLS
    assert extractor.layer_shapes()["last_hidden_state"] == expected_shape


@pytest.mark.kernels
def test_vit_vectors_and_hidden_states_match_direct_call(tiny_vit: Path, images: list[Path]) -> None:
    outputs = {p: direct(tiny_vit, p) for p in images}
    extractor = build(tiny_vit, output_layers=["pooler_output", "last_hidden_state", "hidden_states.1"])
    assert [layer.pooling for layer in extractor.layers] == ["n/a", "cls", "cls"]  # ViT has a CLS token
    check_fidelity(extractor, images, {
        "pooler_output": lambda p: outputs[p].pooler_output[0],
        "last_hidden_state": lambda p: outputs[p].last_hidden_state[0, 0],
        "hidden_states.1": lambda p: outputs[p].hidden_states[1][0, 0],
    })
    extractor = build(tiny_vit, output_layers=["hidden_states.-1", "hidden_states.0"], pooling="none")
    assert extractor.layers[0].name == "hidden_states.2"  # negative indices resolve from the end
    check_fidelity(extractor, images, {
        "hidden_states.-1": lambda p: outputs[p].hidden_states[-1][0],
        "hidden_states.0": lambda p: outputs[p].hidden_states[0][0],
    })


def test_vit_default_layer_and_description(tiny_vit: Path, images: list[Path]) -> None:
    extractor = build(tiny_vit)
    assert [(layer.folder, layer.pooling) for layer in extractor.layers] == [("pooler_output", "n/a")]
    assert extractor.num_hidden_states == 3
    assert extractor.sort_key(str(images[0])) == 0
    info = extractor.describe()
    assert info["model"]["loaded_from"] == "local" and info["model_class"] == "ViTModel"
    assert info["num_hidden_states"] == 3
    assert info["preprocessing"]["size"] == {"height": 32, "width": 32}
    assert info["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and info["preprocessing"]["resample"] == "BILINEAR"
    shapes = extractor.layer_shapes()
    assert set(shapes) == {"pooler_output", "last_hidden_state", "hidden_states.0", "hidden_states.1",
                           "hidden_states.2"}
    assert all(shape == (32,) for shape in shapes.values())


@pytest.mark.kernels
def test_convnext_feature_maps_keep_or_pool_space(tiny_convnext: Path, images: list[Path]) -> None:
    outputs = {p: direct(tiny_convnext, p) for p in images}
    extractor = build(tiny_convnext, output_layers=["hidden_states.1", "last_hidden_state"], pooling="none")
    check_fidelity(extractor, images, {
        "hidden_states.1": lambda p: outputs[p].hidden_states[1][0],
        "last_hidden_state": lambda p: outputs[p].last_hidden_state[0],
    })
    assert extractor.layer_shapes()["hidden_states.1"] == (8, 8, 8)  # (C, H, W) kept
    extractor = build(tiny_convnext, output_layers=["hidden_states.-1", "pooler_output", "hidden_states.1"])
    assert [layer.pooling for layer in extractor.layers] == ["mean", "n/a", "mean"]  # no CLS: mean by default
    check_fidelity(extractor, images, {
        "hidden_states.-1": lambda p: outputs[p].hidden_states[-1][0].mean(dim=(1, 2)),
        "pooler_output": lambda p: outputs[p].pooler_output[0],
        "hidden_states.1": lambda p: outputs[p].hidden_states[1][0].mean(dim=(1, 2)),
    })
    extractor = build(tiny_convnext, output_layers=["hidden_states.2"], pooling="max")
    check_fidelity(extractor, images, {"hidden_states.2": lambda p: outputs[p].hidden_states[2][0].amax(dim=(1, 2))})
    assert extractor.layer_shapes() == {"pooler_output": (16,), "last_hidden_state": (16,), "hidden_states.0": (8,),
                                        "hidden_states.1": (8,), "hidden_states.2": (16,)}


def test_convnext_rejects_cls_pooling(tiny_convnext: Path) -> None:
    with pytest.raises(ConfigError, match="feature map"):
        build(tiny_convnext, output_layers=["hidden_states.1"], pooling="cls")


@pytest.mark.kernels
def test_clip_image_embeds_and_tower_outputs(tiny_clip: Path, images: list[Path]) -> None:
    features = {p: direct(tiny_clip, p, "CLIPModel", "get_image_features") for p in images}
    tower = {p: direct(tiny_clip, p, "CLIPVisionModel") for p in images}
    extractor = build(tiny_clip, output_layers=["image_embeds", "pooler_output", "hidden_states.-1", "-1"])
    assert [layer.name for layer in extractor.layers] == ["image_embeds", "pooler_output", "hidden_states.2",
                                                          "image_embeds"]  # a bare integer: the 1.0 spelling
    check_fidelity(extractor, images, {
        "image_embeds": lambda p: features[p].pooler_output[0],
        "-1": lambda p: features[p].pooler_output[0],
        "pooler_output": lambda p: tower[p].pooler_output[0],
        "hidden_states.-1": lambda p: tower[p].hidden_states[-1][0, 0],  # CLIP's class embedding: cls by default
    })
    shapes = extractor.layer_shapes()
    assert shapes["image_embeds"] == (12,) and shapes["pooler_output"] == (32,)
    assert extractor.describe()["image_features"] == "get_image_features"


@pytest.mark.kernels
def test_image_classification_task_gives_logits(tiny_vit_classifier: Path, images: list[Path]) -> None:
    outputs = {p: direct(tiny_vit_classifier, p, "ViTForImageClassification") for p in images}
    extractor = build(tiny_vit_classifier, task="image-classification", output_layers=["logits", "last_hidden_state"])
    assert extractor.describe()["model_class"] == "ViTForImageClassification"
    check_fidelity(extractor, images, {
        "logits": lambda p: outputs[p].logits[0],
        "last_hidden_state": lambda p: _vit_final(tiny_vit_classifier, p),
    })
    with pytest.raises(ConfigError, match="no 'pooler_output'"):  # ViT's classifier has no pooler
        build(tiny_vit_classifier, task="image-classification", output_layers=["pooler_output"])


def _vit_final(folder: Path, path: Path) -> torch.Tensor:
    """The classifier's base model output (layer-normed last hidden state), CLS token."""
    from transformers import AutoImageProcessor, ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(folder).eval()
    pixels = AutoImageProcessor.from_pretrained(folder)(images=decode_image(path), return_tensors="pt")
    with torch.inference_mode():
        return model.vit(pixel_values=pixels["pixel_values"]).last_hidden_state[0, 0]


def test_unknown_layer_names_the_accepted_ones(tiny_vit: Path) -> None:
    with pytest.raises(ConfigError) as error:
        build(tiny_vit, output_layers=["pooler_outptu"])
    message = str(error.value)
    assert "'pooler_outptu'" in message and "did you mean 'pooler_output'" in message
    assert "last_hidden_state" in message and "hidden_states.N (0..2" in message
    with pytest.raises(ConfigError, match="logits.*task"):
        build(tiny_vit, output_layers=["logits"])


@pytest.mark.parametrize("layer", ["hidden_states.99", "hidden_states.-4", "hidden_states.3"])
def test_hidden_state_out_of_range(tiny_vit: Path, layer: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{layer}' is out of range; the model has 3 hidden states"):
        build(tiny_vit, output_layers=[layer])


@pytest.mark.kernels
def test_reshape_and_minmax_override_only_their_extractor(tiny_vit: Path, images: list[Path]) -> None:
    from transformers import AutoImageProcessor, ViTModel

    extractor = build(tiny_vit, output_layers=["last_hidden_state"], reshape=(40, 24), preprocessing="minmax")
    pixels = extractor.loader(images[5])
    expected = np.array(decode_image(images[5]).resize((40, 24), Image.Resampling.BILINEAR), dtype=np.float32)
    assert pixels.shape == (3, 24, 40) and pixels.dtype == torch.float32
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0 and float(pixels.max()) > 0.5
    assert np.abs(pixels.permute(1, 2, 0).numpy() - expected / 255).max() < 1e-6
    assert extractor.describe()["preprocessing"]["override"]["scaling"] == "minmax"
    tokens = build(tiny_vit, output_layers=["last_hidden_state"], pooling="none", reshape=(40, 24),
                   preprocessing="minmax")
    ours = extract(tokens, [images[0], images[5]], 2)["last_hidden_state"]
    model = ViTModel.from_pretrained(tiny_vit).eval()
    with torch.inference_mode():  # 3 x 5 patches + CLS: position embeddings interpolated to the new size
        expected = model(pixel_values=torch.stack([pixels]), interpolate_pos_encoding=True).last_hidden_state[0]
    assert ours[1].shape == (16, 32) and np.abs(ours[1] - expected.numpy()).max() < TOL

    zscore = build(tiny_vit, reshape=(40, 24), preprocessing="zscore", mean=(0.1, 0.2, 0.3), std=(2.0, 2.0, 2.0))
    shifted = zscore.loader(images[5])
    assert torch.allclose(shifted, (pixels - torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)) / 2.0, atol=1e-6)

    plain = build(tiny_vit)  # built after: the model's own processor, unchanged
    reference = AutoImageProcessor.from_pretrained(tiny_vit)(images=decode_image(images[5]), return_tensors="pt")
    assert torch.equal(plain.loader(images[5]), reference["pixel_values"][0])
    assert plain.loader(images[5]).shape == (3, 32, 32) and float(plain.loader(images[5]).min()) < 0
    assert "override" not in plain.describe()["preprocessing"]


@pytest.mark.kernels
def test_preprocessing_alone_keeps_the_processor_resize(tiny_convnext: Path, images: list[Path]) -> None:
    from transformers import AutoImageProcessor

    extractor = build(tiny_convnext, preprocessing="minmax")
    processor = AutoImageProcessor.from_pretrained(tiny_convnext)
    reference = processor(images=decode_image(images[3]), return_tensors="pt")["pixel_values"][0]
    pixels = extractor.loader(images[3])
    assert pixels.shape == reference.shape == (3, 32, 32)
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    assert torch.allclose((pixels - mean) / std, reference, atol=1e-4)  # same geometry, other scaling


def _load_all(loader: Callable[[Any], torch.Tensor], paths: list[str]) -> list[torch.Tensor]:
    return [loader(p) for p in paths]


def test_loader_pickles_and_runs_in_a_spawned_process(tiny_vit: Path, tiny_dir: Path, images: list[Path]) -> None:
    extractor = build(tiny_vit, reshape=(40, 24), preprocessing="zscore")
    copy = pickle.loads(pickle.dumps(extractor.loader))
    assert torch.equal(copy(images[1]), extractor.loader(images[1]))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        remote = pool.apply(_load_all, (extractor.loader, [str(p) for p in images[:3]]))
    assert all(torch.equal(r, extractor.loader(p)) for r, p in zip(remote, images[:3]))
    broken = tiny_dir / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(DecodeError):
        extractor.loader(broken)

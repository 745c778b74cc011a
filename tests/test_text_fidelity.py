"""ducho's vectors against direct transformers / sentence-transformers calls on the same texts (fp32, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ducho
from conftest import TEXTS, write_tsv

TOL = 2e-5


def items_config(tmp_path: Path, model: dict, texts: list[str] = TEXTS, **source: object) -> dict:
    write_tsv(tmp_path / "items.tsv", ["item_id", "description"], [[f"i{n:02d}", t] for n, t in enumerate(texts)])
    return {"dataset_path": str(tmp_path), "device": "cpu",
            "textual": {"items": {"input_path": "items.tsv", "output_path": "out", "model": [model], **source}}}


def reviews_config(tmp_path: Path, model: dict) -> dict:
    rows = [[f"u{n % 3}", f"i{n:02d}", str(n % 5 + 1), t] for n, t in enumerate(TEXTS)]
    write_tsv(tmp_path / "reviews.tsv", ["user", "item", "rating", "review"], rows)
    return {"dataset_path": str(tmp_path), "device": "cpu",
            "textual": {"interactions": {"input_path": "reviews.tsv", "output_path": "out", "model": [model]}}}


def load_layer(folder: Path, stems: list[str]) -> list[np.ndarray]:
    return [np.load(folder / f"{s}.npy") for s in stems]


def item_stems(texts: list[str] = TEXTS) -> list[str]:
    return [f"i{n:02d}" for n in range(len(texts))]


def direct_outputs(model: torch.nn.Module, tokenizer, text: str, **kwargs: object):
    """One text alone, no padding: the reference each ducho vector must equal."""
    encoded = tokenizer([text], truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        return model(**encoded, output_hidden_states=True, return_dict=True, **kwargs), encoded


@pytest.mark.kernels
def test_sentence_transformers_matches_encode_items_and_interactions(tmp_path: Path, minilm: str) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm, device="cpu").encode(TEXTS, convert_to_numpy=True, batch_size=5)
    model = {"model_name": minilm, "backend": "sentence_transformers", "batch_size": 4}
    result = ducho.run(items_config(tmp_path / "a", model), progress=False)
    ours = np.stack(load_layer(result.jobs[0].output_dir / "sentence_embedding", item_stems()))
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < TOL

    result = ducho.run(reviews_config(tmp_path / "b", model), progress=False)
    stems = [f"u{n % 3}__i{n:02d}" for n in range(len(TEXTS))]
    ours = np.stack(load_layer(result.jobs[0].output_dir / "sentence_embedding", stems))
    assert np.abs(ours - reference).max() < TOL


def test_sentence_transformers_token_embeddings_and_normalize(tmp_path: Path, tiny_st: Path) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tiny_st), device="cpu")
    tokens = st.encode(TEXTS, output_value="token_embeddings")
    pooled = st.encode(TEXTS, normalize_embeddings=True)
    model = {"model_name": str(tiny_st), "output_layers": ["sentence_embedding", "token_embeddings"],
             "normalize": True, "batch_size": 5}
    result = ducho.run(items_config(tmp_path, model), progress=False)
    job = result.jobs[0]
    assert job.output_dir.parts[-2:] == ("sentence_transformers", "tiny-st")  # backend chosen from modules.json
    for ours, ref in zip(load_layer(job.output_dir / "token_embeddings", item_stems()), tokens):
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
        assert ours.shape == ref.shape  # (own token count, dim): no padding
        assert np.abs(ours - ref).max() < TOL
    ours = np.stack(load_layer(job.output_dir / "sentence_embedding", item_stems()))
    assert np.abs(ours - pooled).max() < TOL


@pytest.mark.kernels
@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "none"])
def test_transformers_pooling_and_layers_match_direct_forward(tmp_path: Path, tiny_bert: Path, pooling: str) -> None:
    from transformers import AutoModel, AutoTokenizer

    layers = ["last_hidden_state", "pooler_output", "hidden_states.1", "hidden_states.-1"]
    model = {"model_name": str(tiny_bert), "backend": "transformers", "output_layers": layers,
             "pooling": pooling, "batch_size": 5}
    result = ducho.run(items_config(tmp_path, model), progress=False)
    folder = result.jobs[0].output_dir
    bert = AutoModel.from_pretrained(tiny_bert).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)

    def reduce(steps: torch.Tensor) -> np.ndarray:
        steps = steps[0]
        value = {"mean": steps.mean(0), "cls": steps[0], "max": steps.max(0).values, "none": steps}[pooling]
        return value.numpy()

    for n, text in enumerate(TEXTS):
        out, _ = direct_outputs(bert, tokenizer, text)
        expected = {"last_hidden_state": reduce(out.last_hidden_state), "pooler_output": out.pooler_output[0].numpy(),
                    "hidden_states.1": reduce(out.hidden_states[1]), "hidden_states.-1": reduce(out.hidden_states[-1])}
        for layer, reference in expected.items():
            ours = np.load(folder / layer / f"i{n:02d}.npy")
            assert ours.shape == reference.shape, (layer, text)
            assert np.abs(ours - reference).max() < TOL, (layer, text)


def test_task_model_logits_and_base_layers_in_one_pass(tmp_path: Path, tiny_sentiment: Path) -> None:
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    model = {"model_name": str(tiny_sentiment), "backend": "transformers", "task": "sentiment-analysis",
             "output_layers": ["logits", "pooler_output", "hidden_states.-2", "last_hidden_state"], "batch_size": 3}
    result = ducho.run(reviews_config(tmp_path, model), progress=False)
    folder = result.jobs[0].output_dir
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_sentiment).eval()
    base = AutoModel.from_pretrained(tiny_sentiment).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_sentiment)
    for n, text in enumerate(TEXTS):
        stem = f"u{n % 3}__i{n:02d}"
        out, _ = direct_outputs(classifier, tokenizer, text)
        base_out, _ = direct_outputs(base, tokenizer, text)
        assert np.abs(np.load(folder / "logits" / f"{stem}.npy") - out.logits[0].numpy()).max() < TOL
        assert np.load(folder / "logits" / f"{stem}.npy").shape == (5,)
        assert np.abs(np.load(folder / "pooler_output" / f"{stem}.npy") - base_out.pooler_output[0].numpy()).max() < TOL
        hidden = out.hidden_states[-2][0].mean(0).numpy()
        assert np.abs(np.load(folder / "hidden_states.-2" / f"{stem}.npy") - hidden).max() < TOL
        last = base_out.last_hidden_state[0].mean(0).numpy()
        assert np.abs(np.load(folder / "last_hidden_state" / f"{stem}.npy") - last).max() < TOL
    manifest = json.loads((folder / "logits" / "manifest.json").read_text())
    assert manifest["model_class"] == "BertForSequenceClassification"


@pytest.mark.kernels
def test_shapes_do_not_depend_on_batch_size(tmp_path: Path, tiny_bert: Path) -> None:
    outputs = {}
    for batch_size in (1, 3, 32):
        model = {"model_name": str(tiny_bert), "backend": "transformers", "output_layers": ["last_hidden_state"],
                 "pooling": "mean", "batch_size": batch_size}
        result = ducho.run(items_config(tmp_path / str(batch_size), model), progress=False)
        outputs[batch_size] = load_layer(result.jobs[0].output_dir / "last_hidden_state", item_stems())
    for batch_size in (3, 32):
        for a, b in zip(outputs[1], outputs[batch_size]):
            assert a.shape == b.shape == (32,)
            assert np.abs(a - b).max() < TOL


def test_truncation_is_counted_in_the_manifest(tmp_path: Path, tiny_bert: Path) -> None:
    model = {"model_name": str(tiny_bert), "backend": "transformers", "max_length": 8, "pooling": "none"}
    result = ducho.run(items_config(tmp_path, model), progress=False)
    folder = result.jobs[0].output_dir / "last_hidden_state"
    manifest = json.loads((folder / "manifest.json").read_text())
    from transformers import AutoTokenizer

    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(tiny_bert)(TEXTS)["input_ids"]]
    assert manifest["truncated_texts"] == sum(n > 8 for n in lengths) > 0
    assert manifest["shape"] == ["steps", 32]
    assert all(np.load(folder / f"{s}.npy").shape[0] <= 8 for s in item_stems())


def test_tiny_bert_fixture_tokenizes_words_of_its_vocabulary(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    ids = tokenizer("the shoe")["input_ids"]
    assert len(tokenizer) > 100 and tokenizer.unk_token_id not in ids  # a real vocabulary, not only [UNK]

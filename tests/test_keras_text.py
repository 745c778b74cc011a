"""Keras (keras-hub) text backend on tiny BERT / DistilBERT / RoBERTa presets saved with `save_to_preset`: fidelity
against a direct backbone call on keras-hub's own packing (masked pooling in numpy), batch-size independence,
truncation, an end-to-end run, layer listing, a preset name read offline from the kagglehub cache, and missing
presets reported before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ducho
from conftest import TEXTS, WORDS, write_tsv
from ducho.backends import keras_common
from ducho.config.schema import TextModelSpec
from ducho.errors import DuchoError, ModelNotFoundError

TOL = 1e-5
POSITIONS = 64  # the tiny backbones' max_sequence_length: the default token limit


@pytest.fixture(scope="module")
def keras_hub() -> Any:
    keras_common.import_keras()  # torch._dynamo first: TensorFlow imported before triton segfaults
    import keras_hub

    return keras_hub


def vocabulary(folder: Path) -> Path:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [chr(c) for c in range(33, 127)] + [f"##{chr(c)}" for c in range(97, 123)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return folder / "vocab.txt"


def save_preset(keras_hub: Any, folder: Path, backbone_cls: Any, tokenizer_cls: Any) -> Path:
    """A 2-layer, 32-wide backbone (seeded random weights) and its WordPiece tokenizer as a local preset."""
    tokenizer = tokenizer_cls(vocabulary=str(vocabulary(folder / "vocab")), lowercase=True)
    import keras

    keras.utils.set_random_seed(3)
    backbone = backbone_cls(vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=2, hidden_dim=32,
                            intermediate_dim=37, max_sequence_length=POSITIONS)
    backbone.save_to_preset(str(folder / "preset"))
    tokenizer.save_to_preset(str(folder / "preset"))
    return folder / "preset"


@pytest.fixture(scope="module")
def bert(keras_hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keras-bert")
    return save_preset(keras_hub, folder, keras_hub.models.BertBackbone, keras_hub.models.BertTokenizer)


@pytest.fixture(scope="module")
def distil_bert(keras_hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keras-distilbert")
    return save_preset(keras_hub, folder, keras_hub.models.DistilBertBackbone, keras_hub.models.DistilBertTokenizer)


@pytest.fixture(scope="module")
def roberta(keras_hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RoBERTa (no segment ids, no pooler) with a byte-pair tokenizer over the texts' characters."""
    import keras

    vocabulary = {token: n for n, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    merges = ["Ġ t", "h e", "Ġt he"]
    for token in sorted(set("".join(TEXTS) + "Ġ")) + [m.replace(" ", "") for m in merges]:
        vocabulary.setdefault(token, len(vocabulary))
    folder = tmp_path_factory.mktemp("keras-roberta") / "preset"
    keras.utils.set_random_seed(3)
    keras_hub.models.RobertaBackbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2, hidden_dim=32,
                                     intermediate_dim=37, max_sequence_length=POSITIONS).save_to_preset(str(folder))
    keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges).save_to_preset(str(folder))
    return folder


def extractor(preset: Path, **spec: Any) -> Any:
    from ducho.backends.keras_text import KerasText

    return KerasText(TextModelSpec(model_name=str(preset), backend="tensorflow", **spec), "cpu")


def extract(model: Any, texts: list[str], batch_size: int) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(texts), batch_size):
        for folder, arrays in model.forward(model.prepare(texts[start:start + batch_size])).items():
            out.setdefault(folder, []).extend(arrays)
    return out


def direct(keras_hub: Any, preset: Path, preprocessor_cls: Any, text: str, length: int = POSITIONS) -> dict:
    """keras-hub's own packing of one text (padded to `length`), the backbone called on it: token states of the
    valid tokens per output, with the padding mask."""
    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    preprocessor = preprocessor_cls(keras_hub.models.Tokenizer.from_preset(str(preset)), sequence_length=length)
    inputs = {k: np.asarray(v) for k, v in preprocessor([text]).items()}
    outputs = backbone(inputs)
    outputs = outputs if isinstance(outputs, dict) else {"sequence_output": outputs}
    return {"mask": inputs["padding_mask"][0].astype(bool), **{k: np.asarray(v)[0] for k, v in outputs.items()}}


def reduce(steps: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """Masked pooling in numpy: mean / max over the valid tokens, the first token, or the valid tokens."""
    valid = steps[mask]
    return {"mean": valid.sum(0) / mask.sum(), "max": valid.max(0), "cls": steps[0], "none": valid}[how]


@pytest.mark.parametrize("pooling", [pytest.param("mean", marks=pytest.mark.kernels), "cls", "max", "none"])
def test_bert_layers_match_a_direct_backbone_call(keras_hub: Any, bert: Path, pooling: str) -> None:
    model = extractor(bert, output_layers=["sequence_output", "pooled_output"], pooling=pooling)
    ours = extract(model, TEXTS, batch_size=5)
    worst = 0.0
    for n, text in enumerate(TEXTS):
        reference = direct(keras_hub, bert, keras_hub.models.BertTextClassifierPreprocessor, text)
        expected = reduce(reference["sequence_output"], reference["mask"], pooling)
        assert ours["sequence_output"][n].shape == expected.shape and ours["sequence_output"][n].dtype == np.float32
        assert ours["pooled_output"][n].shape == (32,)
        worst = max(worst, np.abs(ours["sequence_output"][n] - expected).max(),
                    np.abs(ours["pooled_output"][n] - reference["pooled_output"]).max())
    assert worst < TOL, worst
    if pooling == "none":  # one row per token of the text itself: [CLS] + word pieces + [SEP], no padding
        lengths = [len(a) for a in ours["sequence_output"]]
        assert lengths[TEXTS.index("ok")] == 4 and len(set(lengths)) > 3  # [CLS] o ##k [SEP]


def test_hidden_layers_are_the_encoder_blocks_outputs(keras_hub: Any, bert: Path) -> None:
    model = extractor(bert, output_layers=["transformer_layer_0", "transformer_layer_1", "sequence_output"],
                      pooling="none")
    ours = extract(model, TEXTS[:4], batch_size=4)
    backbone = keras_hub.models.Backbone.from_preset(str(bert))
    for n in range(4):
        assert np.abs(ours["transformer_layer_1"][n] - ours["sequence_output"][n]).max() == 0
        assert np.abs(ours["transformer_layer_0"][n] - ours["sequence_output"][n]).max() > 1e-3
    import keras

    first = keras.Model(backbone.input, backbone.get_layer("transformer_layer_0").output)
    reference = direct(keras_hub, bert, keras_hub.models.BertTextClassifierPreprocessor, TEXTS[0])
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.Tokenizer.from_preset(str(bert)), sequence_length=POSITIONS)
    states = np.asarray(first({k: np.asarray(v) for k, v in preprocessor([TEXTS[0]]).items()}))[0]
    assert np.abs(ours["transformer_layer_0"][0] - states[reference["mask"]]).max() < TOL


@pytest.mark.kernels
def test_batch_size_does_not_change_vectors(bert: Path) -> None:
    model = extractor(bert, output_layers=["sequence_output", "pooled_output"], pooling="mean")
    one, three = extract(model, TEXTS, batch_size=1), extract(model, TEXTS, batch_size=3)
    for layer in ("sequence_output", "pooled_output"):
        assert np.abs(np.stack(one[layer]) - np.stack(three[layer])).max() <= TOL


def test_batches_are_padded_to_a_grid_of_lengths_and_truncated_at_max_length(bert: Path) -> None:
    model = extractor(bert, pooling="none")
    batch = model.prepare(["ok", "quick red light"])
    ids, mask = batch["inputs"]["token_ids"], batch["inputs"]["padding_mask"]  # [CLS] o ##k [SEP] [PAD]...
    assert ids.shape == (2, 8) and mask.tolist() == [[1] * 4 + [0] * 4, [1] * 5 + [0] * 3]
    assert ids[:, 0].tolist() == [2, 2] and ids[0, 3] == ids[1, 4] == 3 and ids[0, 4] == 0  # [CLS], [SEP], [PAD]
    assert (model.sort_key("ok"), model.sort_key("quick red light")) == (4, 8)  # so not batched together
    short = extractor(bert, pooling="none", max_length=8)
    out = extract(short, TEXTS, batch_size=4)
    assert max(len(a) for a in out["sequence_output"]) == 8 and short.describe()["truncated_texts"] > 0


def test_distil_bert_without_segments_or_pooler(keras_hub: Any, distil_bert: Path) -> None:
    model = extractor(distil_bert, pooling="mean")
    assert [layer.folder for layer in model.layers] == ["sequence_output"] and "pooled_output" not in model.outputs
    ours = extract(model, TEXTS, batch_size=5)["sequence_output"]
    for n, text in enumerate(TEXTS):
        reference = direct(keras_hub, distil_bert, keras_hub.models.DistilBertTextClassifierPreprocessor, text)
        assert np.abs(ours[n] - reduce(reference["sequence_output"], reference["mask"], "mean")).max() < TOL
    with pytest.raises(DuchoError, match="'pooled_output' is not a layer of"):
        extractor(distil_bert, output_layers=["pooled_output"])


def test_roberta_byte_pair_preset(keras_hub: Any, roberta: Path) -> None:
    model = extractor(roberta, pooling="cls")
    assert set(model.layer_shapes()) == {"sequence_output", "transformer_layer_0", "transformer_layer_1"}
    ours = extract(model, TEXTS, batch_size=5)["sequence_output"]
    for n, text in enumerate(TEXTS):
        reference = direct(keras_hub, roberta, keras_hub.models.RobertaTextClassifierPreprocessor, text)
        assert np.abs(ours[n] - reduce(reference["sequence_output"], reference["mask"], "cls")).max() < TOL


def test_end_to_end_run_writes_one_file_per_id(tmp_path: Path, bert: Path) -> None:
    ids = [f"i{n:02d}" for n in range(len(TEXTS))]
    write_tsv(tmp_path / "items.tsv", ["item_id", "description"], [[i, t] for i, t in zip(ids, TEXTS)])
    spec = {"model_name": str(bert), "backend": "tensorflow", "output_layers": ["sequence_output"], "batch_size": 4}
    config = {"dataset_path": str(tmp_path), "device": "cpu",
              "textual": {"items": {"input_path": "items.tsv", "output_path": "out", "model": [spec]}}}
    result = ducho.run(config, progress=False)
    folder = result.jobs[0].output_dir / "sequence_output"
    assert sorted(p.stem for p in folder.glob("*.npy")) == ids
    expected = extract(extractor(bert), TEXTS, batch_size=2)["sequence_output"]
    for item, vector in zip(ids, expected):
        written = np.load(folder / f"{item}.npy")
        assert written.shape == (32,) and np.abs(written - vector).max() < TOL
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_class"] == "BertBackbone" and "model.weights.h5" in json.dumps(manifest)


def test_layers_command_lists_outputs_and_blocks(bert: Path) -> None:
    from ducho.inspect import list_layers

    listing = list_layers(str(bert), "textual", "tensorflow")
    for line in ("sequence_output      (None, 32)", "pooled_output        (32,)", "transformer_layer_1  (None, 32)"):
        assert line in listing, listing


def test_a_preset_name_loads_offline_from_the_kagglehub_cache(tmp_path: Path, bert: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`bert_tiny_en_uncased` resolves to its Kaggle handle; a copy in kagglehub's cache layout (files + completion
    markers) loads with no network, and the manifest hashes the cached weights."""
    from ducho.backends.keras_text import check

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    base = tmp_path / "models" / "keras" / "bert" / "keras" / "bert_tiny_en_uncased"
    for file in (f for f in bert.rglob("*") if f.is_file()):
        relative = file.relative_to(bert)
        for target in (base / "3" / relative, base / ".complete" / "3" / f"{relative}.complete"):
            target.parent.mkdir(parents=True, exist_ok=True)
        (base / "3" / relative).write_bytes(file.read_bytes())
        (base / ".complete" / "3" / f"{relative}.complete").touch()
    assert check(TextModelSpec(model_name="bert_tiny_en_uncased")).endswith(f"(kagglehub cache: {base / '3'})")
    cached = extractor("bert_tiny_en_uncased")
    expected = extract(extractor(bert), TEXTS, batch_size=4)["sequence_output"]
    assert np.abs(np.stack(extract(cached, TEXTS, batch_size=4)["sequence_output"]) - np.stack(expected)).max() == 0
    assert "model.weights.h5" in cached.describe()["model"]["file_sha256"]


def test_missing_presets_are_reported_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho.backends.keras_text import check

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="'bert_tiny_en_uncased' is not in the kagglehub cache"):
        check(TextModelSpec(model_name="bert_tiny_en_uncased"))
    with pytest.raises(ModelNotFoundError, match="did you mean 'bert_tiny_en_uncased'"):
        check(TextModelSpec(model_name="bert_tiny_en_uncase"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        check(TextModelSpec(model_name=str(tmp_path / "no-preset")))
    write_tsv(tmp_path / "items.tsv", ["item_id", "description"], [["i0", "ok"]])
    spec = {"model_name": "bert_tiny_en_uncased", "backend": "tensorflow"}
    config = {"dataset_path": str(tmp_path), "device": "cpu",
              "textual": {"items": {"input_path": "items.tsv", "output_path": "out", "model": [spec]}}}
    with pytest.raises(DuchoError, match="bert_tiny_en_uncased"):
        ducho.run(config, progress=False)
    assert not (tmp_path / "out").exists()

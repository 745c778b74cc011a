"""Config loading: overrides typed by YAML, list entries, reference spellings, errors with did-you-mean."""

from __future__ import annotations

import pytest

from ducho.config import load_config, translation_notes
from ducho.errors import ConfigError
from ducho.ids import RecordKey
from ducho.plan import build_plan


def base(**model: object) -> dict:
    return {"textual": {"items": {"input_path": "a.tsv", "output_path": "out",
                                  "model": [{"model_name": "m", **model}, {"model_name": "n"}]}}}


def test_overrides_are_typed_and_address_list_entries() -> None:
    config = load_config(base(), ["textual.items.model.1.batch_size=64", "textual.items.model.0.normalize=true",
                                  "--strict=yes", "textual.items.model.0.output_layers=[a, 3]"])
    models = config.textual.items.model
    assert models[1].batch_size == 64 and models[0].batch_size == 32
    assert models[0].normalize is True and config.strict is True
    assert models[0].output_layers == ["a", "3"]


def test_override_in_new_spelling_replaces_old_key() -> None:
    config = load_config(base(), ["textual.items.model.0.name=other"])
    assert config.textual.items.model[0].model_name == "other"
    raw = {"textual": {"items": {"input_path": "a", "output_path": "b", "model": [{"name": "x"}]}}}
    assert load_config(raw, ["textual.items.model.0.model_name=y"]).textual.items.model[0].model_name == "y"


def test_override_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"textual.items.model.5: index 5 is out of range; the list has 2"):
        load_config(base(), ["textual.items.model.5.batch_size=1"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        load_config(base(), ["batch_size"])


def test_unknown_key_and_bad_value_messages() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(base(bach_size=3, pooling="meen"))
    text = str(error.value)
    assert "textual.items.model.0.bach_size: unknown key (did you mean 'batch_size'?)" in text
    assert "accepted keys here: model_name, backend" in text
    assert "pooling: value 'meen' is not accepted; accepted: mean, avg, cls, max, none (did you mean 'mean'?)" in text


def test_reference_spellings_are_translated_and_noted() -> None:
    raw = {"gpu list": "1,2", "model map": "x.yml", "textual": {
        "items": {"input_folder": "d.tsv", "output_folder": "o", "item_column": "DESC",
                  "model": [{"name": "m", "framework": "sentence-transformers", "output_layers": 1}]},
        "interactions": {"input_path": "r.tsv", "output_path": "o2", "interaction_column": "REVIEW",
                         "model": [{"name": "s", "framework": "transformers"}]}}}
    config = load_config(raw)
    assert config.device == "cuda:1" and config.device_fallback_to_cpu is True
    items, reviews = config.textual.items, config.textual.interactions
    assert (items.input_path, items.output_path, items.text_column, items.item_column) == ("d.tsv", "o", "DESC", None)
    assert items.model[0].backend == "sentence_transformers" and items.model[0].output_layers == ["1"]
    assert reviews.text_column == "REVIEW" and reviews.user_column is None
    notes = translation_notes(config)
    assert any("only cuda:1 is used" in n for n in notes) and any("'model map'" in n for n in notes)
    two = load_config({"gpu list": -1, "textual": {"interactions": {
        "input_path": "r", "output_path": "o", "interaction_columns": ["U", "I"], "text_column": "T",
        "model": [{"model_name": "m"}]}}})
    assert two.device == "cpu" and two.textual.interactions.user_column == "U"
    assert two.textual.interactions.item_column == "I"


def test_same_setting_in_two_spellings_is_an_error() -> None:
    with pytest.raises(ConfigError, match="name and .*model_name are the same setting"):
        load_config({"textual": {"items": {"input_path": "a", "output_path": "b",
                                           "model": [{"name": "x", "model_name": "y"}]}}})


def test_plan_accepts_every_modality_section() -> None:
    joint = {"visual_textual": {"items": {"input_path": {"visual": "i", "textual": "t.tsv"}, "output_path": "o",
                                          "model": [{"model_name": "org/clip"}]}}}
    [job] = build_plan(load_config(joint))
    assert (job.backend, job.input_path.name, job.text_path.name) == ("transformers", "i", "t.tsv")


@pytest.mark.parametrize("item", ["../../etc/passwd", "a/b", "..", ".hidden", "x\\y", "50%", "nul\x00l"])
def test_ids_never_leave_the_output_folder(tmp_path, item: str) -> None:
    stem = RecordKey(item).stem
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".")
    assert (tmp_path / f"{stem}.npy").resolve().parent == tmp_path.resolve()


def test_id_encoding_is_one_to_one() -> None:
    ids = ["a/b", "a%2Fb", "a b", "a_b", "1", "01", "é", "e\u0301", "..", ".", "%2E%2E"]
    assert len({RecordKey(i).stem for i in ids}) == len(ids)
    assert RecordKey("42").stem == "42" and RecordKey("i", user="u").stem == "u__i"

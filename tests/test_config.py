"""load_config: YAML files and dicts, typed overrides, reference 1.0/2.0 spellings, error messages; plan checks;
CLI argument translation. Pure Python: no model is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ducho.cli import _split_legacy, main
from ducho.config import load_config, translation_notes
from ducho.errors import ConfigError
from ducho.plan import build_plan, model_folder


def base(source: str = "items", **model: object) -> dict:
    return {"textual": {source: {"input_path": "a.tsv", "output_path": "out", "model": [{"model_name": "m", **model}]}}}


def error_of(raw: object, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(raw, overrides)
    return str(caught.value)


def test_defaults_from_empty_dict_and_no_notes() -> None:
    config = load_config({})
    assert (config.device, config.format, config.strict, config.textual) == ("auto", "npy", False, None)
    assert translation_notes(config) == ()
    with pytest.raises(ValidationError):
        config.device = "cpu"  # settings are frozen


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("device: cpu\ntextual:\n  items:\n    input_path: a.tsv\n    output_path: out\n"
                    "    model:\n      - model_name: m\n      - model_name: n\n        batch_size: 8\n")
    for source in (path, str(path)):
        config = load_config(source, ["textual.items.model.0.batch_size=64", "textual.items.model.1.normalize=true",
                                      "--strict=yes", "textual.items.model.0.output_layers=[a, 3]"])
        models = config.textual.items.model
        assert models[0].batch_size == 64 and isinstance(models[0].batch_size, int)
        assert models[1].batch_size == 8 and models[1].normalize is True and models[0].normalize is False
        assert config.strict is True and models[0].output_layers == ["a", "3"]
        assert config.device == "cpu"
    assert load_config(path, ["textual.items.model.-1.batch_size=5"]).textual.items.model[1].batch_size == 5


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), ("- a\n- b\n", "must hold a mapping"), ("a: [1,\n", "not valid YAML")])
def test_bad_yaml_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "c.yml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert message in error_of(path) and "c.yml" in error_of(path)


def test_override_old_spelling_replaces_new_and_vice_versa(tmp_path: Path) -> None:
    path = tmp_path / "old.yml"
    path.write_text("textual:\n  items:\n    input_folder: a.tsv\n    output_path: o\n    model:\n      - name: x\n")
    config = load_config(path, ["textual.items.model.0.model_name=y", "textual.items.input_path=b.tsv"])
    assert config.textual.items.model[0].model_name == "y" and config.textual.items.input_path == "b.tsv"
    config = load_config(base(), ["textual.items.model.0.name=z", "textual.items.output_folder=o2", "gpu list=0"])
    assert config.textual.items.model[0].model_name == "z" and config.textual.items.output_path == "o2"
    assert config.device == "cuda:0"


@pytest.mark.parametrize("override, message", [
    ("textual.items.model.3.batch_size=1", "override textual.items.model.3: index 3 is out of range; the list has 1"),
    ("textual.items.model.-2.batch_size=1", "override textual.items.model.-2: index -2 is out of range"),
    ("textual.items.model.first.batch_size=1", "override textual.items.model.first: 'first' must be a list index"),
    ("textual.items.input_path.x=1", "textual.items.input_path holds a value, not a section"),
    ("batch_size", "must look like key.path=value"),
    ("textual..items=1", "has an empty key"),
])
def test_override_errors_name_the_key(override: str, message: str) -> None:
    assert message in error_of(base(), (override,))


def test_unknown_keys_name_key_suggestion_and_accepted_keys() -> None:
    text = error_of(base(bach_size=3))
    assert "textual.items.model.0.bach_size: unknown key (did you mean 'batch_size'?)" in text
    assert "accepted keys here: model_name, backend, output_layers, pooling, batch_size" in text
    text = error_of({"devise": "cpu"})
    assert "devise: unknown key (did you mean 'device'?)" in text and "dataset_path, device," in text
    raw = base()
    raw["textual"]["items"]["text_colum"] = "t"
    assert "textual.items.text_colum: unknown key (did you mean 'text_column'?)" in error_of(raw)
    assert "textual.item: unknown key (did you mean 'items'?); accepted keys here: items, interactions" in error_of(
        {"textual": {"item": {}}})


def test_bad_literal_values_list_accepted_values() -> None:
    text = error_of(base(pooling="meen"))
    assert "textual.items.model.0.pooling: value 'meen' is not accepted; accepted: mean, avg, cls, max, none " \
           "(did you mean 'mean'?)" in text
    raw = base(precision="fp61")
    raw["textual"]["items"]["duplicate_ids"] = "fist"
    text = error_of(raw)  # every error is reported at once
    assert "textual.items.duplicate_ids: value 'fist' is not accepted; accepted: first, last, skip_all " \
           "(did you mean 'first'?)" in text
    assert "precision: value 'fp61' is not accepted; accepted: auto, fp32, fp16, bf16" in text
    assert "format: value 'npz' is not accepted; accepted: npy, matrix, sparse, parquet (did you mean 'npy'?)" \
        in error_of({"format": "npz"})
    assert "textual.items.model.0.batch_size" in error_of(base(batch_size=0))


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CUDA", "cuda0", "tpu"])
def test_bad_device(device: str) -> None:
    text = error_of({"device": device})
    assert f"device: device {device!r} is not accepted; accepted: auto, cpu, cuda, cuda:N, mps" in text
    good = ("auto", "cpu", "cuda:3", "mps")
    assert [load_config({"device": d}).device for d in good] == list(good)


def test_missing_required_keys() -> None:
    text = error_of({"textual": {"items": {"output_path": "o", "model": [{"batch_size": 2}]}}})
    assert "textual.items.input_path: required key is missing" in text
    assert "textual.items.model.0.model_name: required key is missing" in text
    assert "textual.interactions.model: required key is missing" in error_of(
        {"textual": {"interactions": {"input_path": "r", "output_path": "o"}}})


@pytest.mark.parametrize("key", ["gpu list", "gpu_list", "gpu"])
@pytest.mark.parametrize("gpus, device, fallback, note", [
    (-1, "cpu", False, "gpu list [-1] -> device: cpu"),
    ("-1", "cpu", False, "gpu list [-1] -> device: cpu"),
    (0, "cuda:0", True, "gpu list [0] -> device: cuda:0 (runs on the CPU when no GPU is present)"),
    ("1,2", "cuda:1", True, "only cuda:1 is used, one device per run"),
    ([0, 1], "cuda:0", True, "only cuda:0 is used"),
])
def test_gpu_list_becomes_device(key: str, gpus: object, device: str, fallback: bool, note: str) -> None:
    config = load_config({key: gpus})
    assert (config.device, config.device_fallback_to_cpu) == (device, fallback)
    assert any(note in n for n in translation_notes(config))


def test_reference_1_0_items_and_interactions() -> None:
    raw = {"gpu list": 0, "model map": "map.yml", "textual": {
        "items": {"input_folder": "d.tsv", "output_folder": "o", "item_column": "DESC",
                  "model": [{"name": "m", "framework": "sentence-transformers", "output_layers": 1}]},
        "interactions": {"input_path": "r.tsv", "output_path": "o2", "interaction_column": "REVIEW",
                         "model": [{"name": "s", "framework": ["Transformers"]}]}}}
    config = load_config(raw)
    items, reviews = config.textual.items, config.textual.interactions
    assert (items.input_path, items.output_path, items.text_column, items.item_column) == ("d.tsv", "o", "DESC", None)
    assert (items.model[0].model_name, items.model[0].backend) == ("m", "sentence_transformers")
    assert (reviews.text_column, reviews.user_column, reviews.item_column) == ("REVIEW", None, None)
    assert reviews.model[0].backend == "Transformers"  # a one-entry list is unwrapped, known names kept
    notes = translation_notes(config)
    assert "'model map' is not used any more and was ignored" in notes
    assert "textual.items.input_folder -> textual.items.input_path" in notes
    assert "textual.items.output_folder -> textual.items.output_path" in notes
    assert "textual.items.model.0.name -> textual.items.model.0.model_name" in notes
    assert "textual.items.model.0.backend: 'sentence-transformers' -> 'sentence_transformers'" in notes
    assert any(n.startswith("textual.items.item_column without text_column") for n in notes)
    assert any(n.startswith("textual.interactions.interaction_column (1.0") for n in notes)


def test_item_column_with_text_column_is_the_id_column() -> None:
    raw = base()
    raw["textual"]["items"].update(item_column="asin", text_column="desc")
    items = load_config(raw).textual.items
    assert (items.item_column, items.text_column) == ("asin", "desc")


def test_reference_2_0_interaction_columns() -> None:
    raw = base("interactions")
    raw["textual"]["interactions"].update(interaction_columns=["U", "I"], text_column="T")
    config = load_config(raw)
    block = config.textual.interactions
    assert (block.user_column, block.item_column, block.text_column) == ("U", "I", "T")
    assert "textual.interactions.interaction_columns -> user_column, item_column" in translation_notes(config)
    raw["textual"]["interactions"]["interaction_columns"] = ["U", "I", "X"]
    assert "must be [user_column, item_column]" in error_of(raw)


@pytest.mark.parametrize("where, old, new", [
    ("model", "name", "model_name"), ("model", "framework", "backend"),
    ("source", "input_folder", "input_path"), ("source", "interaction_column", "text_column"),
    ("top", "gpu list", "device"),
])
def test_same_setting_in_both_spellings_is_an_error(where: str, old: str, new: str) -> None:
    raw = base("interactions")
    block = {"top": raw, "source": raw["textual"]["interactions"],
             "model": raw["textual"]["interactions"]["model"][0]}[where]
    block.setdefault(new, "x")
    block[old] = "cpu" if where == "top" else "y"
    text = error_of(raw)
    assert old in text and new in text and "same setting" in text


def test_single_model_mapping_is_a_list_of_one() -> None:
    raw = {"textual": {"items": {"input_path": "a", "output_path": "b", "model": {"name": "x"}}}}
    assert [m.model_name for m in load_config(raw).textual.items.model] == ["x"]
    # the documented override spelling must also address the single mapping as entry 0
    assert load_config(raw, ["textual.items.model.0.batch_size=3"]).textual.items.model[0].batch_size == 3


def test_plan_refuses_an_unknown_backend_with_a_close_match() -> None:
    with pytest.raises(ConfigError) as caught:
        build_plan(load_config(base(backend="sentence_transformer")))
    message = str(caught.value)
    assert message.startswith("textual.items.model.0.backend: backend for textual 'sentence_transformer' is not "
                              "accepted; accepted: ")
    assert "sentence_transformers, tensorflow, transformers" in message and message.endswith(
        "(did you mean 'sentence_transformers'?)")
    visual = {"visual": {"items": {"input_path": "i", "output_path": "o",
                                   "model": [{"model_name": "Xception", "backend": "tensorflw"}]}}}
    with pytest.raises(ConfigError, match="backend for visual 'tensorflw' is not accepted; accepted: .*torch, "
                                          "transformers \\(did you mean 'tensorflow'\\?\\)"):
        build_plan(load_config(visual))
    with pytest.raises(ConfigError, match="names no source"):
        build_plan(load_config({}))


def test_model_folder_and_plan_output_dir(tmp_path: Path) -> None:
    assert model_folder("sentence-transformers/all-MiniLM-L6-v2") == Path("sentence-transformers", "all-MiniLM-L6-v2")
    assert model_folder("bert-base-uncased") == Path("bert-base-uncased")
    assert model_folder("org/../x") == Path("org", "%2E.", "x")
    (tmp_path / "nested" / "my-model").mkdir(parents=True)
    (tmp_path / "weights.pt").write_bytes(b"")
    assert model_folder(str(tmp_path / "nested" / "my-model")) == Path("my-model")
    assert model_folder(str(tmp_path / "weights.pt")) == Path("weights")
    raw = base(model_name=str(tmp_path / "nested" / "my-model"), backend="transformers")
    raw["dataset_path"] = str(tmp_path)
    job = build_plan(load_config(raw))[0]
    assert job.output_dir == tmp_path / "out" / "transformers" / "my-model"
    assert job.input_path == tmp_path / "a.tsv" and job.key == "textual.items.model.0"


@pytest.mark.parametrize("argv, expected", [
    (["--config=c.yml", "--textual.items.model.0.batch_size=3"],
     ["run", "c.yml", "textual.items.model.0.batch_size=3"]),
    (["--config", "c.yml", "--device=cpu"], ["run", "c.yml", "device=cpu"]),
    (["run", "c.yml", "--dry-run"], ["run", "c.yml", "--dry-run"]),
    (["validate", "c.yml", "--strict=true"], ["validate", "c.yml", "strict=true"]),
    (["demo", "--output=x"], ["demo", "--output=x"]),
])
def test_split_legacy(argv: list[str], expected: list[str]) -> None:
    assert _split_legacy(argv) == expected


def test_config_option_without_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:  # argparse's "expected one argument", not an IndexError traceback
        main(["--config"])
    assert caught.value.code == 2


def test_help_imports_no_deep_learning_library() -> None:
    code = ("import sys\nfrom ducho.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    print('EXIT', e.code)\n"
            "heavy = [m for m in ('torch', 'tensorflow', 'transformers') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "usage: ducho" in result.stdout and "EXIT 0" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout

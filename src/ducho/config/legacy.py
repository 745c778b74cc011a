"""Translate config files written for the reference releases 1.0 and 2.0 into today's keys.

Every translation is returned as a note so the loader can log it once.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ConfigError
from .schema import MODALITIES, SOURCES

# canonical key -> older spellings, at each level of the file
TOP_ALIASES = {"device": ("gpu list", "gpu_list", "gpu")}
SOURCE_ALIASES = {"input_path": ("input_folder",), "output_path": ("output_folder",)}
MODEL_ALIASES = {"model_name": ("name",), "backend": ("framework",)}
BACKEND_SPELLINGS = {"sentence-transformers": "sentence_transformers", "sentencetransformers": "sentence_transformers",
                     "pytorch": "torch", "torchvision": "torch", "torchaudio": "torch", "tf": "tensorflow",
                     "keras": "tensorflow", "huggingface": "transformers"}
DROPPED_TOP_KEYS = ("model map",)  # 1.0: a path to a model map file that nothing reads any more

ALIASES = {old: new for table in (TOP_ALIASES, SOURCE_ALIASES, MODEL_ALIASES) for new, olds in table.items()
           for old in olds}


def spellings(key: str) -> tuple[str, ...]:
    """Every spelling of the key (canonical first) that means the same setting."""
    canonical = ALIASES.get(key, key)
    for table in (TOP_ALIASES, SOURCE_ALIASES, MODEL_ALIASES):
        if canonical in table:
            return (canonical, *table[canonical])
    return (canonical,)


def translate(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return a copy of `raw` in today's spelling and the notes describing what was translated."""
    data = copy.deepcopy(raw)
    notes: list[str] = []
    _rename(data, TOP_ALIASES, "", [])  # the device note below says what the gpu list became
    for key in DROPPED_TOP_KEYS:
        if key in data:
            notes.append(f"'{key}' is not used any more and was ignored")
            del data[key]
    if "device" in data:
        data["device"], fallback, note = _device_from_gpu_list(data["device"])
        if note:
            notes.append(note)
        if fallback:
            data.setdefault("device_fallback_to_cpu", True)
    for modality in MODALITIES:
        section = data.get(modality)
        if not isinstance(section, dict):
            continue
        for source in SOURCES:
            block = section.get(source)
            if isinstance(block, dict):
                _translate_source(block, f"{modality}.{source}", modality, source, notes)
    return data, notes


def models_as_lists(raw: dict[str, Any]) -> None:
    """A source's `model: {...}` (one mapping) becomes a list of one, in place."""
    for section in raw.values():
        for block in section.values() if isinstance(section, dict) else ():
            if isinstance(block, dict) and isinstance(block.get("model"), dict):
                block["model"] = [block["model"]]


def _rename(block: dict, table: dict[str, tuple[str, ...]], where: str, notes: list[str]) -> None:
    for new, olds in table.items():
        for old in olds:
            if old not in block:
                continue
            if new in block:
                raise ConfigError(f"{where}{old} and {where}{new} are the same setting; keep one of them")
            block[new] = block.pop(old)
            notes.append(f"{where}{old} -> {where}{new}")


def _translate_source(block: dict, where: str, modality: str, source: str, notes: list[str]) -> None:
    _rename(block, SOURCE_ALIASES, f"{where}.", notes)
    if modality in ("textual", "visual_textual"):
        _translate_text_columns(block, where, source, notes)
    for index, model in enumerate(block.get("model") or []):
        if not isinstance(model, dict):
            continue
        prefix = f"{where}.model.{index}."
        _rename(model, MODEL_ALIASES, prefix, notes)
        backend = model.get("backend")
        if isinstance(backend, list) and len(backend) == 1:
            backend = model["backend"] = backend[0]
        if isinstance(backend, str) and backend.lower() in BACKEND_SPELLINGS:
            model["backend"] = BACKEND_SPELLINGS[backend.lower()]
            notes.append(f"{prefix}backend: {backend!r} -> {model['backend']!r}")


def _translate_text_columns(block: dict, where: str, source: str, notes: list[str]) -> None:
    if source == "interactions":
        if "interaction_columns" in block:  # 2.0: [user column, item column]
            columns = block.pop("interaction_columns")
            if not (isinstance(columns, list) and len(columns) == 2):
                raise ConfigError(f"{where}.interaction_columns: {columns!r} must be [user_column, item_column]")
            block.setdefault("user_column", columns[0])
            block.setdefault("item_column", columns[1])
            notes.append(f"{where}.interaction_columns -> user_column, item_column")
        if "interaction_column" in block:  # 1.0: names the TEXT column
            if "text_column" in block:
                raise ConfigError(f"{where}.interaction_column and text_column are the same setting; keep one")
            block["text_column"] = block.pop("interaction_column")
            notes.append(f"{where}.interaction_column (1.0: the review text column) -> text_column")
    elif "item_column" in block and "text_column" not in block:  # 1.0: item_column names the TEXT column
        block["text_column"] = block.pop("item_column")
        notes.append(f"{where}.item_column without text_column (1.0: the text column) -> text_column; "
                     "the item id is the first column")


def _device_from_gpu_list(value: Any) -> tuple[Any, bool, str | None]:
    """Map the reference `gpu list` (-1, 0, '1,2', [0, 1]) to a device; returns (device, fallback, note)."""
    if isinstance(value, str) and not value.replace(",", "").replace("-", "").replace(" ", "").isdigit():
        return value, False, None  # already a device name
    if isinstance(value, str):
        value = [int(v) for v in value.split(",") if v.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        return value, False, None
    gpus = [v for v in value if v >= 0]
    if not gpus:
        return "cpu", False, f"gpu list {value} -> device: cpu"
    note = f"gpu list {value} -> device: cuda:{gpus[0]} (runs on the CPU when no GPU is present)"
    if len(gpus) > 1:
        note += f"; only cuda:{gpus[0]} is used, one device per run"
    return f"cuda:{gpus[0]}", True, note

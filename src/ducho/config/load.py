"""Load a configuration: YAML file (or dict) + dotted overrides + legacy translation -> a validated Config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, bad_value, did_you_mean
from .legacy import models_as_lists, spellings, translate
from .schema import Config


def load_config(source: str | Path | Mapping[str, Any] | Config | None = None,
                overrides: Iterable[str] = ()) -> Config:
    """Build a Config from a YAML file or a mapping, applying `key.path=value` overrides.

    Raises ConfigError naming the key, the bad value, the accepted values and a did-you-mean.
    """
    if isinstance(source, Config):
        raw: dict[str, Any] = source.model_dump(exclude_unset=True)
    elif source is None:
        raw = {}
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raw = read_yaml(Path(source))
    models_as_lists(raw)  # before overrides, so `model.0.key=...` addresses a single `model: {...}`
    for item in overrides:
        apply_override(raw, item)
    data, notes = translate(raw)
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None
    object.__setattr__(config, "__ducho_notes__", tuple(notes))
    return config


def translation_notes(config: Config) -> tuple[str, ...]:
    """What load_config translated from the reference spellings (empty for today's files)."""
    return getattr(config, "__ducho_notes__", ())


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, not {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.0.c=value` (leading dashes allowed) into the key path and the YAML-typed value."""
    text = item.lstrip("-")
    if "=" not in text:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, value = text.split("=", 1)
    path = [part for part in key.strip().split(".")]
    if not key.strip() or any(not part for part in path):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return path, parsed


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set one override in place; list entries are addressed by index (`model.0.batch_size=64`)."""
    path, value = parse_override(item)
    node: Any = raw
    for depth, part in enumerate(path):
        where = ".".join(path[: depth + 1])
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise ConfigError(f"override {where}: {part!r} must be a list index (0..{len(node) - 1})")
            index = int(part)
            if not -len(node) <= index < len(node):
                raise ConfigError(f"override {where}: index {index} is out of range; the list has {len(node)} "
                                  f"entries (0..{len(node) - 1})")
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {where}: {'.'.join(path[:depth])} holds a value, not a section")
        present = [s for s in spellings(part) if s in node]
        key = present[0] if present else part
        if last:
            for other in present[1:]:
                del node[other]
            if key != part:
                del node[key]
            node[part] = value
        else:
            if key not in node or node[key] is None:
                node[key] = {}
            node = node[key]


def format_validation_error(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc) or "(top level)"
        kind = item["type"]
        value = item.get("input")
        if kind == "extra_forbidden":
            fields = _fields_at(loc[:-1])
            listed = ", ".join(fields)
            lines.append(f"- {key}: unknown key{did_you_mean(loc[-1], fields)}; accepted keys here: {listed}")
        elif kind == "literal_error":
            accepted = [a.strip().strip("'") for a in item["ctx"]["expected"].replace(" or ", ", ").split(",")]
            lines.append(f"- {bad_value(key, value, accepted)}")
        elif kind == "missing":
            lines.append(f"- {key}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"- {key}: {message} (got {value!r})")
    return "\n".join(lines)


def _fields_at(loc: list[str]) -> list[str]:
    """The keys accepted by the schema section at `loc` (list indexes skipped)."""
    model: type[BaseModel] = Config
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None

"""The configuration reference, generated from the pydantic schema (`ducho.config.schema`) and the reference-release
spellings (`ducho.config.legacy`): every key, its type, default, accepted values and description."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass

from annotated_types import Ge, Gt, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ducho.config import legacy, schema


@dataclass(frozen=True)
class Section:
    """One settings class and the config paths where it appears."""

    model: type[BaseModel]
    paths: tuple[str, ...]


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def sections(root: type[BaseModel] = schema.Config) -> list[Section]:
    """Every settings class reachable from `root`, in the order met, with the paths that lead to it."""
    paths: dict[type[BaseModel], list[str]] = {root: ["(top level)"]}
    queue = [(root, "")]
    while queue:
        model, prefix = queue.pop(0)
        for key, field in model.model_fields.items():
            is_list = typing.get_origin(field.annotation) is list
            path = f"{prefix}{key}" + ("[]" if is_list else "")
            for nested in _models_in(field.annotation):
                if nested not in paths:
                    paths[nested] = []
                    queue.append((nested, path + "."))
                paths[nested].append(path)
    return [Section(model, tuple(where)) for model, where in paths.items()]


def missing_descriptions(root: type[BaseModel] = schema.Config) -> list[str]:
    """`Class.key` of every reachable key without a description (the reference would leave it unexplained)."""
    return [f"{section.model.__name__}.{key}" for section in sections(root)
            for key, field in section.model.model_fields.items() if not (field.description or "").strip()]


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names)) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def _literals(annotation: object) -> list[object]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


def _bounds(field: FieldInfo) -> str:
    notes = []
    for item in field.metadata:
        if isinstance(item, Gt):
            notes.append(f"> {item.gt}")
        elif isinstance(item, Ge):
            notes.append(f">= {item.ge}")
        elif isinstance(item, MinLen):
            notes.append(f"at least {item.min_length}")
    for arg in typing.get_args(field.annotation) or (field.annotation,):
        for item in getattr(arg, "__metadata__", ()):
            if isinstance(item, Gt):
                notes.append(f"> {item.gt}")
    return ", ".join(dict.fromkeys(notes))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "`{}`" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "**required**"
    if isinstance(field.default, bool) or field.default is None:
        return f"`{str(field.default).lower().replace('none', 'null')}`"
    return f"`{field.default!r}`".replace("'", "")


def accepted(key: str, field: FieldInfo) -> str:
    values = _literals(field.annotation)
    if key == "device":
        values = list(schema.DEVICE_CHOICES)
    text = ", ".join(f"`{v}`" for v in values)
    bounds = _bounds(field)
    return "; ".join(part for part in (text, bounds) if part) or "-"


def spellings_of(key: str) -> str:
    older = legacy.spellings(key)[1:]
    return ", ".join(f"`{s}`" for s in older) or "-"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section_markdown(section: Section) -> str:
    model = section.model
    doc = " ".join((model.__doc__ or "").split())
    lines = [f"## {model.__name__}", "", f"Where: {', '.join(f'`{p}`' for p in section.paths)}", ""]
    if doc:
        lines += [doc, ""]
    lines += ["| key | type | default | accepted | description | reference spelling |",
              "|---|---|---|---|---|---|"]
    for key, field in model.model_fields.items():
        lines.append(f"| `{key}` | {_escape(_type_name(field.annotation))} | {_default(field)} | "
                     f"{_escape(accepted(key, field))} | {_escape(field.description or '')} | {spellings_of(key)} |")
    return "\n".join(lines) + "\n"


def legacy_markdown() -> str:
    rows = ["| reference key | today's key | level |", "|---|---|---|"]
    for level, table in (("top", legacy.TOP_ALIASES), ("source", legacy.SOURCE_ALIASES),
                         ("model", legacy.MODEL_ALIASES)):
        rows += [f"| `{old}` | `{new}` | {level} |" for new, olds in table.items() for old in olds]
    rows += [f"| `{key}` | (ignored, logged) | top |" for key in legacy.DROPPED_TOP_KEYS]
    backends = ["| reference backend | today's backend |", "|---|---|"]
    backends += [f"| `{old}` | `{new}` |" for old, new in legacy.BACKEND_SPELLINGS.items()]
    return "\n".join(["## Reference-release spellings", "",
                      "Configs written for the reference releases 1.0 and 2.0 load unchanged; each translation is "
                      "logged once. `gpu list` values (`-1`, `0`, `'1,2'`, `[0, 1]`) become `device: cpu` or "
                      "`cuda:N` (with `device_fallback_to_cpu: true`). Textual sources: 1.0's `item_column` "
                      "without `text_column` (and interactions' `interaction_column`) name the text column; 2.0's "
                      "`interaction_columns: [user, item]` become `user_column`, `item_column`; a model given as "
                      "one mapping becomes a list of one.", "", *rows, "", *backends]) + "\n"


def reference_markdown() -> str:
    """The whole configuration reference page."""
    head = ["# Configuration reference", "",
            "Generated from the schema (`src/ducho/config/schema.py`) when the docs are built: it cannot drift from "
            "the code. Unknown keys are errors; every error names the key, the bad value and the accepted values.",
            "", "Sections: " + ", ".join(f"[{s.model.__name__}](#{s.model.__name__.lower()})" for s in sections()),
            ""]
    return "\n".join(head) + "\n" + "\n".join(section_markdown(s) for s in sections()) + "\n" + legacy_markdown()


def every_key() -> list[str]:
    return [key for section in sections() for key in section.model.model_fields]

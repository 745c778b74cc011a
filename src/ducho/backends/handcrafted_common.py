"""What the handcrafted image and audio backends share: params checking, feature families as layers, the loader
that computes every requested family in a worker process, and the extractor shell around it.

A family is a named, fixed-length feature (its length depends only on the params, never on the input). The loader
returns, per record, a dict family -> float32 1-D array; `prepare` keeps the list and `forward` regroups it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config.schema import ModelSpec
from ..errors import ConfigError, ModelNotFoundError, bad_value, did_you_mean
from .base import Layer


@dataclass(frozen=True)
class Param:
    """An integer setting of `params`: its default and smallest accepted value."""

    default: int
    minimum: int
    doc: str


@dataclass(frozen=True)
class Family:
    """A feature family: its length from the params, how it is computed from a decoded record, the library call."""

    size: Callable[[Mapping[str, int]], int]
    compute: Callable[[Any, Mapping[str, int]], np.ndarray]
    call: str


def read_params(given: Mapping[str, Any], accepted: Mapping[str, Param], what: str) -> dict[str, int]:
    """The params with defaults filled in; ConfigError for an unknown key or a value that is not a usable int."""
    names = sorted(accepted)
    for key in given:
        if key not in accepted:
            raise ConfigError(f"params: unknown key {key!r} for the {what} backend{did_you_mean(key, names)}; "
                              f"accepted: {', '.join(names)}")
    values = {}
    for key, param in accepted.items():
        value = given.get(key, param.default)
        if isinstance(value, bool) or not isinstance(value, int) or value < param.minimum:
            raise ConfigError(f"params.{key}: expected an integer >= {param.minimum} ({param.doc}), got {value!r}")
        values[key] = value
    return values


def choose_layers(requested: Sequence[str], families: Mapping[str, Family]) -> tuple[Layer, ...]:
    """One layer per requested family (every family when none is named), duplicates dropped."""
    names = list(dict.fromkeys(requested)) or list(families)
    for name in names:
        if name not in families:
            raise bad_value("output_layers", name, list(families), what="feature family")
    return tuple(Layer(name, name) for name in names)


def reject_unused(spec: ModelSpec, fields: Mapping[str, Any]) -> None:
    """ConfigError for spec keys that handcrafted features do not use (field -> the value meaning 'unset')."""
    used = [name for name, unset in fields.items() if getattr(spec, name, unset) != unset]
    if used:
        raise ConfigError(f"{', '.join(used)}: not used by the handcrafted backend (its settings go in params)")


def require(module: str, package: str) -> str:
    """The installed version of `package`; ModelNotFoundError when `module` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise ModelNotFoundError(f"the handcrafted backend needs {package} (pip install {package})")
    return importlib.metadata.version(package)


def compute_families(record: Any, names: Sequence[str], families: Mapping[str, Family],
                     params: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Every requested family of one decoded record, as float32 1-D arrays of the documented length."""
    out = {}
    for name in names:
        family = families[name]
        value = np.asarray(family.compute(record, params), dtype=np.float32).ravel()
        if value.shape != (family.size(params),):
            raise RuntimeError(f"{name}: computed {value.shape[0]} values, expected {family.size(params)}")
        out[name] = value
    return out


class HandcraftedExtractor:
    """The extractor shell: layers are families; the loader (set by subclasses) does all the work per record."""

    families: Mapping[str, Family]
    libraries: Mapping[str, str]

    def __init__(self, spec: ModelSpec, params: dict[str, int]) -> None:
        self.spec = spec
        self.params = params
        self.layers = choose_layers(spec.output_layers, self.families)
        self.loader: Callable[[Any], dict[str, np.ndarray]] | None = None

    def sort_key(self, payload: Any) -> int:
        return 0

    def prepare(self, items: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return list(items)

    def forward(self, batch: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
        return {layer.folder: [record[layer.name] for record in batch] for layer in self.layers}

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every family's length with these params."""
        return {name: (family.size(self.params),) for name, family in self.families.items()}

    def family_facts(self) -> dict[str, dict[str, Any]]:
        """The requested families with their length and library call, for the manifest."""
        return {layer.name: {"dimension": self.families[layer.name].size(self.params),
                             "call": self.families[layer.name].call} for layer in self.layers}

    def model_facts(self, kind: str) -> dict[str, Any]:
        return {"requested": self.spec.model_name, "backend": "handcrafted", "kind": kind,
                "families": self.family_facts(), "params": dict(self.params), "libraries": dict(self.libraries)}

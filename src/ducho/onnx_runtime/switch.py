"""The runtime switch: an extractor whose `run_graph` is replaced by an ONNX Runtime session after the first batch
has been checked (and, for `runtime: auto`, timed) against torch. Everything else is the extractor's own."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config.schema import ModelSpec
from ..errors import ConfigError, RunAbort
from . import cache
from .export import INT8, export_graph, key_parts, quantize_graph, versions
from .session import SessionRun

log = logging.getLogger("ducho")

FIDELITY = 1e-3
"""The largest difference between the fp32 ONNX graph's features and torch's on the first batch, relative to the
largest magnitude of the record's feature. Both compute in fp32 but sum in other orders and fuse other operators
(LayerNorm, GELU, Conv with its BatchNorm): measured 1e-7..1e-5 on ResNet-50, BERT-base, ViT and wav2vec2
(benchmarks/runtimes.py prints it). An export that went wrong (a traced size kept, a mask or the position ids
dropped) is off by the order of the values themselves (1e-1..1). 1e-3 leaves two orders of magnitude either side."""
AUTO_ROUNDS = 1  # runtime auto: timed passes of each runtime on the first batch, after the checking (warm-up) ones
COUNTERS = ("truncated",)  # per-batch counts an extractor keeps in forward; the extra passes must not add to them


def with_runtime(extractor: Any, spec: ModelSpec, device: str) -> Any:
    """The extractor as the spec's runtime runs it: itself for torch, wrapped by a RuntimeSwitch otherwise."""
    if spec.runtime == "torch":
        return extractor
    if not callable(getattr(extractor, "graph", None)):
        raise ConfigError(f"runtime: {spec.runtime!r} is not available for {type(extractor).__name__}; it is for the "
                          "torch vision and transformers backends; use runtime: torch")
    return RuntimeSwitch(extractor, spec, device)


class RuntimeSwitch:
    """Runs the wrapped extractor; on the first batch: torch (the reference), the exported graph (found in the cache
    or exported), the check, the int8 graph and its cosine, and for `auto` the timing; then the chosen runtime."""

    def __init__(self, inner: Any, spec: ModelSpec, device: str) -> None:
        self.inner = inner
        self.spec = spec
        self.device = device
        self.torch_run: Callable[[dict[str, Any]], dict[str, Any]] = inner.run_graph
        self.used: str | None = None
        self.facts: dict[str, Any] = {"requested": spec.runtime, "quantize": spec.quantize,
                                      "used": "decided on the first batch"}

    def __getattr__(self, name: str) -> Any:  # layers, loader, prepare, sort_key, layer_shapes...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def forward(self, batch: Any) -> dict[str, Sequence[np.ndarray]]:
        if self.used is None:
            return self._first(batch)
        return self.inner.forward(batch)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "runtime": self.facts}

    # -- the first batch ------------------------------------------------------------------------------------------

    def _first(self, batch: Any) -> dict[str, Sequence[np.ndarray]]:
        feeds: list[dict[str, Any]] = []

        def recording(feed: dict[str, Any]) -> dict[str, Any]:
            if not feeds:
                feeds.append(feed)
            return self.torch_run(feed)

        reference, torch_seconds = self._pass(batch, recording, count=True)
        graph = self.inner.graph(tuple(feeds[0]))
        entry = self._entry(graph, feeds[0])
        run = SessionRun(entry.graph, self.device)
        got, onnx_seconds = self._pass(batch, run)
        absolute, relative = differences(reference, got)
        self.facts.update({"graph": str(entry.graph), "graph_sha256": entry.sha256, "exported": entry.built,
                           "check": {"records": _records(reference), "max_abs_diff": absolute,
                                     "max_rel_diff": relative, "tolerance_rel": FIDELITY}})
        log.info("runtime onnx: %s %s; first batch vs torch: max abs diff %.3g (%.3g of the largest value)",
                 "exported to" if entry.built else "found in the cache:", entry.folder, absolute, relative)
        if not relative <= FIDELITY:
            raise RunAbort(f"runtime onnx: the exported graph of {self.spec.model_name} disagrees with torch on the "
                           f"first batch: max abs diff {absolute:.3g}, {relative:.3g} of the largest value (tolerance "
                           f"{FIDELITY:g}); the run stopped. Use runtime: torch (graph: {entry.graph})")
        if self.spec.quantize == "int8":
            entry, run, got, onnx_seconds = self._int8(entry, batch, reference)
        chosen, output = "onnx", got
        if self.spec.runtime == "auto":
            chosen = self._measure(batch, run, torch_seconds, onnx_seconds)
            output = reference if chosen == "torch" else got
        self.used = chosen
        self.facts["used"] = "onnxruntime" + (" int8" if self.spec.quantize == "int8" else "") \
            if chosen == "onnx" else "torch"
        if chosen == "onnx":
            self.inner.run_graph = run
        else:
            vars(self.inner).pop("run_graph", None)
        return output

    def _pass(self, batch: Any, run: Callable[[dict[str, Any]], dict[str, Any]],
              count: bool = False) -> tuple[Any, float]:
        """The extractor's forward on `batch` with `run` as its model step, and its seconds; only a pass that
        `count`s adds to the extractor's counters (truncated texts)."""
        counts = {} if count else {name: getattr(self.inner, name) for name in COUNTERS if hasattr(self.inner, name)}
        self.inner.run_graph = run
        started = time.perf_counter()
        try:
            return self.inner.forward(batch), time.perf_counter() - started
        finally:
            for name, value in counts.items():
                setattr(self.inner, name, value)

    def _entry(self, graph: Any, feed: dict[str, Any]) -> cache.Entry:
        key = cache.digest(key_parts(graph, feed))
        found = cache.lookup(key)
        if found is not None:
            return found
        started = time.perf_counter()
        entry = cache.store(key, lambda path: export_graph(graph, feed, path))
        log.info("runtime onnx: %s exported in %.1f s", self.spec.model_name, time.perf_counter() - started)
        return entry

    def _int8(self, fp32: cache.Entry, batch: Any, reference: Any) -> tuple[cache.Entry, SessionRun, Any, float]:
        """The quantized graph (cached under its own key), run on the first batch; refused below min_cosine."""
        key = cache.digest({"from": fp32.sha256, "quantize": INT8, "versions": versions()})
        entry = cache.lookup(key) or cache.store(key, lambda path: quantize_graph(fp32.graph, path))
        run = SessionRun(entry.graph, self.device)
        got, seconds = self._pass(batch, run)
        worst = min_cosine(reference, got)
        self.facts.update({"int8_graph": str(entry.graph), "int8_graph_sha256": entry.sha256,
                           "int8_cosine_min": worst, "min_cosine": self.spec.min_cosine})
        log.info("runtime onnx, quantize int8: cosine to the fp32 torch vectors on the first batch: min %.5f "
                 "(floor %g)", worst, self.spec.min_cosine)
        if not worst >= self.spec.min_cosine:
            raise RunAbort(f"quantize int8: the int8 vectors of {self.spec.model_name} are too far from the fp32 "
                           f"torch ones on the first batch: min cosine {worst:.5f} < min_cosine "
                           f"{self.spec.min_cosine}; the run stopped. Use quantize: none, or lower min_cosine")
        return entry, run, got, seconds

    def _measure(self, batch: Any, run: SessionRun, torch_first: float, onnx_first: float) -> str:
        """runtime auto: both runtimes timed again on the first batch (the checking passes warmed them up); the
        faster by its best time is kept."""
        torch_best, onnx_best = math.inf, math.inf
        for _ in range(AUTO_ROUNDS):
            torch_best = min(torch_best, self._pass(batch, self.torch_run)[1])
            onnx_best = min(onnx_best, self._pass(batch, run)[1])
        chosen = "onnx" if onnx_best < torch_best else "torch"
        self.facts["auto"] = {"torch_seconds": torch_best, "onnx_seconds": onnx_best, "rounds": AUTO_ROUNDS,
                              "first_pass_seconds": {"torch": torch_first, "onnx": onnx_first}}
        log.info("runtime auto: %s per first batch: torch %.3f s, onnx%s %.3f s -> %s", self.spec.model_name,
                 torch_best, " int8" if self.spec.quantize == "int8" else "", onnx_best, chosen)
        return chosen


def _records(outputs: dict[str, Sequence[np.ndarray]]) -> int:
    return len(next(iter(outputs.values()), []))


def differences(reference: dict[str, Sequence[np.ndarray]], got: dict[str, Sequence[np.ndarray]],
                ) -> tuple[float, float]:
    """Largest absolute difference, and largest difference relative to the record's largest magnitude."""
    absolute = relative = 0.0
    for folder, arrays in reference.items():
        for expected, value in zip(arrays, got[folder], strict=True):
            expected, value = np.asarray(expected, np.float64), np.asarray(value, np.float64)
            if expected.shape != value.shape:
                return math.inf, math.inf
            diff = float(np.abs(expected - value).max(initial=0.0))
            absolute = max(absolute, diff)
            relative = max(relative, diff / max(float(np.abs(expected).max(initial=0.0)), 1e-12))
    return absolute, relative


def min_cosine(reference: dict[str, Sequence[np.ndarray]], got: dict[str, Sequence[np.ndarray]]) -> float:
    """The least cosine between a record's two vectors (flattened), over records and layers."""
    worst = 1.0
    for folder, arrays in reference.items():
        for expected, value in zip(arrays, got[folder], strict=True):
            a, b = np.asarray(expected, np.float64).ravel(), np.asarray(value, np.float64).ravel()
            norms = float(np.linalg.norm(a) * np.linalg.norm(b))
            worst = min(worst, float(a @ b) / norms if norms > 0 else float(np.array_equal(a, b)))
    return worst

"""The runtime switch: an extractor whose `run_graph` is replaced by an ONNX Runtime session once the first batch has
checked the exported graph against torch (and, for `runtime: auto`, once the first batches have timed both).
Everything else is the extractor's own.

The first batch costs little beyond its own forward: torch runs only a few rows of it (CHECK_ROWS, spread over the
batch so that a text batch's long and short, padded, records are both among them), the graph the same rows, the check
compares the features these rows give; then the graph runs the other rows, and the batch's features are the graph's.
`auto` runs the second batch on torch and the third on ONNX Runtime again, times the three, and keeps the faster per
input element for the rest (both had run on the check's rows first, so neither pays its warm-up in the timing; in a
text run, sorted longest first, ONNX's batches 1 and 3 bracket torch's batch 2); while the two are within AUTO_MARGIN,
it times one more batch of each."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..config.schema import ModelSpec
from ..errors import ConfigError, RunAbort
from . import cache
from .export import export_graph, int8_recipes, key_parts, quantize_graph, versions
from .session import SessionRun

log = logging.getLogger("ducho")

FIDELITY = 1e-3
"""The largest difference between the fp32 ONNX graph's features and torch's on the first batch's checked rows,
relative to the largest magnitude of the record's feature. Both compute in fp32 but sum in other orders and fuse
other operators (LayerNorm, GELU, Conv with its BatchNorm): measured 1e-7..1e-5 on ResNet-50, BERT-base, ViT and
wav2vec2 (benchmarks/runtimes.py prints it). An export that went wrong (a traced size kept, a mask or the position
ids dropped) is off by the order of the values themselves (1e-1..1). 1e-3 leaves two orders of magnitude either side."""
CHECK_ROWS = 4
"""Rows of the first batch run by torch for the fp32 check. An export error is systematic (every record, or every
padded record: hence rows spread from the first to the last, longest to shortest in a text batch), not a rare
record's; a few rows find it at a fraction of a torch batch."""
INT8_ROWS = 8
"""Rows for the int8 cosine, whose least value over records is the statistic: more rows than the fp32 check."""
AUTO_MARGIN = 0.15
"""runtime auto: while the runtimes' times per input element are within 15% of each other, both are timed on one more
batch each (a single batch's time varies by that much on a machine with other work)."""
AUTO_ROUNDS = 3  # runtime auto: torch batches timed at most
COUNTERS = ("truncated",)  # per-batch counts an extractor keeps in forward; only one pass a batch may add to them

Run = Callable[[dict[str, Any]], dict[str, Any]]


def with_runtime(extractor: Any, spec: ModelSpec, device: str) -> Any:
    """The extractor as the spec's runtime runs it: itself for torch, wrapped by a RuntimeSwitch otherwise."""
    if spec.runtime == "torch":
        return extractor
    if not callable(getattr(extractor, "graph", None)):
        raise ConfigError(f"runtime: {spec.runtime!r} is not available for {type(extractor).__name__}; it is for the "
                          "torch vision and transformers backends; use runtime: torch")
    return RuntimeSwitch(extractor, spec, device)


def spread(count: int, rows: int) -> list[int]:
    """`rows` row indices from the first to the last of `count` (all of them when fewer)."""
    return sorted({int(round(n)) for n in np.linspace(0, count - 1, min(rows, count))})


class OnRows:
    """`run` on a few spread rows of each feed; the other rows of its outputs are zeros (features compared only where
    every pass has the same rows: the zeros give equal features). Each call's rows and outputs are kept, so that the
    batch's own pass (`rest`) runs only the other rows."""

    def __init__(self, run: Run, rows: int) -> None:
        self.run = run
        self.rows = rows
        self.calls: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def __call__(self, feed: dict[str, Any]) -> dict[str, Any]:
        index = torch.tensor(spread(batch_size(feed), self.rows))
        part = self.run(take(feed, index))
        self.calls.append((index, part))
        return scatter(batch_size(feed), [(index, part)])

    def rest(self, run: Run) -> Run:
        """The model step that gives whole outputs, call by call: these rows as they ran, `run` on the others."""
        calls = iter(self.calls)

        def step(feed: dict[str, Any]) -> dict[str, Any]:
            index, part = next(calls)
            others = torch.tensor(sorted(set(range(batch_size(feed))) - set(index.tolist())), dtype=torch.long)
            pieces = [(index, part)] + ([(others, run(take(feed, others)))] if len(others) else [])
            return scatter(batch_size(feed), pieces)

        return step


def batch_size(feed: dict[str, Any]) -> int:
    return len(next(iter(feed.values())))


def take(feed: dict[str, Any], index: torch.Tensor) -> dict[str, Any]:
    return {name: value.index_select(0, index.to(value.device)) for name, value in feed.items()}


def scatter(count: int, pieces: list[tuple[torch.Tensor, dict[str, Any]]]) -> dict[str, Any]:
    """Outputs of `count` rows from pieces of (row indices, outputs of those rows); rows no piece has are zeros."""
    full = {}
    for name, value in pieces[0][1].items():
        filled = value.new_zeros((count, *value.shape[1:]))
        for index, part in pieces:
            filled[index.to(value.device)] = part[name].to(value.device)
        full[name] = filled
    return full


class Timed:
    """A model step that adds up its seconds and its input elements (batch x tokens, pixels or samples) over the
    batches it ran in (`batch`: the number, from 1, of the one it runs in now)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.batch = 0
        self.batches: list[int] = []
        self.seconds = 0.0
        self.elements = 0

    def __call__(self, feed: dict[str, Any]) -> dict[str, Any]:
        if self.batch not in self.batches:
            self.batches.append(self.batch)
        started = time.perf_counter()
        outputs = self.run(feed)
        self.seconds += time.perf_counter() - started
        self.elements += sum(int(value.numel()) for value in feed.values())
        return outputs

    @property
    def rate(self) -> float:
        """Seconds per input element."""
        return self.seconds / max(self.elements, 1)

    def describe(self) -> dict[str, Any]:
        return {"batches": self.batches, "seconds": self.seconds, "input_elements": self.elements}


class RuntimeSwitch:
    """Runs the wrapped extractor; on the first batch: torch on a few rows (the reference), the exported graph (found
    in the cache or exported) on the same rows, the check, the int8 graph and its cosine, then the graph on the whole
    batch; for `auto` torch on the second batch and ONNX on the third, timed; then the faster."""

    def __init__(self, inner: Any, spec: ModelSpec, device: str) -> None:
        self.inner = inner
        self.spec = spec
        self.device = device
        self.torch_run: Run = inner.run_graph
        self.stage = "first"
        self.batch = 0  # batches run so far
        self.torch = Timed(self.torch_run)
        self.onnx: Timed | None = None  # the ONNX Runtime step, from the first batch on
        self.facts: dict[str, Any] = {"requested": spec.runtime, "quantize": spec.quantize,
                                      "used": "decided on the first batch"}

    def __getattr__(self, name: str) -> Any:  # layers, loader, prepare, sort_key, layer_shapes...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def forward(self, batch: Any) -> dict[str, Sequence[np.ndarray]]:
        if self.stage == "first":
            return self._first(batch)
        if self.stage.startswith("time"):
            return self._time(batch)
        return self.inner.forward(batch)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "runtime": self.facts}

    @property
    def onnx_name(self) -> str:
        return "onnxruntime" + (" int8" if self.spec.quantize == "int8" else "")

    # -- the first batch ------------------------------------------------------------------------------------------

    def _first(self, batch: Any) -> dict[str, Sequence[np.ndarray]]:
        rows = INT8_ROWS if self.spec.quantize == "int8" else CHECK_ROWS
        feeds: list[dict[str, Any]] = []

        def reference(feed: dict[str, Any]) -> dict[str, Any]:
            feeds.append(feed)
            return self.torch_run(feed)

        expected = self._pass(batch, OnRows(reference, rows), count=True)
        graph = self.inner.graph(tuple(feeds[0]))
        entry = self._entry(graph, feeds[0])
        run = self._session(entry)
        checked = OnRows(run, rows)
        got = self._pass(batch, checked)
        absolute, relative = differences(expected, got)
        self.facts.update({"graph": str(entry.graph), "graph_sha256": entry.sha256, "exported": entry.built,
                           "fusion": entry.facts.get("fusion"), "session": run.describe(),
                           "check": {"rows": rows, "max_abs_diff": absolute, "max_rel_diff": relative,
                                     "tolerance_rel": FIDELITY}})
        log.info("runtime onnx: %s %s; first batch vs torch (%d rows): max abs diff %.3g (%.3g of the largest value)",
                 "exported to" if entry.built else "found in the cache:", entry.folder, rows, absolute, relative)
        if not relative <= FIDELITY:
            raise RunAbort(f"runtime onnx: the exported graph of {self.spec.model_name} disagrees with torch on the "
                           f"first batch: max abs diff {absolute:.3g}, {relative:.3g} of the largest value (tolerance "
                           f"{FIDELITY:g}); the run stopped. Use runtime: torch (graph: {entry.graph})")
        if self.spec.quantize == "int8":
            run, checked = self._int8(entry, run, feeds, batch, expected, rows)
        self.onnx = Timed(run)
        self.onnx.batch = self.batch = 1
        output = self._pass(batch, checked.rest(self.onnx))  # the checked rows as they ran, the graph on the others
        self.inner.run_graph = run
        if self.spec.runtime == "auto":
            self.stage = "time torch"
            self.facts["used"] = f"{self.onnx_name} on batch 1 (the run ended before auto decided)"
        else:
            self.stage = "chosen"
            self.facts["used"] = self.onnx_name
        return output

    def _pass(self, batch: Any, run: Run, count: bool = False) -> Any:
        """The extractor's forward on `batch` with `run` as its model step; only a pass that `count`s adds to the
        extractor's counters (truncated texts)."""
        counts = {} if count else {name: getattr(self.inner, name) for name in COUNTERS if hasattr(self.inner, name)}
        self.inner.run_graph = run
        try:
            return self.inner.forward(batch)
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

    def _session(self, entry: cache.Entry) -> SessionRun:
        try:
            return SessionRun(entry.graph, self.device)
        except Exception as error:  # a graph ONNX Runtime cannot load: the run's problem, not the batch's
            raise RunAbort(f"runtime onnx: ONNX Runtime could not load {entry.graph} ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:300]}); use runtime: torch") from error

    def _quantize(self, key: str, fp32: cache.Entry, recipe: dict[str, Any], feeds: list[dict[str, Any]],
                  ) -> cache.Entry:
        started = time.perf_counter()
        try:
            entry = cache.store(key, lambda path: quantize_graph(fp32.graph, path, recipe, feeds))
        except Exception as error:
            raise RunAbort(f"quantize int8: {self.spec.model_name} could not be quantized ({describe_recipe(recipe)}; "
                           f"{type(error).__name__}: {str(error).splitlines()[0][:300]}); use quantize: none"
                           ) from error
        log.info("runtime onnx: %s quantized (%s) in %.1f s", self.spec.model_name, describe_recipe(recipe),
                 time.perf_counter() - started)
        return entry

    def _int8(self, fp32: cache.Entry, fp32_run: SessionRun, feeds: list[dict[str, Any]], batch: Any,
              expected: Any, rows: int) -> tuple[SessionRun, OnRows]:
        """The first int8 graph (INT8_RECIPES, fastest first; cached each under its own key) whose cosine to the
        torch vectors on the checked rows reaches min_cosine; the run stops when none does."""
        tried = []
        for recipe in int8_recipes(fp32.graph):
            key = cache.digest({"from": fp32.sha256, "quantize": recipe, "versions": versions()})
            entry = cache.lookup(key) or self._quantize(key, fp32, recipe, [fp32_run.arrays(f) for f in feeds])
            run = self._session(entry)
            checked = OnRows(run, rows)
            worst = min_cosine(expected, self._pass(batch, checked))
            tried.append({**entry.facts, "graph": str(entry.graph), "graph_sha256": entry.sha256,
                          "cosine_min": worst})
            log.info("runtime onnx, quantize int8 (%s): cosine to the fp32 torch vectors on the first batch's %d rows: "
                     "min %.5f (floor %g)", describe_recipe(recipe), rows, worst, self.spec.min_cosine)
            if worst >= self.spec.min_cosine:
                self.facts.update({"int8_graph": str(entry.graph), "int8_graph_sha256": entry.sha256,
                                   "int8_cosine_min": worst, "min_cosine": self.spec.min_cosine,
                                   "int8": entry.facts, "int8_tried": tried})
                return run, checked
        best = max(tried, key=lambda t: t["cosine_min"])["cosine_min"]
        raise RunAbort(f"quantize int8: the int8 vectors of {self.spec.model_name} are too far from the fp32 torch "
                       f"ones on the first batch: min cosine {best:.5f} < min_cosine {self.spec.min_cosine} (tried: "
                       f"{'; '.join(describe_recipe(t) for t in tried)}); the run stopped. Use quantize: none, or "
                       "lower min_cosine")

    # -- runtime auto ---------------------------------------------------------------------------------------------

    def _time(self, batch: Any) -> dict[str, Sequence[np.ndarray]]:
        """runtime auto: even batches on torch, odd ones on ONNX Runtime, timed, until one is faster per input element
        by more than AUTO_MARGIN or AUTO_ROUNDS torch batches are timed; then the faster. (ONNX's batches bracket
        torch's in a text run sorted longest first; while the two are that close, either costs the same.)"""
        onnx = self.onnx
        assert onnx is not None
        self.batch += 1
        timed = self.torch if self.stage == "time torch" else onnx
        timed.batch = self.batch
        output = self._pass(batch, timed, count=True)
        ratio = onnx.rate / self.torch.rate if self.torch.rate > 0 else math.inf
        self.facts["auto"] = {"onnx": onnx.describe(), "torch": self.torch.describe(), "onnx_time_vs_torch": ratio}
        if self.stage == "time torch":
            self.stage = "time onnx"
            self.facts["used"] = f"{self.onnx_name} on odd batches, torch on even ones (the run ended before auto " \
                                 "decided)"
            return output
        if abs(math.log(ratio)) < math.log(1 + AUTO_MARGIN) and len(self.torch.batches) < AUTO_ROUNDS:
            self.stage = "time torch"
            return output
        chosen = self.onnx_name if ratio < 1 else "torch"
        self.facts["used"] = chosen
        log.info("runtime auto: %s: %s %.3f s on batches %s, torch %.3f s on batches %s; per input element %s takes "
                 "%.2f of torch's time -> %s", self.spec.model_name, self.onnx_name, onnx.seconds, onnx.batches,
                 self.torch.seconds, self.torch.batches, self.onnx_name, ratio, chosen)
        if chosen == "torch":
            vars(self.inner).pop("run_graph", None)
        else:
            self.inner.run_graph = onnx.run
        self.stage = "chosen"
        return output


def describe_recipe(recipe: dict[str, Any]) -> str:
    """`static QDQ`, `dynamic MatMul+Attention, fp32 after_activation`... for the log and the error."""
    kept = recipe.get("fp32", "none")
    return " ".join([recipe["method"], *(["+".join(recipe["op_types"])] if "op_types" in recipe else [])]) + \
        (f", fp32 {kept}" if kept != "none" else "")


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

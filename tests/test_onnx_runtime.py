"""`runtime: onnx | auto` and `quantize: int8`: the exported graph gives the torch features through `ducho.run` for
every modality (several layers of one graph, batch sizes 1/3/32), the cache is reused and repaired, a graph that
disagrees stops the run, and the manifest says what ran. Tiny models of the real architectures keep it cheap."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import ducho
from conftest import TEXTS, write_tsv
from ducho.errors import ConfigError, RunAbort
from test_onnx import photos

TOL = 1e-4  # features of the fp32 graph vs torch, absolute (tiny models: values of order 1)
STEMS = [f"i{n:02d}" for n in range(len(TEXTS))]
TEXT_LAYERS = ["last_hidden_state", "hidden_states.1", "pooler_output"]


def tiny_resnet() -> torch.nn.Module:
    """A user's own module (`model_name: test_onnx_runtime:tiny_resnet`): torchvision's ResNet, one block a stage."""
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1])


@pytest.fixture(autouse=True)
def graph_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One cache for the module (so later tests find earlier exports), outside the user's home."""
    root = tmp_path_factory.getbasetemp() / "ducho-cache"
    monkeypatch.setenv("DUCHO_CACHE", str(root))
    return root / "onnx"


def run_text(root: Path, model: Path, **spec: object) -> ducho.RunResult:
    write_tsv(root / "items.tsv", ["item_id", "description"], [[s, t] for s, t in zip(STEMS, TEXTS, strict=True)])
    model_spec = {"model_name": str(model), "backend": "transformers", "output_layers": TEXT_LAYERS, **spec}
    return ducho.run({"dataset_path": str(root), "device": "cpu", "textual": {"items": {
        "input_path": "items.tsv", "output_path": "out", "model": [model_spec]}}}, progress=False)


def features(result: ducho.RunResult, layer: str, stems: list[str]) -> np.ndarray:
    return np.stack([np.load(result.jobs[0].output_dir / layer / f"{s}.npy") for s in stems])


def manifest(result: ducho.RunResult, layer: str) -> dict:
    return json.loads((result.jobs[0].output_dir / layer / "manifest.json").read_text())


def test_text_layers_and_batch_sizes_match_torch(tmp_path: Path, tiny_bert: Path, graph_cache: Path) -> None:
    reference = run_text(tmp_path / "torch", tiny_bert, batch_size=4)
    runs = {size: run_text(tmp_path / f"onnx{size}", tiny_bert, batch_size=size, runtime="onnx") for size in (1, 3, 32)}
    for size, result in runs.items():
        for layer in TEXT_LAYERS:
            expected, got = features(reference, layer, STEMS), features(result, layer, STEMS)
            assert got.shape == expected.shape and np.abs(got - expected).max() < TOL, (size, layer)
    facts = [manifest(result, "pooler_output")["runtime"] for result in runs.values()]
    assert [f["used"] for f in facts] == ["onnxruntime"] * 3
    assert [f["exported"] for f in facts] == [True, False, False]  # one graph for every batch size and length
    assert len({f["graph_sha256"] for f in facts}) == 1 and facts[0]["check"]["max_abs_diff"] < TOL
    assert facts[0]["fusion"]["fused"]["Attention"] == 2  # tiny BERT's two layers, exported eager and fused
    truncated = manifest(reference, "last_hidden_state")["truncated_texts"]
    assert truncated == 1 and manifest(runs[3], "last_hidden_state")["truncated_texts"] == truncated  # counted once


def test_cache_reused_then_rebuilt_when_damaged(tmp_path: Path, tiny_bert: Path, graph_cache: Path) -> None:
    first = manifest(run_text(tmp_path / "a", tiny_bert, runtime="onnx"), "pooler_output")["runtime"]
    graph = Path(first["graph"])
    before = (graph.read_bytes(), graph.stat().st_mtime_ns)
    again = manifest(run_text(tmp_path / "b", tiny_bert, runtime="onnx"), "pooler_output")["runtime"]
    assert not again["exported"] and (graph.read_bytes(), graph.stat().st_mtime_ns) == before
    graph.write_bytes(before[0][:-100])  # a damaged entry: its sha256 no longer matches
    rebuilt = manifest(run_text(tmp_path / "c", tiny_bert, runtime="onnx"), "pooler_output")["runtime"]
    assert rebuilt["exported"] and Path(rebuilt["graph"]) == graph
    assert graph.read_bytes() != before[0][:-100] and not list(graph_cache.glob(".t*"))


def test_failed_export_leaves_no_entry(tmp_path: Path, tiny_bert: Path, graph_cache: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho.onnx_runtime import switch

    def half_written(graph: object, feed: object, path: Path) -> dict:
        path.write_bytes(b"half a graph")
        raise RunAbort("killed mid-export")

    monkeypatch.setattr(switch, "export_graph", half_written)
    before = set(graph_cache.iterdir()) if graph_cache.exists() else set()
    with pytest.raises(RunAbort, match="killed mid-export"):
        run_text(tmp_path, tiny_bert, runtime="onnx", output_layers=["hidden_states.2"])
    assert set(graph_cache.iterdir()) == before  # neither the entry nor its temporary folder


def test_disagreeing_graph_stops_the_run(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho.onnx_runtime import session

    original = session.SessionRun.__call__
    monkeypatch.setattr(session.SessionRun, "__call__", lambda self, feed: {
        name: value + 0.1 for name, value in original(self, feed).items()})
    with pytest.raises(RunAbort, match=r"disagrees with torch on the first batch.*tolerance 0.001.*runtime: torch"):
        run_text(tmp_path, tiny_bert, runtime="onnx")
    assert not list((tmp_path / "out").rglob("*.npy"))


def test_int8_cosine_recorded_and_floor(tmp_path: Path, tiny_bert: Path) -> None:
    result = run_text(tmp_path / "a", tiny_bert, runtime="onnx", quantize="int8", min_cosine=0.9)
    facts = manifest(result, "last_hidden_state")["runtime"]
    reference = features(run_text(tmp_path / "t", tiny_bert), "last_hidden_state", STEMS)
    got = features(result, "last_hidden_state", STEMS)
    cosine = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert facts["used"] == "onnxruntime int8" and 0.9 <= facts["int8_cosine_min"] < 1.0
    assert cosine.min() > 0.9 and np.abs(got - reference).max() > TOL  # int8 indeed, and close
    with pytest.raises(RunAbort, match=r"min cosine 0\.9\d+ < min_cosine 0\.99999"):
        run_text(tmp_path / "b", tiny_bert, runtime="onnx", quantize="int8", min_cosine=0.99999)


def test_int8_falls_back_to_the_next_recipe(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho.onnx_runtime import switch

    cosines: list[float] = []
    real = switch.min_cosine

    def first_too_far(reference: dict, got: dict) -> float:
        cosines.append(real(reference, got))
        return 0.5 if len(cosines) == 1 else cosines[-1]

    monkeypatch.setattr(switch, "min_cosine", first_too_far)
    facts = manifest(run_text(tmp_path, tiny_bert, runtime="onnx", quantize="int8", min_cosine=0.9),
                     "pooler_output")["runtime"]
    tried = facts["int8_tried"]
    assert [(t["op_types"], t["fp32"]) for t in tried] == [(["MatMul", "Attention"], "none"),
                                                           (["MatMul", "Attention"], "after_activation")]
    assert tried[0]["cosine_min"] == 0.5
    assert tried[1]["fp32_nodes"] == 2  # tiny BERT: two layers, one FFN output projection each
    assert facts["int8_graph_sha256"] == tried[1]["graph_sha256"] != tried[0]["graph_sha256"]
    assert facts["int8_cosine_min"] == cosines[1] >= 0.9


def test_auto_times_both_and_keeps_one(tmp_path: Path, tiny_bert: Path) -> None:
    reference = run_text(tmp_path / "t", tiny_bert)
    result = run_text(tmp_path / "a", tiny_bert, runtime="auto", batch_size=5)
    facts = manifest(result, "pooler_output")["runtime"]
    auto = facts["auto"]
    assert (auto["onnx"]["batches"], auto["torch"]["batches"]) == ([1, 3], [2])  # batch 1: 5 rows, 4 checked
    rates = [auto[name]["seconds"] / auto[name]["input_elements"] for name in ("onnx", "torch")]
    assert min(rates) > 0 and auto["onnx_time_vs_torch"] == pytest.approx(rates[0] / rates[1])
    assert facts["used"] == ("onnxruntime" if rates[0] < rates[1] else "torch")
    for layer in TEXT_LAYERS:
        assert np.abs(features(result, layer, STEMS) - features(reference, layer, STEMS)).max() < TOL


def counting(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> dict[str, list[int]]:
    """Rows per call of torch's model step and of the ONNX session's, in call order (the session's delayed)."""
    from ducho.backends.hf_text import TransformersText
    from ducho.onnx_runtime import session

    calls: dict[str, list[int]] = {"torch": [], "onnx": []}
    torch_run, onnx_run = TransformersText.run_graph, session.SessionRun.__call__

    def torch_step(self: object, feed: dict) -> dict:
        calls["torch"].append(len(feed["input_ids"]))
        return torch_run(self, feed)

    def onnx_step(self: object, feed: dict) -> dict:
        calls["onnx"].append(len(feed["input_ids"]))
        time.sleep(delay)
        return onnx_run(self, feed)

    monkeypatch.setattr(TransformersText, "run_graph", torch_step)
    monkeypatch.setattr(session.SessionRun, "__call__", onnx_step)
    return calls


def test_first_batch_runs_torch_on_a_few_rows_only(tmp_path: Path, tiny_bert: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    result = run_text(tmp_path, tiny_bert, runtime="onnx", batch_size=len(TEXTS))
    # the check's rows, then the others (the texts of each padded length in a batch of their own)
    assert calls["torch"] == [4] and calls["onnx"][0] == 4 and len(calls["onnx"]) > 1
    assert manifest(result, "pooler_output")["runtime"]["check"]["rows"] == 4


def test_auto_times_more_batches_while_close(tmp_path: Path, tiny_bert: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho.onnx_runtime import switch

    monkeypatch.setattr(switch, "AUTO_MARGIN", 1e6)  # every timing "close": alternate up to AUTO_ROUNDS torch batches
    facts = manifest(run_text(tmp_path, tiny_bert, runtime="auto", batch_size=1), "pooler_output")["runtime"]
    auto = facts["auto"]
    assert (auto["onnx"]["batches"], auto["torch"]["batches"]) == ([3, 5, 7], [2, 4, 6])  # batch 1: its one row checked
    assert facts["used"] == ("onnxruntime" if auto["onnx_time_vs_torch"] < 1 else "torch")


def test_auto_keeps_torch_when_onnx_is_slower(tmp_path: Path, tiny_bert: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reference = run_text(tmp_path / "t", tiny_bert, batch_size=3)
    calls = counting(monkeypatch, delay=0.5)
    result = run_text(tmp_path / "a", tiny_bert, runtime="auto", batch_size=3)
    facts = manifest(result, "pooler_output")["runtime"]
    assert facts["used"] == "torch" and facts["auto"]["onnx_time_vs_torch"] > 1
    # batch 1: all checked rows; 2: torch; 3: ONNX; then torch (every batch filled up to 3 rows)
    assert calls["onnx"] == [3, 3] and set(calls["torch"]) == {3} and len(calls["torch"]) >= 3
    assert facts["auto"]["onnx"]["batches"] == [3] and facts["auto"]["torch"]["batches"] == [2]
    for layer in TEXT_LAYERS:
        assert np.abs(features(result, layer, STEMS) - features(reference, layer, STEMS)).max() < TOL


def visual_run(root: Path, **spec: object) -> ducho.RunResult:
    photos(root / "images", 5)
    model = {"batch_size": 3, **spec}
    return ducho.run({"dataset_path": str(root), "device": "cpu", "workers": 0, "visual": {"items": {
        "input_path": "images", "output_path": "out", "model": [model]}}}, progress=False)


@pytest.mark.parametrize("spec", [
    {"model_name": "test_onnx_runtime:tiny_resnet", "backend": "torch", "reshape": [64, 64],
     "output_layers": ["avgpool", "layer2"]},
    {"backend": "transformers", "output_layers": ["pooler_output", "hidden_states.1"], "pooling": "none"},
], ids=["resnet-user-module", "vit"])
def test_vision_layers_match_torch(tmp_path: Path, tiny_vit: Path, spec: dict) -> None:
    spec = {"model_name": str(tiny_vit), **spec}
    reference = visual_run(tmp_path / "t", **spec)
    result = visual_run(tmp_path / "o", runtime="onnx", **spec)
    stems = [f"p{n}" for n in range(5)]
    shapes = []
    for layer in spec["output_layers"]:
        expected, got = features(reference, layer, stems), features(result, layer, stems)
        assert got.shape == expected.shape and np.abs(got - expected).max() < TOL, layer
        shapes.append(got.shape[1:])
    assert len(shapes[1]) >= 2  # the second layer is spatial (channels, h, w) or tokens (steps, width)
    facts = manifest(result, spec["output_layers"][0])["runtime"]
    assert facts["used"] == "onnxruntime"
    fused = (facts["fusion"] or {}).get("fused", {})  # ViT: LayerNorms and GELUs (its attention is not matched)
    assert fused.get("SkipLayerNormalization", 0) == (4 if spec["backend"] == "transformers" else 0)


def test_int8_convolutions_quantized_statically(tmp_path: Path) -> None:
    spec = {"model_name": "test_onnx_runtime:tiny_resnet", "backend": "torch", "reshape": [64, 64],
            "output_layers": ["avgpool"]}
    reference = features(visual_run(tmp_path / "t", **spec), "avgpool", [f"p{n}" for n in range(5)])
    result = visual_run(tmp_path / "q", runtime="onnx", quantize="int8", min_cosine=0.9, **spec)
    facts = manifest(result, "avgpool")["runtime"]
    assert facts["used"] == "onnxruntime int8" and facts["int8"]["method"] == "static QDQ"
    assert facts["int8"]["calibration_records"] == 3  # the first batch
    got = features(result, "avgpool", [f"p{n}" for n in range(5)]).reshape(5, -1)
    expected = reference.reshape(5, -1)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.9 and np.abs(got - expected).max() > TOL


def test_wav2vec2_last_hidden_state_matches_torch(tmp_path: Path, tiny_w2v2: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for n in range(3):  # three lengths: windows of three shapes through one graph
        sf.write(clips / f"c{n}.wav", (0.1 * rng.standard_normal(8000 + 2500 * n)).astype(np.float32), 16000)
    results = {}
    for runtime in ("torch", "onnx"):
        spec = {"model_name": str(tiny_w2v2), "backend": "transformers", "runtime": runtime, "batch_size": 2,
                "output_layers": ["last_hidden_state"]}
        results[runtime] = ducho.run({"dataset_path": str(tmp_path), "device": "cpu", "workers": 0, "audio": {
            "items": {"input_path": "clips", "output_path": f"out-{runtime}", "model": [spec]}}}, progress=False)
    stems = [f"c{n}" for n in range(3)]
    expected = features(results["torch"], "last_hidden_state", stems)
    got = features(results["onnx"], "last_hidden_state", stems)
    assert got.shape == expected.shape == (3, 32) and np.abs(got - expected).max() < TOL


def test_config_errors(tmp_path: Path, tiny_bert: Path) -> None:
    with pytest.raises(ConfigError, match=r"quantize 'int8' quantizes the exported ONNX graph; set runtime: onnx"):
        run_text(tmp_path, tiny_bert, quantize="int8")
    with pytest.raises(ConfigError, match=r"runtime.*'tensorrt' is not accepted; accepted: torch, onnx, auto"):
        run_text(tmp_path, tiny_bert, runtime="tensorrt")
    with pytest.raises(ConfigError, match=r"runtime: 'onnx' is not available for SentenceTransformersText"):
        run_text(tmp_path, tiny_bert, runtime="onnx", backend="sentence_transformers", output_layers=[])
    assert os.environ["DUCHO_CACHE"]

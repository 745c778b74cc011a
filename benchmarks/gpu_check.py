"""Ducho's CUDA paths on one GPU: are the features right (CUDA against CPU), and how fast is a run (against the
bare model forward on the same inputs)? Only random-init models built from configs: no downloads.

Sections (each in its own subprocess with a timeout, so a crash or a hang costs only itself: on a timeout the
section's thread stacks go to the stderr file; a Python error prints its traceback and the script goes on):

  env                     GPU, library versions, TF32 switches
  visual_fidelity_resnet  torchvision ResNet-50 (seeded weights file), avgpool + full layer4 maps on 64 JPEGs
  visual_fidelity_vit     a small random transformers ViT: pooler_output, hidden_states.2, last_hidden_state (tokens)
  text_fidelity           a small random BERT (hidden 256, 4 layers), transformers text backend, per-token outputs
  visual_throughput       ResNet-50 on 512 JPEGs, batch 64: ducho run (workers auto, 8) against the bare forward
  text_throughput         BERT-base size, 4000 texts, batch 64: ducho run (npy, matrix) against the bare forward
  audio_throughput        torchaudio WAV2VEC2_BASE (random weights) on 48 clips: ducho run against the bare forward
  audio_fidelity          WAV2VEC2_BASE on 6 clips

Fidelity: ducho on CPU fp32 (the reference) and on the device with precision fp32, auto (fp16 autocast) and bf16;
max |difference|, cosine similarity and bit-identical records per layer, and device fp32 batch 1 against batch 32.
Throughput: the bare side runs under the same precision as ducho's (autocast fp16 for precision auto on CUDA),
channels_last for images, inference_mode, and synchronises before the clock stops; ducho's rate is given with and
without its model build. The media of the throughput sections are made in the background meanwhile.

The report goes to stdout and, line by line, to $OUT/gpu_report.txt when OUT is set; the sections' stderr (ducho's
log, stack dumps of a hung section) goes to $OUT/gpu_check_stderr.txt (else a file in the work folder). A section
starts only while 20 s of --budget are left, and is stopped at its own limit or the budget's end.

    python3 benchmarks/gpu_check.py --device cuda [--budget 480] [--sections visual_throughput,text_throughput]
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick      # the same code, tiny sizes, on the CPU

On a GPU machine that has torch, torchvision, torchaudio and transformers but not pydantic, soundfile and soxr, take
their wheels along (not tracked; `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform
manylinux2014_x86_64 -d .gpu/whl` pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection
typing-extensions soundfile==0.14.0 cffi pycparser soxr==1.1.0), then run ducho from src/ without installing it:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
    PYTHONPATH=/tmp/site:src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --device cuda
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _texts import WORDS, make_texts, write_items  # noqa: E402
from audio_throughput import make_clips  # noqa: E402
from ducho.device import autocast  # noqa: E402
from visual_throughput import make_jpegs  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    fidelity_images: int
    fidelity_batch: int
    fidelity_texts: int
    fidelity_clips: int
    throughput_images: int
    throughput_image_batch: int
    throughput_workers: tuple[int | None, ...]
    throughput_texts: int
    throughput_text_batch: int
    text_model: dict[str, int]  # BertConfig sizes of the throughput model
    throughput_clips: int
    audio_batch: int


FULL = Sizes(fidelity_images=64, fidelity_batch=32, fidelity_texts=256, fidelity_clips=6, throughput_images=512,
             throughput_image_batch=64, throughput_workers=(None, 8), throughput_texts=4000,
             throughput_text_batch=64, text_model={}, throughput_clips=48, audio_batch=8)
QUICK = Sizes(fidelity_images=3, fidelity_batch=2, fidelity_texts=16, fidelity_clips=1, throughput_images=8,
              throughput_image_batch=4, throughput_workers=(None, 1), throughput_texts=48, throughput_text_batch=16,
              text_model={"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 512},
              throughput_clips=1, audio_batch=8)
SMALL_BERT = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}

# section name -> (function name, most seconds it may take on the GPU machine)
SECTIONS: dict[str, tuple[str, int]] = {
    "env": ("section_env", 60),
    "visual_fidelity_resnet": ("section_visual_fidelity_resnet", 90),
    "visual_fidelity_vit": ("section_visual_fidelity_vit", 60),
    "text_fidelity": ("section_text_fidelity", 60),
    "visual_throughput": ("section_visual_throughput", 120),
    "text_throughput": ("section_text_throughput", 120),
    "audio_throughput": ("section_audio_throughput", 90),
    "audio_fidelity": ("section_audio_fidelity", 60),
}


@dataclass(frozen=True)
class Context:
    device: str
    quick: bool
    work: Path

    @property
    def sizes(self) -> Sizes:
        return QUICK if self.quick else FULL

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def passes(self) -> int:
        """Passes of a bare-forward timing (the best is kept): on a GPU one pass takes well under a second."""
        return 1 if self.quick else 3


def say(text: str = "") -> None:
    print(text, flush=True)


@contextmanager
def part(title: str) -> Iterator[None]:
    """One part of a section: its error prints a traceback and the section goes on with its next part."""
    say(f"-- {title}")
    started = time.perf_counter()
    try:
        yield
    except Exception:
        say(f"   FAILED after {time.perf_counter() - started:.1f} s:")
        say("   " + traceback.format_exc().rstrip().replace("\n", "\n   "))


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_run(config: dict) -> tuple[Any, float]:
    import ducho

    started = time.perf_counter()
    result = ducho.run(config, progress=False)
    return result, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------- test data


def cached(folder: Path, make: Callable[[Path], object]) -> Path:
    """Make `folder` once per work folder (sections share the generated media); the marker lies beside it, since
    ducho would read a file inside as one more record."""
    marker = folder.with_name(folder.name + ".complete")
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        make(folder)
        marker.touch()
        say(f"   made {folder.name} in {time.perf_counter() - started:.1f} s")
    return folder


def jpegs(ctx: Context, count: int) -> Path:
    return cached(ctx.work / f"jpegs{count}", lambda folder: make_jpegs(folder, count))


def clips(ctx: Context, count: int) -> Path:
    return cached(ctx.work / f"clips{count}", lambda folder: make_clips(folder, count))


def vocabulary() -> list[str]:
    """WordPiece vocabulary: the benchmark texts' words (lower-cased, accents stripped, as BERT's tokenizer does),
    single characters and ## letter pieces, so that nearly every word is one token, as with a real vocabulary."""
    def plain(word: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")

    words = [plain(w) for w in WORDS]
    chars = [chr(c) for c in range(33, 127)] + [f"##{chr(c)}" for c in range(97, 123)]
    return list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars]))


def bert_folder(ctx: Context, name: str, sizes: dict[str, int]) -> Path:
    """A random BERT (seed 0) of `sizes` (BertConfig defaults, i.e. BERT-base, for the rest) with a WordPiece
    tokenizer, saved with save_pretrained."""
    def make(folder: Path) -> None:
        import torch
        from transformers import BertConfig, BertModel, BertTokenizerFast

        folder.mkdir(parents=True)
        words = vocabulary()
        (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), model_max_length=512)  # transformers 5
        if len(tokenizer) < len(words):  # transformers 4 spells it vocab_file
            tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), model_max_length=512)
        assert len(tokenizer) == len(words), f"tokenizer of {len(tokenizer)} tokens from {len(words)} words"
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(tokenizer), **sizes)).eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return cached(ctx.work / name, make)


# ---------------------------------------------------------------------------------------------------- fidelity


@dataclass(frozen=True)
class Variant:
    label: str
    device: str
    precision: str
    batch_size: int


def read_layers(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer folder: {record stem: array}} of a job's output folder."""
    return {layer.name: {p.stem: np.load(p) for p in sorted(layer.glob("*.npy"))}
            for layer in sorted(folder.iterdir()) if layer.is_dir()}


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, Any]:
    """Max |difference|, that relative to the reference's largest magnitude, min and mean cosine similarity, how
    many records are bit-identical, how many have non-finite values."""
    if reference.keys() != other.keys():
        return {"error": f"records differ: {len(reference)} against {len(other)}, "
                         f"{len(reference.keys() ^ other.keys())} not in both"}
    diff, scale, cosines, equal, nonfinite = 0.0, 0.0, [], 0, 0
    for key, ref in reference.items():
        got = other[key]
        if ref.shape != got.shape:
            return {"error": f"{key}: shape {ref.shape} against {got.shape}"}
        a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        if not np.isfinite(b).all():
            nonfinite += 1
            continue
        diff = max(diff, float(np.abs(a - b).max(initial=0.0)))
        scale = max(scale, float(np.abs(a).max(initial=0.0)))
        norms = np.linalg.norm(a) * np.linalg.norm(b)
        same = np.array_equal(ref, got)
        cosines.append(1.0 if same else float(a @ b / norms) if norms > 0 else 0.0)
        equal += int(same)
    return {"max_diff": diff, "rel": diff / scale if scale else 0.0, "min_cos": min(cosines, default=float("nan")),
            "mean_cos": float(np.mean(cosines)) if cosines else float("nan"), "equal": equal,
            "records": len(reference), "nonfinite": nonfinite}


def token_means(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: a.mean(axis=0) for key, a in arrays.items()}


def print_comparisons(rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    say(f"   {'layer':<34} {'run':<28} {'max|diff|':>9} {'rel':>8} {'1-min cos':>9} {'1-mean cos':>10} "
        f"{'equal':>7} {'nonfin':>6}")
    for layer, label, c in rows:
        if "error" in c:
            say(f"   {layer:<34} {label:<28} ERROR {c['error']}")
            continue
        say(f"   {layer:<34} {label:<28} {c['max_diff']:9.2e} {c['rel']:8.1e} {1 - c['min_cos']:9.1e} "
            f"{1 - c['mean_cos']:10.1e} {c['equal']:>3}/{c['records']:<3} {c['nonfinite']:>6}")


def fidelity(ctx: Context, make_config: Callable[[Variant, str], dict], batch_size: int) -> None:
    """Run ducho once per variant (CPU fp32 first: the reference), then compare every layer of every CUDA run with
    the reference, and CUDA fp32 batch 1 with CUDA fp32 batch `batch_size`."""
    device = ctx.device
    variants = [Variant("cpu fp32 (reference)", "cpu", "fp32", batch_size),
                Variant(f"{device} fp32", device, "fp32", batch_size),
                Variant(f"{device} fp32 batch 1", device, "fp32", 1),
                Variant(f"{device} auto (fp16 autocast)", device, "auto", batch_size),
                Variant(f"{device} bf16", device, "bf16", batch_size)]
    outputs: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for n, variant in enumerate(variants):
        with part(f"run {variant.label}, batch {variant.batch_size}"):
            result, seconds = timed_run(make_config(variant, f"out{n}"))
            job = result.jobs[0]
            outputs[variant.label] = read_layers(job.output_dir)
            shapes = {name: next(iter(arrays.values())).shape for name, arrays in outputs[variant.label].items()
                      if arrays}
            say(f"   {job.extracted} records in {seconds:.1f} s (model build {job.load_seconds:.1f} s), "
                f"{len(job.skipped)} skipped; shapes {shapes}")
    reference = outputs.get(variants[0].label)
    if reference is None:
        say("   no CPU reference: nothing to compare")
        return
    rows: list[tuple[str, str, dict[str, Any]]] = []
    pairs = [(variants[0].label, v.label, v.label) for v in variants[1:]]
    pairs.append((variants[1].label, variants[2].label, f"batch 1 vs {batch_size} ({device} fp32)"))
    for base, other, label in pairs:
        if base not in outputs or other not in outputs:
            continue
        for layer, arrays in outputs[base].items():
            theirs = outputs[other].get(layer, {})
            rows.append((layer, label, compare(arrays, theirs)))
            first = next(iter(arrays.values()), None)
            if first is not None and first.ndim == 2 and all(a.ndim == 2 for a in theirs.values()):
                rows.append((f"{layer} (mean over rows)", label, compare(token_means(arrays), token_means(theirs))))
    say("   each run against CPU fp32 (rel = max|diff| / max|reference|; cos: cosine similarity per record; "
        "equal: bit-identical records):")
    print_comparisons(rows)


def section_visual_fidelity_resnet(ctx: Context) -> None:
    import torch
    import torchvision

    sizes = ctx.sizes
    folder = jpegs(ctx, sizes.fidelity_images)
    weights = ctx.work / "resnet50_seed0.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    say(f"   ResNet-50, seeded random weights from {weights.name}, {sizes.fidelity_images} JPEGs, pooling none")

    def make_config(variant: Variant, out: str) -> dict:
        spec = {"model_name": "resnet50", "weights": str(weights), "output_layers": ["avgpool", "layer4"],
                "pooling": "none", "batch_size": variant.batch_size, "precision": variant.precision}
        return {"dataset_path": str(ctx.work / "resnet_fidelity"), "device": variant.device, "overwrite": True,
                "visual": {"items": {"input_path": str(folder), "output_path": out, "model": [spec]}}}

    fidelity(ctx, make_config, sizes.fidelity_batch)


def section_visual_fidelity_vit(ctx: Context) -> None:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    sizes = ctx.sizes
    images = jpegs(ctx, sizes.fidelity_images)

    def make(folder: Path) -> None:
        torch.manual_seed(0)
        config = ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                           image_size=224, patch_size=16)
        ViTModel(config).eval().save_pretrained(folder)
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)

    model = cached(ctx.work / "vit-small", make)
    say(f"   random ViT (hidden 192, 4 layers, 3 heads of 64, 224 px, patch 16), {sizes.fidelity_images} JPEGs, "
        "pooling none")

    def make_config(variant: Variant, out: str) -> dict:
        spec = {"model_name": str(model), "backend": "transformers", "pooling": "none",
                "output_layers": ["pooler_output", "hidden_states.2", "last_hidden_state"],
                "batch_size": variant.batch_size, "precision": variant.precision}
        return {"dataset_path": str(ctx.work / "vit_fidelity"), "device": variant.device, "overwrite": True,
                "visual": {"items": {"input_path": str(images), "output_path": out, "model": [spec]}}}

    fidelity(ctx, make_config, sizes.fidelity_batch)


def section_text_fidelity(ctx: Context) -> None:
    sizes = ctx.sizes
    model = bert_folder(ctx, "bert-small", SMALL_BERT)
    texts = make_texts(sizes.fidelity_texts, seed=1)
    texts[:3] = ["Caffè perfetto: crema densa!", "ok", "Ünïcödé — «quotes» and emoji 🎸 inside."]
    items = write_items(ctx.work / "text_fidelity" / "items.tsv", texts)
    say(f"   random BERT {SMALL_BERT}, {len(texts)} texts, pooling none (per-token rows, padding removed)")

    def make_config(variant: Variant, out: str) -> dict:
        spec = {"model_name": str(model), "backend": "transformers", "pooling": "none",
                "output_layers": ["last_hidden_state", "pooler_output", "hidden_states.2"],
                "batch_size": variant.batch_size, "precision": variant.precision}
        return {"dataset_path": str(items.parent), "device": variant.device, "overwrite": True,
                "textual": {"items": {"input_path": items.name, "output_path": out, "model": [spec]}}}

    fidelity(ctx, make_config, 32 if not ctx.quick else 8)


def section_audio_fidelity(ctx: Context) -> None:
    sizes = ctx.sizes
    folder = clips(ctx, sizes.fidelity_clips)
    say(f"   WAV2VEC2_BASE (random weights), {sizes.fidelity_clips} clips, last_hidden_state mean-pooled")

    def make_config(variant: Variant, out: str) -> dict:
        spec = {"model_name": "WAV2VEC2_BASE", "weights": "none", "output_layers": ["last_hidden_state"],
                "batch_size": variant.batch_size, "precision": variant.precision}
        return {"dataset_path": str(ctx.work / "audio_fidelity"), "device": variant.device, "overwrite": True,
                "audio": {"items": {"input_path": str(folder), "output_path": out, "model": [spec]}}}

    fidelity(ctx, make_config, sizes.audio_batch)


# ---------------------------------------------------------------------------------------------------- throughput


def decode_to_numpy(loader: Callable[[str], Any], path: str) -> np.ndarray:
    return np.asarray(loader(path))


def one_thread() -> None:
    """In a forked decode process, as torch's DataLoader workers do: the parent's OpenMP pool does not survive a fork
    (a forked child that runs a multi-threaded torch op hangs)."""
    import torch

    torch.set_num_threads(1)


def decode_all(loader: Callable[[str], Any], paths: list[Path]) -> tuple[list[np.ndarray], float]:
    """Every file through ducho's own loader in a pool of processes (before CUDA starts in this process)."""
    import multiprocessing

    processes = max(1, os.cpu_count() or 1)
    started = time.perf_counter()
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"), initializer=one_thread) as pool:
        arrays = list(pool.map(functools.partial(decode_to_numpy, loader), [str(p) for p in paths], chunksize=4))
    rate = len(paths) / (time.perf_counter() - started)
    say(f"   decode + preprocess in a pool of {processes} processes: {rate:.0f} files/s (the most any number of "
        "ducho workers could feed on this machine)")
    return arrays, rate


def memory_note(ctx: Context) -> None:
    """GPU memory still allocated after the runs (models of finished runs should be gone) and the peak."""
    import gc

    import torch

    if ctx.cuda:
        gc.collect()
        say(f"   GPU memory allocated now {torch.cuda.memory_allocated() / 2**20:.0f} MiB, peak "
            f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


def report_run(label: str, count: float, unit: str, bare_rate: float, result: Any, seconds: float,
               records: int) -> None:
    """Ducho's rate (`count` units in `seconds`) with and without its model build, and the ratios to the bare rate."""
    job = result.jobs[0]
    rate = count / seconds
    net = count / max(seconds - job.load_seconds, 1e-9)
    skipped = f", {len(job.skipped)} SKIPPED" if job.skipped else ""
    say(f"   ducho {label:<12} {rate:8.1f} {unit}/s  ratio {rate / bare_rate:.3f} | without the model build "
        f"({job.load_seconds:.2f} s) {net:8.1f} {unit}/s  ratio {net / bare_rate:.3f}{skipped}")
    if job.extracted != records:
        say(f"   WARNING: {job.extracted} of {records} records extracted")


def section_visual_throughput(ctx: Context) -> None:
    import torch

    import ducho.backends.torch_vision as tv
    from ducho.config.schema import VisualModelSpec

    sizes = ctx.sizes
    folder = jpegs(ctx, sizes.throughput_images)
    paths = sorted(folder.glob("*.jpg"))
    batch_size = sizes.throughput_image_batch
    reference = tv.TorchVision(VisualModelSpec(model_name="resnet50", weights="none"), "cpu")
    arrays, _ = decode_all(reference.loader, paths)  # before CUDA is initialised in this process (fork)
    batches = [torch.from_numpy(np.stack(arrays[i:i + batch_size])) for i in range(0, len(arrays), batch_size)]
    model = reference.model.to(ctx.device, memory_format=torch.channels_last)
    precision = "auto"
    say(f"   ResNet-50 (random weights), {len(paths)} JPEGs (320x240 .. 1600x1200), batch {batch_size}, "
        f"precision {precision}, avgpool; cores {os.cpu_count()}")

    def bare() -> float:
        with torch.inference_mode(), autocast(ctx.device, precision):
            model(batches[0].to(ctx.device, memory_format=torch.channels_last))  # warm-up
            sync(ctx.device)
            best = float("inf")
            for _ in range(ctx.passes):
                started = time.perf_counter()
                for batch in batches:
                    model(batch.to(ctx.device, memory_format=torch.channels_last)).float().cpu()
                sync(ctx.device)
                best = min(best, time.perf_counter() - started)
        return len(paths) / best

    bare_rate = bare()
    say(f"   bare forward on pre-decoded batches (host->device copy included; best of {ctx.passes}): "
        f"{bare_rate:.1f} img/s")

    def config(workers: int | None, out: str, count_folder: Path = folder) -> dict:
        spec = {"model_name": "resnet50", "weights": "none", "output_layers": ["avgpool"], "batch_size": batch_size,
                "precision": precision}
        return {"dataset_path": str(ctx.work / "visual_throughput"), "device": ctx.device, "workers": workers,
                "overwrite": True, "visual": {"items": {"input_path": str(count_folder), "output_path": out,
                                                        "model": [spec]}}}

    with part("ducho warm-up run (16 images, not reported)"):
        timed_run(config(None, "warmup", jpegs(ctx, min(16, sizes.throughput_images))))
    for workers in sizes.throughput_workers:
        label = f"workers {'auto' if workers is None else workers}"
        with part(label):
            result, seconds = timed_run(config(workers, f"out_w{workers}"))
            report_run(label, len(paths), "img", bare_rate, result, seconds, len(paths))
    say(f"   bare forward again: {bare():.1f} img/s")
    memory_note(ctx)


def section_text_throughput(ctx: Context) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ducho import shards

    sizes = ctx.sizes
    model_sizes = sizes.text_model
    started = time.perf_counter()
    folder = bert_folder(ctx, "bert-base" if not model_sizes else "bert-quick", model_sizes)
    say(f"   random BERT ({model_sizes or 'BERT-base: hidden 768, 12 layers, 12 heads'}, vocabulary of "
        f"{len(vocabulary())} WordPieces), ready in {time.perf_counter() - started:.1f} s")
    texts = make_texts(sizes.throughput_texts)
    items = write_items(ctx.work / "text_throughput" / "items.tsv", texts)
    batch_size, precision = sizes.throughput_text_batch, "auto"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval().to(ctx.device)

    # ducho's batches: shards of shards.SHARD records, each sorted longest first, cut into batches
    chunk = shards.SHARD
    batches = []
    for start in range(0, len(texts), chunk):
        part_ = sorted(texts[start:start + chunk], key=len, reverse=True)
        batches += [part_[i:i + batch_size] for i in range(0, len(part_), batch_size)]
    started = time.perf_counter()
    encoded = [tokenizer(b, padding=True, truncation=True, max_length=512, return_tensors="pt") for b in batches]
    tokenize_seconds = time.perf_counter() - started
    tokens = sum(int(e["attention_mask"].sum()) for e in encoded)
    padded = sum(e["attention_mask"].numel() for e in encoded)
    say(f"   {len(texts)} texts, {tokens / len(texts):.0f} tokens on average, {len(batches)} batches of "
        f"{batch_size} (padding {100 * (1 - tokens / padded):.1f} %), precision {precision}; tokenizing all "
        f"took {tokenize_seconds:.2f} s ({len(texts) / tokenize_seconds:.0f} texts/s)")

    def bare() -> float:
        with torch.inference_mode(), autocast(ctx.device, precision):
            model(**{k: v[:2].to(ctx.device) for k, v in encoded[0].items()})  # warm-up
            sync(ctx.device)
            best = float("inf")
            for _ in range(ctx.passes):
                started = time.perf_counter()
                for inputs in encoded:
                    inputs = {k: v.to(ctx.device) for k, v in inputs.items()}
                    hidden = model(**inputs).last_hidden_state
                    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    ((hidden * mask).sum(1) / mask.sum(1)).float().cpu()
                sync(ctx.device)
                best = min(best, time.perf_counter() - started)
        return len(texts) / best

    bare_rate = bare()
    say(f"   bare AutoModel forward + mean pooling, pre-tokenized (best of {ctx.passes}): {bare_rate:.1f} texts/s; "
        "with the tokenizing: "
        f"{len(texts) / (len(texts) / bare_rate + tokenize_seconds):.1f} texts/s")
    spec = {"model_name": str(folder), "backend": "transformers", "output_layers": ["last_hidden_state"],
            "pooling": "mean", "batch_size": batch_size, "precision": precision}
    config = {"dataset_path": str(items.parent), "device": ctx.device, "overwrite": True,
              "textual": {"items": {"input_path": items.name, "output_path": "out", "model": [spec]}}}
    for round_, layout in ((1, "npy"), (2, "npy"), (3, "matrix")):  # npy: one file per text; matrix: one (N, D)
        with part(f"ducho run {round_}, format {layout}"):
            result, seconds = timed_run({**config, "format": layout})
            report_run(f"run {round_} {layout}", len(texts), "texts", bare_rate, result, seconds, len(texts))
    say(f"   bare forward again: {bare():.1f} texts/s")
    memory_note(ctx)


def section_audio_throughput(ctx: Context) -> None:
    import torch

    from ducho.backends.audio_common import sub_batches
    from ducho.backends.torch_audio import TorchAudio
    from ducho.config.schema import AudioModelSpec

    sizes = ctx.sizes
    folder = clips(ctx, sizes.throughput_clips)
    paths = sorted(folder.glob("*.flac"))
    batch_size, precision = sizes.audio_batch, "auto"
    spec = {"model_name": "WAV2VEC2_BASE", "weights": "none", "output_layers": ["last_hidden_state"],
            "batch_size": batch_size, "precision": precision}
    reference = TorchAudio(AudioModelSpec(**spec), "cpu")
    started = time.perf_counter()
    waves = [reference.loader(str(p)) for p in paths]  # decoded and resampled beforehand, not timed
    decode_seconds = time.perf_counter() - started
    audio_seconds = sum(w.shape[-1] for w in waves) / reference.sample_rate
    inputs = []  # ducho's batches of records, their windows, and its sub-batches of equal-shape windows
    for start in range(0, len(waves), batch_size):
        prepared = reference.prepare(waves[start:start + batch_size])
        inputs += [stacked["wave"] for _, stacked in sub_batches(prepared["windows"], batch_size)]
    module = reference.model.module.to(ctx.device)
    say(f"   WAV2VEC2_BASE (random weights), {len(paths)} FLAC clips (44.1 kHz stereo, {audio_seconds:.0f} s of "
        f"audio), {reference.windowing.window_seconds:g} s windows, batch {batch_size}, {len(inputs)} forwards, "
        f"precision {precision}; decoding + resampling in one process took {decode_seconds:.1f} s")

    def bare() -> float:
        with torch.inference_mode(), autocast(ctx.device, precision):
            module(inputs[0][:1, :16000].to(ctx.device))  # warm-up
            sync(ctx.device)
            best = float("inf")
            for _ in range(ctx.passes):
                started = time.perf_counter()
                for wave in inputs:
                    module(wave.to(ctx.device))[0].float().cpu()
                sync(ctx.device)
                best = min(best, time.perf_counter() - started)
        return audio_seconds / best

    bare_rate = bare()
    say(f"   bare forward on pre-decoded windows (best of {ctx.passes}): {bare_rate:.1f} audio-s/s")
    config = {"dataset_path": str(ctx.work / "audio_throughput"), "device": ctx.device, "overwrite": True,
              "audio": {"items": {"input_path": str(folder), "output_path": "out", "model": [spec]}}}
    for round_ in (1, 2):
        with part(f"ducho run {round_}"):
            result, seconds = timed_run(config)
            report_run(f"run {round_}", audio_seconds, "audio-s", bare_rate, result, seconds, len(paths))
    say(f"   bare forward again: {bare():.1f} audio-s/s")
    memory_note(ctx)


def section_media(ctx: Context) -> None:
    """The throughput sections' media, made in the background while the fidelity sections run (about 40 s)."""
    sizes = ctx.sizes
    jpegs(ctx, sizes.throughput_images)
    jpegs(ctx, min(16, sizes.throughput_images))
    clips(ctx, sizes.throughput_clips)


# ---------------------------------------------------------------------------------------------------- env


def section_env(ctx: Context) -> None:
    import platform
    from importlib import metadata

    import torch

    import ducho

    say(f"   python {platform.python_version()}, {os.cpu_count()} cores, ducho {ducho.__version__} from "
        f"{Path(ducho.__file__).parent}")
    versions = {}
    for name in ("torch", "torchvision", "torchaudio", "transformers", "tokenizers", "sentence-transformers",
                 "numpy", "pillow", "pydantic", "pydantic-core", "soundfile", "soxr", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "MISSING"
    say("   " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    say(f"   torch CUDA build {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
        f"cuda available {torch.cuda.is_available()}, {torch.cuda.device_count()} device(s)")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        say(f"   GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}, "
            f"{props.multi_processor_count} SMs")
    say(f"   TF32: cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32} (convolutions), cuda.matmul.allow_tf32 "
        f"{torch.backends.cuda.matmul.allow_tf32}, float32_matmul_precision {torch.get_float32_matmul_precision()}"
        f", cudnn.benchmark {torch.backends.cudnn.benchmark}; torch threads {torch.get_num_threads()}")
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        say(f"   nvidia-smi: {smi.stdout.strip() or smi.stderr.strip()}")
    except (OSError, subprocess.TimeoutExpired) as error:
        say(f"   nvidia-smi: {error}")
    from ducho.device import resolve_device

    say(f"   ducho resolve_device({ctx.device!r}) -> {resolve_device(ctx.device)}, "
        f"resolve_device('auto') -> {resolve_device('auto')}")


# ---------------------------------------------------------------------------------------------------- driver


class Report:
    """Lines to stdout and, flushed one by one, to $OUT/gpu_report.txt."""

    def __init__(self, path: Path | None) -> None:
        self.handle = path.open("w", encoding="utf-8") if path else None

    def line(self, text: str) -> None:
        print(text, flush=True)
        if self.handle:
            self.handle.write(text + "\n")
            self.handle.flush()


MEDIA_USERS = ("visual_throughput", "text_throughput", "audio_throughput")


def section_command(name: str, args: argparse.Namespace, work: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--section", name, "--device", args.device,
            "--work", str(work)] + (["--quick"] if args.quick else [])


def stop(child: subprocess.Popen) -> None:
    """SIGTERM to the child's process group (faulthandler in the child dumps every thread's stack), then SIGKILL."""
    os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def wait_for_media(media: subprocess.Popen | None, timeout: float, report: Report) -> None:
    """Let the background media maker finish (a section makes what is still missing itself)."""
    if media is None or media.poll() is not None:
        return
    started = time.perf_counter()
    try:
        media.wait(timeout=timeout)
        report.line(f"   (waited {time.perf_counter() - started:.1f} s for the background media maker)")
    except subprocess.TimeoutExpired:
        stop(media)
        report.line(f"   (background media maker still busy after {timeout:.0f} s: stopped)")


def run_section(name: str, args: argparse.Namespace, work: Path, timeout: float, report: Report,
                stderr_path: Path) -> None:
    """The section in a child process (its own process group); on timeout its stacks are dumped to the stderr
    file (SIGTERM, faulthandler) and the group is killed."""
    command = section_command(name, args, work)
    offset = stderr_path.stat().st_size if stderr_path.exists() else 0
    started = time.perf_counter()
    with stderr_path.open("a", encoding="utf-8") as err:
        err.write(f"\n===== section {name} =====\n")
        err.flush()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                                 start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert child.stdout is not None
        reader = threading.Thread(target=lambda: [report.line(line.rstrip("\n")) for line in child.stdout],
                                  daemon=True)
        reader.start()
        try:
            code = child.wait(timeout=timeout)
            status = "ok" if code == 0 else f"EXIT CODE {code}"
        except subprocess.TimeoutExpired:
            stop(child)
            status = f"TIMED OUT after {timeout:.0f} s (killed; stacks in the stderr file)"
        reader.join(timeout=5)
    report.line(f"== {name}: {status}, {time.perf_counter() - started:.1f} s")
    if status != "ok":
        text = stderr_path.read_text(encoding="utf-8", errors="replace")[offset:]
        report.line("   last lines of its stderr:")
        for line in text.splitlines()[-40:]:
            report.line("   | " + line[:300])


def child_main(args: argparse.Namespace) -> None:
    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s "
                                                                      "%(message)s")
    ctx = Context(args.device, args.quick, Path(args.work))
    function = section_media if args.section == "media" else globals()[SECTIONS[args.section][0]]
    try:
        function(ctx)
    except Exception:
        say("   FAILED:")
        say("   " + traceback.format_exc().rstrip().replace("\n", "\n   "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU check of the script itself)")
    parser.add_argument("--budget", type=float, default=500, help="seconds for all sections together")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, from: " + ", ".join(SECTIONS))
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.section:
        child_main(args)
        return

    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    report = Report(out / "gpu_report.txt" if out else None)
    work = Path(tempfile.mkdtemp(prefix="ducho-gpu-check-"))
    stderr_path = (out or work) / "gpu_check_stderr.txt"
    started = time.perf_counter()
    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    report.line(f"ducho GPU check: device {args.device}{' (quick)' if args.quick else ''}, budget {args.budget:.0f} s,"
                f" sections {', '.join(names)}; stderr -> {stderr_path}")
    media = None
    if any(n in MEDIA_USERS for n in names):
        media = subprocess.Popen(section_command("media", args, work), stdout=stderr_path.open("a"),
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for name in names:
            left = args.budget - (time.perf_counter() - started)
            if left < 20:
                report.line(f"== {name}: SKIPPED ({left:.0f} s of the budget left)")
                continue
            report.line(f"== {name}")
            if name in MEDIA_USERS:
                wait_for_media(media, min(90, left - 20), report)
                media = None
            run_section(name, args, work, min(SECTIONS[name][1], left), report, stderr_path)
    finally:
        if media is not None and media.poll() is None:
            stop(media)
        shutil.rmtree(work, ignore_errors=True)
    summary = {"seconds": round(time.perf_counter() - started, 1), "device": args.device, "quick": args.quick}
    report.line(f"done: {json.dumps(summary)}")


if __name__ == "__main__":
    main()

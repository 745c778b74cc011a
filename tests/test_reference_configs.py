"""Demo-3 configs written for the reference releases 1.0 and 2.0 run unchanged (models served from a local
Hugging Face cache holding tiny models under the demo's hub ids)."""

# ruff: noqa: E501  (the configs are quoted verbatim)
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXTS, hub_cache_entry, write_tsv

CONFIG_1_0 = """\
dataset_path: ./local/data/demo3
gpu list: 0

textual:
    items:
        input_path: descriptions.tsv
        output_path: textual_descriptions
        item_column: DESCRIPTION
        model: [
              { name: sentence-transformers/all-mpnet-base-v2, output_layers: out, clear_text: True, framework: sentence_transformers}
          ]

    interactions:
        input_path: reviews.tsv
        output_path: textual_reviews
        interaction_column: REVIEW
        model: [
          { name: nlptown/bert-base-multilingual-uncased-sentiment, output_layers: 3, task: sentiment-analysis, clear_text: True, framework: transformers }
        ]
"""

CONFIG_2_0 = """\
dataset_path: ./local/data/demo3
gpu list: 0

textual:
    items:
        input_path: descriptions.tsv
        output_path: textual_descriptions
        item_column: ITEM_ID
        text_column: DESCRIPTION
        model: [
            { model_name: sentence-transformers/all-mpnet-base-v2,  output_layers: 1, clear_text: False, backend: sentence-transformers, batch_size: 32},
          ]
    interactions:
        input_path: reviews.tsv
        output_path: textual_reviews
        interaction_columns: [USER_ID, ITEM_ID]
        text_column: REVIEW
        model: [
            { model_name: nlptown/bert-base-multilingual-uncased-sentiment, output_layers: pooler_output, task: sentiment-analysis, backend: transformers, batch_size: 32 },
          ]
"""


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory, tiny_st: Path, tiny_sentiment: Path) -> Path:
    cache = tmp_path_factory.mktemp("hf-cache")
    hub_cache_entry(cache, "sentence-transformers/all-mpnet-base-v2", tiny_st)
    hub_cache_entry(cache, "nlptown/bert-base-multilingual-uncased-sentiment", tiny_sentiment)
    return cache


def demo3_data(root: Path) -> Path:
    data = root / "local" / "data" / "demo3"
    write_tsv(data / "descriptions.tsv", ["ITEM_ID", "DESCRIPTION"], [[f"P{n}", t] for n, t in enumerate(TEXTS)])
    write_tsv(data / "reviews.tsv", ["USER_ID", "ITEM_ID", "REVIEW"],
              [[f"U{n % 4}", f"P{n}", t] for n, t in enumerate(reversed(TEXTS))])
    return data


@pytest.mark.parametrize("version, text, command", [
    ("1.0", CONFIG_1_0, ["--config=config.yml", "--textual.items.model.0.batch_size=4"]),
    ("2.0", CONFIG_2_0, ["run", "config.yml", "textual.interactions.model.0.batch_size=4"]),
])
def test_reference_demo3_config_runs_unchanged(tmp_path: Path, hub_cache: Path, version: str, text: str,
                                                command: list[str]) -> None:
    data = demo3_data(tmp_path)
    (tmp_path / "config.yml").write_text(text)
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "ducho", *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gpu list [0] -> device: cuda:0" in done.stderr  # translation logged
    items_layer = "out" if version == "1.0" else "1"
    items = data / "textual_descriptions" / "sentence_transformers" / "sentence-transformers" / "all-mpnet-base-v2"
    reviews = data / "textual_reviews" / "transformers" / "nlptown" / "bert-base-multilingual-uncased-sentiment"
    reviews = reviews / ("3" if version == "1.0" else "pooler_output")
    item_files = sorted(p.name for p in (items / items_layer).glob("*.npy"))
    assert item_files == sorted(f"P{n}.npy" for n in range(len(TEXTS)))
    review_files = sorted(p.name for p in reviews.glob("*.npy"))
    assert review_files == sorted(f"U{n % 4}__P{n}.npy" for n in range(len(TEXTS)))
    assert np.load(items / items_layer / "P0.npy").shape == (32,)
    assert np.load(reviews / review_files[0]).shape == (32,)
    manifest = json.loads((reviews / "manifest.json").read_text())
    assert manifest["model"]["loaded_from"] == "hub cache"
    assert manifest["computed_layer"] == "pooler_output"
    assert manifest["preprocessing"]["clear_text"] == (version == "1.0")
    assert list((tmp_path / "local" / "data" / "demo3" / "logs").glob("ducho-*.log"))

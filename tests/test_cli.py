"""The command line: help without heavy imports, dry-run, validate, errors before work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import TEXTS, write_tsv

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def ducho(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ducho", *args], cwd=cwd, env=ENV, capture_output=True, text=True)


def write_config(tmp_path: Path, model_name: str) -> Path:
    write_tsv(tmp_path / "items.tsv", ["item_id", "text"], [[f"i{n}", t] for n, t in enumerate(TEXTS)] + [["i0", "x"]])
    config = {"dataset_path": str(tmp_path), "textual": {"items": {
        "input_path": "items.tsv", "output_path": "out", "model": [{"model_name": model_name}]}}}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_help_imports_no_deep_learning_library() -> None:
    code = ("import sys\nfrom ducho.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'tensorflow', 'transformers', 'sentence_transformers', 'ray') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert "usage: ducho" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_dry_run_prints_the_plan_without_loading_models(tmp_path: Path, tiny_bert: Path) -> None:
    done = ducho("run", str(write_config(tmp_path, str(tiny_bert))), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "1 job(s)" in done.stdout and "[transformers]" in done.stdout
    assert f"({len(TEXTS) + 1} entries, {len(TEXTS)} to extract, 1 skipped)" in done.stdout
    assert str(tmp_path / "out" / "transformers" / "tiny-bert") in done.stdout
    assert not (tmp_path / "out").exists()


def test_missing_model_fails_before_any_work(tmp_path: Path) -> None:
    config = write_config(tmp_path, "nobody/no-such-model")
    done = ducho("validate", str(config))
    assert done.returncode == 2 and "NOT FOUND" in done.stderr and "HF_HUB_OFFLINE is set" in done.stderr
    done = ducho("run", str(config))
    assert done.returncode == 2 and "was not found. Tried:" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_bad_value_is_reported_with_key_and_accepted_values(tmp_path: Path, tiny_bert: Path) -> None:
    done = ducho("run", str(write_config(tmp_path, str(tiny_bert))), "textual.items.model.0.pooling=meen")
    assert done.returncode == 2
    assert "textual.items.model.0.pooling: value 'meen' is not accepted" in done.stderr
    assert "did you mean 'mean'?" in done.stderr

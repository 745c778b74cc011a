"""`pip install` from a built wheel: `python -m build --wheel`, the wheel installed into a clean venv (its
dependencies seen through a .pth file pointing at this environment's site-packages, so nothing is downloaded or
reinstalled), then `ducho demo` run from outside the source tree, so the demo media and configs come from the wheel."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], cwd: Path, timeout: int = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_wheel_carries_the_demo_and_runs_it(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: the build's own build/ and egg-info stay out of the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist")], source)
    wheel = next((tmp_path / "dist").glob("ducho-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("ducho/demo/demo1.yml", "ducho/demo/demo2.yml", "ducho/demo/demo3.yml",
                     "ducho/demo/data/labels.tsv", "ducho/demo/data/textual/reviews.tsv"):
        assert expected in names, expected
    assert sum(n.startswith("ducho/demo/data/visual/images/") for n in names) >= 10
    assert sum(n.startswith("ducho/demo/data/audio/clips/") for n in names) >= 10

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    packages = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path)
                    .strip())
    (packages / "_shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], tmp_path)
    where = _run([str(python), "-c", "import ducho; print(ducho.__file__)"], tmp_path).strip()
    assert Path(where).is_relative_to(venv), where

    work = tmp_path / "elsewhere"
    work.mkdir()
    out = _run([str(venv / "bin" / "ducho"), "demo", "--only", "1", "--output", "out"], work, timeout=600)
    assert "nearest neighbour" in out and (work / "out" / "report.html").is_file()
    assert (work / "out" / "data" / "visual" / "images").is_dir()

"""The documentation site: `mkdocs build --strict`, the generated references against the code, and every config the
docs show, through `ducho validate` (offline ones) or `ducho run --dry-run` (ones that download), the small ones
through `ducho run` against the offline models."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from ducho.cli import main
from ducho.config import load_config
from ducho.config.schema import Config, Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIGS = sorted((DOCS / "configs").glob("*.yml"))
MARKS = ("offline-run", "offline", "needs-model")
SNIPPET = re.compile(r'--8<-- "([^"]+)"')
FENCE = re.compile(r"```yaml\n(.*?)```", re.S)

sys.path.insert(0, str(ROOT))
from scripts.docgen import backend_reference, schema_reference  # noqa: E402


def _mark(config: Path) -> str:
    first = config.read_text(encoding="utf-8").splitlines()[0]
    return first.removeprefix("# docs: ").strip()


def _cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `ducho demo` leaves for the docs' configs: the bundled data under demo-output/data."""
    root = tmp_path_factory.mktemp("demo-output")
    shutil.copytree(ROOT / "src" / "ducho" / "demo" / "data", root / "data",
                    ignore=shutil.ignore_patterns("*.py", "README.md"))
    return root


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    for key in schema_reference.every_key():
        assert f"<code>{key}</code>" in reference, key
    backends = (tmp_path / "site" / "reference" / "backends" / "index.html").read_text(encoding="utf-8")
    assert "TorchVision" in backends and "<td>rgb_histogram</td>" in backends  # the handcrafted families table
    assert (tmp_path / "site" / "modalities" / "visual" / "index.html").read_text().count("efficientnet_lite0")


def test_every_schema_key_has_a_description() -> None:
    assert schema_reference.missing_descriptions() == []


def test_an_undocumented_key_is_caught() -> None:
    class Section(Settings):
        documented: int = Field(1, description="Has one.")
        bare: int = 2

    class Root(Settings):
        section: Section = Field(default_factory=Section, description="The section.")

    assert schema_reference.missing_descriptions(Root) == ["Section.bare"]
    assert "Root" in {s.model.__name__ for s in schema_reference.sections(Root)}


def test_reference_spellings_and_backends_come_from_the_code() -> None:
    page = schema_reference.reference_markdown()
    assert "| `gpu list`" in page and "| `sentence-transformers` | `sentence_transformers` |" in page
    assert "| `format` | choice | `npy` | `npy`, `matrix`, `sparse`, `parquet` |" in page
    backends = backend_reference.backends_markdown()
    from ducho.backends.registry import REGISTRY

    for modality, table in REGISTRY.items():
        for backend, target in table.items():
            assert f"| `{modality}` | `{backend}` | [`{target.split(':')[1]}`]" in backends


def test_rst_tables_become_markdown() -> None:
    text = "x\n\n====  ====\na     b\n====  ====\none   1\n      more\ntwo   2\n====  ====\n"
    assert "| one | 1 more |" in backend_reference.rst_tables_to_markdown(text)


def test_every_docs_config_is_shown_and_marked() -> None:
    shown = {name for page in DOCS.rglob("*.md") for name in SNIPPET.findall(page.read_text(encoding="utf-8"))}
    readme = {name for name in shown if name.startswith("README.md:")}  # sections of the README, not configs
    assert shown - readme == {config.name for config in CONFIGS}
    assert readme and all(f"[start:{name.split(':')[1]}]" in (DOCS.parent / "README.md").read_text() for name in readme)
    assert {_mark(config) for config in CONFIGS} <= set(MARKS), [_mark(c) for c in CONFIGS]
    for modality, backends in {"textual": 5, "visual": 5, "audio": 4, "visual_textual": 2}.items():
        assert len([c for c in CONFIGS if c.name.startswith(modality + "-")]) == backends, modality


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_docs_config(config: Path, demo_output: Path) -> None:
    mark = _mark(config)
    if mark == "needs-model":  # a hub or file model that cannot be here offline: keys, paths, columns and plan
        code, out = _cli("run", str(config), f"dataset_path={demo_output}", "--dry-run")
        assert code == 0 and out.startswith("plan:"), out
        return
    code, out = _cli("validate", str(config), f"dataset_path={demo_output}")
    assert code == 0 and out.startswith("config OK"), out
    if mark == "offline-run":
        code, out = _cli("run", str(config), f"dataset_path={demo_output}", "--no-progress", "--overwrite")
        assert code == 0, out
        assert "skipped 0" in out and "extracted 0" not in out, out


def test_inline_yaml_blocks_are_valid_config() -> None:
    """Config fragments written in the pages or the README sections they show (not included from docs/configs)
    load as configs."""
    pages = [*DOCS.rglob("*.md"), DOCS.parent / "README.md"]
    blocks = [(page, block) for page in pages for block in FENCE.findall(page.read_text("utf-8"))
              if not SNIPPET.search(block)]
    assert blocks, "the cluster page shows a ray section"
    for page, block in blocks:
        assert isinstance(load_config(yaml.safe_load(block)), Config), page

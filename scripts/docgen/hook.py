"""MkDocs hook: the generated pages (configuration, backends, command line) are built from the code on every
`mkdocs build`, in memory; nothing generated is committed, so the pages cannot drift from the code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scripts.docgen import pages  # noqa: E402


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for uri, content in pages.generated().items():
        files.append(File.generated(config, uri, content=content))
    return files

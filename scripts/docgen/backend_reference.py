"""The backends page, generated from the registry (`ducho.backends.registry.REGISTRY`) and each backend module's
docstring (model names, layers, preprocessing), read with `ast`: no backend library is imported."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from ducho.backends.registry import REGISTRY

BORDER = re.compile(r"^=+(\s+=+)+\s*$")


def module_doc(module: str) -> str:
    spec = importlib.util.find_spec(module)
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""


def rst_tables_to_markdown(text: str) -> str:
    """reStructuredText simple tables (`====  ====` borders) as Markdown tables; continuation rows (first cell
    empty) are joined to the row above."""
    out: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if not BORDER.match(lines[index]):
            out.append(lines[index])
            index += 1
            continue
        spans = [m.span() for m in re.finditer(r"=+", lines[index])]
        rows: list[list[str]] = []
        borders = 0
        while index < len(lines) and borders < 3:
            line = lines[index]
            index += 1
            if BORDER.match(line):
                borders += 1
                continue
            cells = [line[start:(spans[i + 1][0] if i + 1 < len(spans) else None)].strip()
                     for i, (start, _) in enumerate(spans)]
            if rows and not cells[0] and borders == 2:
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
            else:
                rows.append(cells)
        out += ["", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
        out.append("")
    return "\n".join(out)


def backends_markdown() -> str:
    """The backends page: the modality x backend table, then each implementation's own documentation."""
    lines = ["# Backends and layers", "",
             "Generated from the backend registry (`src/ducho/backends/registry.py`) and each backend module's "
             "documentation when the docs are built. `ducho models` lists the model names and which resolve "
             "offline; `ducho layers MODEL` lists a model's layers and their shapes.", "",
             "| modality | backend | implementation | what it runs |", "|---|---|---|---|"]
    modules: dict[str, list[str]] = {}
    for modality, table in REGISTRY.items():
        for backend, target in sorted(table.items()):
            module, cls = target.split(":")
            summary = module_doc(module).split("\n\n")[0].replace("\n", " ")
            anchor = module.rsplit(".", 1)[-1].replace("_", "-")
            lines.append(f"| `{modality}` | `{backend}` | [`{cls}`](#{anchor}) | {summary.replace('|', '/')} |")
            modules.setdefault(module, []).append(f"`{modality}`")
    for module, modalities in modules.items():
        name = module.rsplit(".", 1)[-1]
        lines += ["", f"## {name} {{#{name.replace('_', '-')}}}", "",
                  f"Module `{module}`, serving {', '.join(modalities)}.", "",
                  rst_tables_to_markdown(module_doc(module))]
    return "\n".join(lines) + "\n"

"""The generated pages, by their path in the site."""

from __future__ import annotations

from .backend_reference import backends_markdown
from .cli_reference import cli_markdown
from .schema_reference import reference_markdown


def generated() -> dict[str, str]:
    return {"reference/config.md": reference_markdown(), "reference/backends.md": backends_markdown(),
            "reference/cli.md": cli_markdown()}

"""The command-line reference, generated from the `ducho` argument parser."""

from __future__ import annotations

import argparse
import os

from ducho import cli


def cli_markdown() -> str:
    os.environ.setdefault("COLUMNS", "110")  # argparse wraps help to the terminal width: fixed here
    parser = cli._parser()
    parser.prog = "ducho"
    lines = ["# Command line", "", "Generated from the `ducho` argument parser when the docs are built.", "",
             "```text", parser.format_help().rstrip(), "```"]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        lines += ["", f"## ducho {name}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"

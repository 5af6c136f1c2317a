"""Every flag of every command as a Markdown table, generated from the parsers: ``python -m lotterypools.cli.flag_table``.

``docs/cli.md`` is this output; a test fails when it is out of date. Only the commands' ``build_parser``
functions are imported (torch-free).
"""

from __future__ import annotations

import argparse
import importlib

from .commands import CONSOLE_COMMANDS

HEADER = """# Command-line flags

Generated from the parsers by `python -m lotterypools.cli.flag_table > docs/cli.md` (do not edit by hand; a test
checks that this file is current). Each section is one command: its console command, the module in
`lotterypools/cli/commands/`, and the script in `CIFAR/` or `ImageNet/` that wraps it take the same flags.

Each flag name means one thing in every command. Where an original script spelled a setting differently (FreeTickets'
`--data cifar10` is `--dataset`, PrAC's 0-based `--rewind_epoch` is `--rewind_index`, the pools' `--batch_size` is
`--bn_batch_size`), that spelling is listed beside the canonical one in that command only, and its meaning says "this
script's spelling" (the alias tables are in `lotterypools/cli/aliases.py`). "valid" gives a number's declared range: a
value outside it ends the command with one line before any work. Flags marked "no effect" are the originals' flags
that change nothing here: accepted with a one-line note, or refused with one line.
"""


def _cell(text: object) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.default is None or action.default is argparse.SUPPRESS or isinstance(action, argparse._StoreTrueAction):
        return ""
    value = action.default
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def parser_rows(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(command, flag and aliases, help, default) for every argument, subcommands included."""
    rows, subparsers = [], []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            subparsers.append(action)
            continue
        flags = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}` (positional)"
        help_text = (action.help or "") % {"default": action.default} if action.help else ""
        if action.choices and "choices" not in help_text.lower():
            help_text += f" (choices: {', '.join(map(str, action.choices))})"
        rows.append((prefix, flags, help_text, _default(action)))
    for action in subparsers:
        for name, sub in action.choices.items():
            rows += parser_rows(sub, f"{prefix} {name}".strip())
    return rows


def flag_table() -> str:
    """The whole Markdown page."""
    out = [HEADER]
    for command, module in sorted(CONSOLE_COMMANDS.items(), key=lambda item: item[1]):
        parser = importlib.import_module(f"{__package__}.commands.{module}").build_parser()
        out.append(f"\n## `{command}` ({module}.py)\n\n| subcommand | flag | meaning | default |\n|---|---|---|---|")
        for sub, flags, help_text, default in parser_rows(parser):
            out.append(f"| {_cell(sub)} | {flags} | {_cell(help_text)} | {_cell(default)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(flag_table(), end="")

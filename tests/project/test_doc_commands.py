"""Every command shown in the README and docs/ parses, the console-command table is complete, every link resolves.

Commands are taken from the fenced code blocks of README.md and docs/*.md: backslash continuations are joined,
shell variables assigned in the same block (``C="..."``, ``for S in 41 42; do``) are substituted, and each
command of a script in CIFAR/, ImageNet/, experiments/ or benchmarks/ (or a ``lotterypools-*`` console command)
is run through that script's ``build_parser()``: parse only, no work. A block runs from the repository root
unless it says ``cd DIR`` or starts with a ``# from DIR/`` comment, so a command that names a script from the
wrong folder fails here as it would in a shell.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import REPO

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED_FILES = [*DOC_FILES, REPO / "CHANGELOG.md"]
SCRIPT_FOLDERS = ("CIFAR", "ImageNet", "experiments", "benchmarks")
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
ENV_PREFIX = re.compile(r"^[A-Za-z_]\w*=\S*$")
ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=(.*)$")
FOR_LOOP = re.compile(r"^for\s+([A-Za-z_]\w*)\s+in\s+([^;]+);\s*do\b\s*(.*)$")
VARIABLE = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))")
FROM_DIRECTIVE = re.compile(r"^#\s*(?:run\s+)?from\s+([\w.-]+)/")
# The first word of a line that is a command (others are output or trees shown in a plain ``` block).
SHELL_START = re.compile(r"^(python3?|torchrun|lotterypools-[\w-]+|cd|for|nice|time|nohup|env|bash|pip|[A-Za-z_]\w*=)(\s|$)|^[A-Za-z_]\w*=")
TORCHRUN_SWITCHES = {"--standalone", "--no_python", "--no-python", "--module", "-m"}


@dataclass
class DocCommand:
    """One command line of a doc file: where it is, the folder it runs in, and its words after substitution."""

    source: str
    cwd: Path
    words: list[str]
    unresolved: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.source}: (in {self.cwd.relative_to(REPO) if self.cwd != REPO else '.'}) {shlex.join(self.words)}"


def fenced_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, info string, lines) of every fenced code block."""
    blocks, current, start, info = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and current is None:
            current, start, info = [], number + 1, fence.group(1)
        elif fence:
            blocks.append((start, info, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def joined_lines(lines: list[str], start: int) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, each with its first line's number."""
    out: list[tuple[int, str]] = []
    pending, first = "", start
    for offset, line in enumerate(lines):
        if not pending:
            first = start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def substitute(text: str, variables: dict[str, str], unresolved: list[str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in variables:
            return variables[name]
        unresolved.append(name)
        return f"UNDEFINED_{name}"

    return VARIABLE.sub(value, text)


def segments(line: str) -> list[list[str]]:
    """The words of each command of a line split at ``;``, ``&&`` and ``|`` outside quotes, without a trailing
    comment (variables are substituted before, so ``$C`` splits into words and ``C="a b"`` stays one word)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token in (";", "&&", "||", "&", "|"):
            parts.append([])
        else:
            parts[-1].append(token)
    return [words for words in parts if words]


def doc_commands() -> list[DocCommand]:
    """Every command line in the fenced shell blocks of README.md and docs/*.md."""
    commands = []
    for path in DOC_FILES:
        name = path.relative_to(REPO).as_posix()
        for start, info, lines in fenced_blocks(path.read_text(encoding="utf-8")):
            if info not in SHELL_BLOCKS:
                continue
            cwd, variables = REPO, {}
            for number, line in joined_lines(lines, start):
                stripped = line.strip()
                directive = FROM_DIRECTIVE.match(stripped)
                if directive:
                    cwd = REPO / directive.group(1)
                    continue
                loop = FOR_LOOP.match(stripped)
                if loop:  # the loop body runs with the first value; `done` closes it
                    variables[loop.group(1)] = shlex.split(loop.group(2))[0]
                    stripped = loop.group(3)
                stripped = re.sub(r"(^|;)\s*done\s*$", "", stripped).strip()
                if not stripped or stripped.startswith("#") or not SHELL_START.match(stripped):
                    continue  # output, a folder tree, a comment: not a command
                unresolved: list[str] = []
                try:
                    parts = segments(substitute(stripped, variables, unresolved))
                except ValueError as error:
                    raise ValueError(f"{name}:{number}: not a shell line ({error}): {stripped}") from None
                for words in parts:
                    if len(words) == 1 and ASSIGNMENT.match(words[0]):
                        variable, value = words[0].split("=", 1)
                        variables[variable] = value
                        continue
                    if words[:1] == ["cd"] and len(words) == 2:
                        cwd = (cwd / words[1]).resolve()
                        continue
                    commands.append(DocCommand(f"{name}:{number}", cwd, words, unresolved))
    return commands


def _strip_prefixes(words: list[str]) -> list[str]:
    """Drop ``VAR=value`` environment prefixes and ``nice -n N`` / ``time`` / ``nohup`` wrappers."""
    while words:
        if ENV_PREFIX.match(words[0]):
            words = words[1:]
        elif words[0] == "nice" and len(words) > 2 and words[1] == "-n":
            words = words[3:]
        elif words[0] in ("time", "nohup", "env"):
            words = words[1:]
        else:
            return words
    return words


@dataclass
class Invocation:
    """A documented command resolved to a script (or command module) and the arguments its parser gets."""

    script: Path | None
    module: str | None
    args: list[str]


def resolve(command: DocCommand) -> list[Invocation] | None:
    """The parser invocations of a command (several for a launcher), or None when it is no project command."""
    words = _strip_prefixes(list(command.words))
    if not words:
        return None
    program, rest = words[0], words[1:]
    if program.startswith("lotterypools-"):
        from lotterypools.cli.commands import CONSOLE_COMMANDS

        assert program in CONSOLE_COMMANDS, f"{command}: no console command {program!r}"
        module = f"lotterypools.cli.commands.{CONSOLE_COMMANDS[program]}"
        return [Invocation(None, module, rest)]
    if program == "torchrun":
        while rest and not rest[0].endswith(".py"):
            rest = rest[1:] if rest[0] in TORCHRUN_SWITCHES or "=" in rest[0] else rest[2:]
        return _script_invocations(command, rest)
    if program not in ("python", "python3"):
        return None
    while rest and rest[0] in ("-u", "-O", "-B"):
        rest = rest[1:]
    if rest[:1] == ["-m"]:
        module = rest[1] if len(rest) > 1 else ""
        if not module.startswith("lotterypools.cli.commands."):
            return None  # python -m pytest, python -m lotterypools.cli.flag_table: not a documented script
        return [Invocation(None, module, rest[2:])]
    if not rest or not rest[0].endswith(".py"):
        return None
    return _script_invocations(command, rest)


def _script_invocations(command: DocCommand, words: list[str]) -> list[Invocation]:
    assert words, f"{command}: no script named"
    script = (command.cwd / words[0]).resolve()
    assert script.is_file(), f"{command}: {words[0]} does not exist in {command.cwd} (show the folder it runs from)"
    folder = script.relative_to(REPO).parts[0]
    assert folder in SCRIPT_FOLDERS, f"{command}: {words[0]} is not a script of {', '.join(SCRIPT_FOLDERS)}"
    invocations = [Invocation(script, None, words[1:])]
    if script.name == "multiproc.py":  # the launcher's own flags, then the script it starts with its flags
        launched = _parse(invocations[0], command)
        inner = DocCommand(command.source, script.parent, [launched.script, *launched.script_args])
        invocations += _script_invocations(inner, inner.words)
    return invocations


class DocCommandError(Exception):
    pass


def _raise(message: str) -> None:
    raise DocCommandError(message)


def _load_script(script: Path):
    name = "doc_script_" + "_".join(script.relative_to(REPO).with_suffix("").parts)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent))  # benchmarks import their sibling `common`
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(script.parent))
    sys.modules[name] = module
    return module


def _parser(invocation: Invocation) -> argparse.ArgumentParser | None:
    module = importlib.import_module(invocation.module) if invocation.module else _load_script(invocation.script)
    build = getattr(module, "build_parser", None)
    if build is None and hasattr(module, "main"):  # a wrapper that imports only main: its command module's parser
        build = getattr(importlib.import_module(module.main.__module__), "build_parser", None)
    return build() if build else None


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.error = _raise
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _quiet(sub)


def _parse(invocation: Invocation, command: DocCommand) -> argparse.Namespace:
    parser = _parser(invocation)
    if parser is None:  # a script without flags (benchmarks/parity/check.py)
        assert not invocation.args, f"{command}: {invocation.script.name} takes no arguments"
        return argparse.Namespace()
    _quiet(parser)
    try:
        return parser.parse_args(invocation.args)
    except DocCommandError as error:
        raise AssertionError(f"{command}\n  does not parse: {error}") from None
    except SystemExit as exit_:  # --help or --version in a documented command
        assert exit_.code == 0, f"{command}\n  exits with {exit_.code}"
        return argparse.Namespace()


COMMANDS = doc_commands()


def _is_project_command(command: DocCommand) -> bool:
    """A console command, torchrun, or python running a script file or a command module (not pytest, pip ...)."""
    words = _strip_prefixes(list(command.words))
    if not words:
        return False
    if words[0].startswith("lotterypools-") or words[0] == "torchrun":
        return True
    rest = [w for w in words[1:] if w not in ("-u", "-O", "-B")]
    return words[0] in ("python", "python3") and bool(rest) and (
        rest[0].endswith(".py") or rest[:1] == ["-m"] and rest[1:2] != [] and rest[1].startswith("lotterypools.cli.commands."))


PROJECT_COMMANDS = [c for c in COMMANDS if _is_project_command(c)]


@pytest.mark.parametrize("command", PROJECT_COMMANDS, ids=[c.source for c in PROJECT_COMMANDS])
def test_every_documented_command_parses_with_its_scripts_parser(command):
    invocations = resolve(command)
    assert invocations, f"{command}: not resolved to a script"
    for invocation in invocations:
        _parse(invocation, command)


def test_the_docs_show_many_commands_and_each_uses_only_variables_its_block_defines():
    parsed = PROJECT_COMMANDS
    assert len(parsed) >= 60, f"only {len(parsed)} commands found: is the extraction broken?"
    scripts = {inv.script.name for c in parsed for inv in resolve(c) if inv.script}
    assert {"main_imp.py", "Lottery_pools.py", "main_PrAC_imp.py", "main_EDST.py", "run.py", "multiproc.py",
            "main.py", "aggregate_results.py", "analyze_tickets.py", "bench_training.py"} <= scripts
    unresolved = sorted({f"{c.source} ${name}" for c in parsed for name in c.unresolved})
    assert not unresolved, f"commands with variables that no line of their block defines: {unresolved}"


def test_the_readme_console_command_table_lists_every_console_command_with_its_script():
    from lotterypools.cli.commands import CONSOLE_COMMANDS

    rows = re.findall(r"^\| `(lotterypools-[\w-]+)` \| `([^`]+)` \|", (REPO / "README.md").read_text(), re.M)
    listed = dict(rows)
    assert sorted(listed) == sorted(CONSOLE_COMMANDS), "the README's console-command table differs from CONSOLE_COMMANDS"
    for command, script in listed.items():
        wrapper = (REPO / script).read_text()
        module = f"lotterypools.cli.commands.{CONSOLE_COMMANDS[command]}"
        assert f"from {module} import" in wrapper, f"{script} does not wrap {module} ({command})"


def _markdown_without_code(text: str) -> str:
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*$", re.sub(r"^\s*```.*?^\s*```", "", path.read_text(),
                                                              flags=re.M | re.S), re.M):
        slug = "".join(c for c in heading.lower() if c.isalnum() or c in " -_").replace(" ", "-")
        candidate, n = slug, 1
        while candidate in anchors:
            candidate, n = f"{slug}-{n}", n + 1
        anchors.add(candidate)
    return anchors


@pytest.mark.parametrize("path", LINKED_FILES, ids=[p.relative_to(REPO).as_posix() for p in LINKED_FILES])
def test_every_relative_link_and_anchor_in_the_docs_exists(path):
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _markdown_without_code(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    assert not problems, f"{path.relative_to(REPO)}: " + "; ".join(problems)

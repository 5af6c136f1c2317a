"""The package a user installs: console commands, thin script wrappers, and a --help that loads no torch."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys

import pytest

from helpers import REPO, script_env
from lotterypools.cli.commands import CONSOLE_COMMANDS

SCRIPTS = sorted([*(REPO / "CIFAR").glob("*.py"), *(REPO / "ImageNet").glob("*.py"), *(REPO / "experiments").glob("*.py")])
HEAVY = ("torch", "torchvision", "matplotlib")


def pyproject_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml (read by hand: tomllib needs Python 3.11)."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.:]+)"', section, re.M))


def test_every_console_command_is_declared_and_resolves_to_a_main():
    scripts = pyproject_scripts()
    assert scripts == {name: f"lotterypools.cli.commands.{module}:main" for name, module in CONSOLE_COMMANDS.items()}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("module", sorted(CONSOLE_COMMANDS.values()))
def test_every_command_main_answers_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"lotterypools.cli.commands.{module}").main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_the_scripts_are_thin_wrappers_without_path_edits():
    wrapped = set()
    for script in SCRIPTS:
        tree = ast.parse(script.read_text())
        assert "sys.path" not in script.read_text(), script
        modules = [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
        assert len(modules) == 1 and modules[0].startswith("lotterypools.cli.commands."), script
        assert not [node for node in tree.body if isinstance(node, (ast.Import, ast.FunctionDef, ast.ClassDef))], script
        wrapped.add(modules[0].rsplit(".", 1)[1])
    assert wrapped == set(CONSOLE_COMMANDS.values())


def test_building_every_parser_imports_no_torch_torchvision_or_matplotlib():
    code = ("import importlib, sys\n"
            f"for name in {sorted(CONSOLE_COMMANDS.values())!r}:\n"
            "    importlib.import_module('lotterypools.cli.commands.' + name).build_parser().format_help()\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=script_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_script_answers_help_from_its_folder_without_torch(script):
    code = ("import runpy, sys\n"
            f"sys.argv = [{script.name!r}, '--help']\n"
            f"try:\n    runpy.run_path({script.name!r}, run_name='__main__')\n"
            "except SystemExit as end:\n    assert end.code in (0, None), end.code\n"
            f"print('heavy:', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=script.parent, capture_output=True, text=True,
                            env=script_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and result.stdout.strip().endswith("heavy: []")


@pytest.mark.slow
def test_pip_install_gives_console_commands_that_answer_help(tmp_path):
    """``pip install .`` of a copy of the checkout (no network, no build isolation): every command runs --help."""
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "lotterypools", source / "lotterypools", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "installed"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                              "--quiet", "--target", str(target), str(source)], capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    installed = {path.name for path in (target / "bin").iterdir()}
    assert installed == set(CONSOLE_COMMANDS)
    env = dict(script_env(), PYTHONPATH=str(target))
    for command in sorted(installed):
        result = subprocess.run([str(target / "bin" / command), "--help"], capture_output=True, text=True, env=env,
                                cwd=tmp_path, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr[-1000:])
    metadata = (target / "lotterypools-0.1.0.dist-info" / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata and "Requires-Python: >=3.10" in metadata


def test_the_torch_free_choices_match_the_modules_that_use_them():
    from lotterypools.config import names as choices
    from lotterypools.data import corruptions

    assert choices.CORRUPTION_NAMES == tuple(sorted(corruptions.CORRUPTIONS))

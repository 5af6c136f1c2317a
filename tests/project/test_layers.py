"""The package's layering: each subpackage imports only the ones below it, and only the plotting module draws."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys

import pytest

from helpers import REPO, script_env

PACKAGE = REPO / "lotterypools"


def imported_modules(path) -> set[str]:
    """Top-level names of every module a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_matplotlib_is_imported_only_by_the_plotting_module():
    importers = sorted(str(path.relative_to(REPO)) for path in PACKAGE.rglob("*.py")
                       if "matplotlib" in imported_modules(path))
    assert importers == ["lotterypools/analysis/plots.py"]


def test_the_checker_sees_an_import_of_matplotlib(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def draw():\n    from matplotlib import pyplot\n")
    assert "matplotlib" in imported_modules(module)


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter is not installed")
def test_the_layers_contract_of_pyproject_holds():
    result = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                             "sys.exit(lint_imports_command())"], cwd=REPO, env=script_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout

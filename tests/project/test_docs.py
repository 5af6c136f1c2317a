"""The documentation stays true: the flag table in docs/cli.md is the one the parsers generate."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO, script_env

GENERATE = ("import sys\nfrom lotterypools.cli.flag_table import flag_table\ntable = flag_table()\n"
            "heavy = [m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\nsys.stdout.write(table)\n")


def test_docs_cli_md_is_the_generated_flag_table_and_generating_it_imports_no_torch():
    result = subprocess.run([sys.executable, "-c", GENERATE], cwd=REPO, env=script_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    current = (REPO / "docs" / "cli.md").read_text()
    assert result.stdout == current, ("docs/cli.md is out of date: run "
                                      "`python -m lotterypools.cli.flag_table > docs/cli.md`")


def test_the_flag_table_lists_every_command_and_their_flags():
    from lotterypools.cli.commands import CONSOLE_COMMANDS
    from lotterypools.cli.flag_table import flag_table

    table = flag_table()
    for command in CONSOLE_COMMANDS:
        assert f"## `{command}`" in table
    assert "| `--prune_type` |" in table and "| ood | `--ood_data` |" in table

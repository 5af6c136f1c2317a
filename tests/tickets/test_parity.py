"""The parity check (benchmarks/parity/check.py) against the vendored description of the official FreeTickets
behaviour: every check passes, and a check reports a difference when the reference differs."""

from __future__ import annotations

import copy
import importlib.util

import pytest

from helpers import REPO


def load_check():
    spec = importlib.util.spec_from_file_location("parity_check", REPO / "benchmarks" / "parity" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHECK = load_check()
REFERENCE = CHECK.load_reference()


@pytest.mark.parametrize("name", list(CHECK.all_checks(REFERENCE)))
def test_ours_matches_the_official_behaviour(name):
    assert CHECK.all_checks(REFERENCE)[name]() == []


def test_a_changed_reference_is_reported():
    changed = copy.deepcopy(REFERENCE)
    changed["edst"][0]["lr_per_epoch"][200] = 0.01  # an epoch the official trains at 0.001 (320/150/3)
    entry = changed["erk"][0]
    layer = next(n for n, d in entry["densities"].items() if d < 1)
    entry["densities"][layer] *= 1.01
    changed["mask_update"][0]["layers"][next(iter(changed["mask_update"][0]["layers"]))]["active_after"] += 1
    changed["dst_run"]["updates"][0]["rate"] = 0.48
    checks = CHECK.all_checks(changed)
    assert "EDST 320/150/3: learning rates differ" in checks["schedules (EDST, DST, ImageNet)"]()
    assert any(layer in p for p in checks[f"ERK {entry['model']} density {entry['density']}"]())
    assert checks["mask update conv4 rate 0.5"]() != []
    assert checks["DST run (verbatim flags)"]() != []

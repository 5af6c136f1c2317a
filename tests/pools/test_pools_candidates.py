"""A pool record remembers the candidate rounds it was searched over: a folder that gained tickets recomputes it."""

from __future__ import annotations

from pathlib import Path

import torch

from helpers import tiny_data, tiny_model, write_tickets
from lotterypools.cli.pools import build_evaluator
from lotterypools.formats.original import ticket_files
from lotterypools.pools.results import PoolResultsFile
from lotterypools.pools.run import PoolSettings, evaluate_tickets, run_pool_method
from lotterypools.pools.store import TicketStore

METHOD = "Lottery_pools"


def settings(search_num: int = 2) -> PoolSettings:
    return PoolSettings(METHOD, search_num, (0.3, 0.7), 0.95, bn_batches=2, bn_batch_size=16, arch="conv2",
                        dataset="tiny", ticket_folder="tickets")


def run_over(folder: Path, count: int, out: Path, search_num: int = 2) -> tuple[list[dict], list[str]]:
    """The folder holding rounds 0..count-1 (the same tickets each time), then one pool run as a rerun does it:
    the records already in ``out`` are the ones done. Returns the records made and the lines logged."""
    write_tickets(folder, count)
    store = TicketStore(ticket_files(folder), tiny_model().state_dict(), "conv2 on tiny")
    evaluator = build_evaluator(tiny_model(), tiny_data(), torch.device("cpu"), 16, 2, 0)
    results = PoolResultsFile(out)
    lines: list[str] = []
    made = run_pool_method(settings(search_num), store, evaluator, evaluate_tickets(store, evaluator),
                           results=results, done=list(results.records), log=lines.append)
    return made, lines


def stored(out: Path, target: int) -> list[dict]:
    return [r for r in PoolResultsFile(out).records if r["method"] == METHOD and r["target_round"] == target]


def test_a_record_made_from_one_ticket_is_recomputed_once_the_folder_has_more(tmp_path):
    folder, out = tmp_path / "tickets", tmp_path / "out"
    made, lines = run_over(folder, 1, out)
    assert [r["candidate_rounds"] for r in made] == [[]] and made[0]["chosen_rounds"] == []
    assert sum("holds one ticket" in line and "nothing to pool" in line for line in lines) == 1, lines

    made, lines = run_over(folder, 3, out)  # IMP went on: rounds 1 and 2 were added
    assert [r["target_round"] for r in made] == [0, 1, 2]
    assert any(line.startswith(f"{METHOD} round 0: recomputed") and "candidate rounds 1 (the record had none)" in line
               for line in lines), lines
    assert not any("skipped" in line or "holds one ticket" in line for line in lines), lines
    records = stored(out, 0)
    assert len(records) == 1 and records[0]["candidate_rounds"] == [1]  # replaced, not duplicated

    made, lines = run_over(folder, 3, out)  # nothing changed: everything is skipped
    assert made == []
    assert any("skipped rounds 0 1 2" in line for line in lines) and not any("recomputed" in line for line in lines)
    assert len(stored(out, 0)) == 1


def test_a_record_without_candidate_rounds_is_kept_as_before(tmp_path):
    folder, out = tmp_path / "tickets", tmp_path / "out"
    run_over(folder, 1, out)
    old = {k: v for k, v in stored(out, 0)[0].items() if k != "candidate_rounds"}
    results = PoolResultsFile(out)
    results.commit([dict(old, test_acc=-1.0)])  # as written before the field existed (marked to be recognised)
    assert "candidate_rounds" not in stored(out, 0)[0]

    made, lines = run_over(folder, 3, out)
    assert [r["target_round"] for r in made] == [1, 2]
    assert any("skipped rounds 0 " in line for line in lines) and not any("recomputed" in line for line in lines)
    assert [r["test_acc"] for r in stored(out, 0)] == [-1.0]


def test_search_num_above_the_number_of_tickets_is_noted_as_capped(tmp_path):
    made, lines = run_over(tmp_path / "tickets", 2, tmp_path / "out", search_num=99)
    assert [r["candidate_rounds"] for r in made] == [[1], [0]]
    assert sum("--search_num 99 is capped at 2" in line for line in lines) == 1, lines
    _, lines = run_over(tmp_path / "tickets", 2, tmp_path / "out2", search_num=2)
    assert not any("capped" in line or "holds one ticket" in line for line in lines), lines

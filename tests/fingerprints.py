"""Fingerprints of tiny IMP, PrAC and FreeTickets runs: a hash of every tensor and number each run writes.

Run ``python tests/fingerprints.py OUT.json`` before and after a change to the training code; identical
JSON means the runs wrote the same files with the same keys and bit-identical tensors. Pickle bytes are
not compared (they hold timings); keys named ``seconds`` and timing-only files are left out.
Not a test module (no ``test_`` prefix): a tool for refactors that must not change results.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers.py beside this file
torch.set_num_threads(1)

from helpers import folder_fingerprint  # noqa: E402

def imp_run(folder: Path) -> None:
    from helpers import tiny_imp_run

    tiny_imp_run(folder).run()


def prac_run(folder: Path) -> None:
    from helpers import CPU, tiny_config, tiny_model_factory, tiny_splits
    from lotterypools.tickets.prac_imp import PrACRun, PrACSettings

    config = tiny_config(epochs=4, milestones=[2, 3], rewind_epoch=1)
    PrACRun(config, tiny_model_factory(), tiny_splits(train=128), CPU, folder, PrACSettings(), log=lambda line: None,
            progress=False).run()


def freetickets_run(script: str, folder: Path, data: Path, *extra: str) -> None:
    import importlib

    tiny = ["--model", "conv2", "--data", "fashionmnist", "--no_download", "--device", "cpu", "--batch-size", "25",
            "--test-batch-size", "500", "--data_dir", str(data), "--seed", "3", "--save_dir", str(folder)]
    importlib.import_module(f"lotterypools.cli.commands.{script}").main([*tiny, *extra])


SPARSE = ["--sparse", "--sparse-init", "ERK", "--update-frequency", "2", "--density", "0.3", "--growth", "gradient"]


def main(out: str) -> None:
    from helpers import write_mnist_like

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_mnist_like(root / "data" / "fashionmnist", train=5100, test=60)
        imp_run(root / "imp")
        prac_run(root / "prac")
        freetickets_run("main_edst", root / "edst", root / "data", *SPARSE, "--epochs-explo", "1", "--model-num", "2",
                        "--epochs", "3")
        freetickets_run("main_dst", root / "dst", root / "data", *SPARSE, "--epochs", "2")
        freetickets_run("main_individual", root / "individual", root / "data", "--epochs", "2")
        freetickets_run("main_pf", root / "pf", root / "data", *SPARSE[:1], "--sparse-init", "pruning", "--epochs", "1",
                        "--pretrain", str(root / "individual" / "3.pt"), "--density", "0.5")
        result = {name: folder_fingerprint(root / name) for name in ("imp", "prac", "edst", "dst", "individual", "pf")}
        text = json.dumps(result, indent=1, sort_keys=True).replace(str(root), "<tmp>")  # paths recorded in settings
    Path(out).write_text(text)
    print(f"wrote {out}: {sum(len(v) for v in result.values())} files")


if __name__ == "__main__":
    main(sys.argv[1])

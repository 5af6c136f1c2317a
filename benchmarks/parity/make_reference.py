r"""Write official_reference.json: what the official FreeTickets code (VITA-Group/FreeTickets e5540d1) computes,
from transcriptions of its formulas below (file:line of that commit), so that check.py and tests/tickets/test_parity.py
can compare ours with it without the official code.

Only the architectures' weight shapes come from this project's models (the audit checked them equal to the
official registry's); every number is the official formula's. Rerun only when the official code is re-read:
    python benchmarks/parity/make_reference.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

HERE = Path(__file__).resolve().parent
# (model, classes, channels, side): official registry models on their data, and the audit's other models
ERK_MODELS = [("wrn-28-10", 10, 3, 32), ("wrn-16-8", 10, 3, 32), ("vgg-d", 10, 3, 32), ("alexnet-s", 10, 3, 32),
              ("lenet5", 10, 1, 28), ("resnet20s", 10, 3, 32), ("vgg16_bn", 10, 3, 32), ("conv4", 10, 3, 32)]
DENSITIES = (0.2, 0.05)
UPDATE_MODELS = [("conv4", 10, 3, 32, 0.2), ("wrn-10-2", 10, 3, 32, 0.2)]


def official_erk(shapes: dict[str, list[int]], density: float) -> dict[str, float]:
    """sparselearning/core.py:177-260 (mode ERK, erk_power_scale 1), without the Bernoulli draw."""
    dense_layers: set[str] = set()
    while True:
        divisor, rhs, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n_param = np.prod(shape)
            if name in dense_layers:
                rhs -= n_param * (1 - density)
            else:
                rhs += n_param * density
                raw[name] = np.sum(shape) / np.prod(shape)
                divisor += raw[name] * n_param
        epsilon = rhs / divisor
        max_prob = np.max(list(raw.values()))
        if max_prob * epsilon > 1:
            dense_layers.update(n for n, p in raw.items() if p == max_prob)
        else:
            return {n: 1.0 if n in dense_layers else float(epsilon * raw[n]) for n in shapes}


def official_update(shapes: dict[str, list[int]], densities: dict[str, float], rate: float) -> dict[str, dict]:
    """One truncate_weights(rate) with gradient growth (core.py:384-436, 479-488, 616-626), per layer, starting
    from round(d_i * N_i) active weights: magnitude death removes ceil(rate * active); gradient growth puts back
    as many; an ERK-dense layer's mask is reset to all ones, its ceil(rate * N) smallest weights left at zero."""
    out = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        active = size if densities[name] == 1.0 else round(densities[name] * size)
        removed = math.ceil(rate * active)
        dense = densities[name] == 1.0
        out[name] = {"active": active, "removed": removed, "active_after": size if dense else active,
                     "zeroed_in_mask": removed if dense else 0, "dense": dense}
    return out


def official_edst(epochs: int, epochs_explo: int, model_num: int) -> dict:
    """main_EDST.py:49-59 (minestone_calculation) and 313-321 (the lr set at the end of 1-based epochs), 303-311
    (ticket file of an epoch): lr per epoch, epochs after which a large death happens, ticket per epoch."""
    individual_epoch = (epochs - epochs_explo) / model_num
    reset_lr_epochs1, epoch_ = [], epochs_explo
    for _ in range(model_num):
        reset_lr_epochs1.append(epoch_)
        epoch_ = epoch_ + individual_epoch
    reset_lr_epochs2 = np.array(reset_lr_epochs1) + individual_epoch / 2
    reset_lr_epochs1.pop(0)
    minestone1, minestone2 = np.ceil(reset_lr_epochs1), np.ceil(reset_lr_epochs2)
    lr, lrs, deaths, tickets = 0.1, [], [], []
    for epoch in range(1, epochs + 1):
        lrs.append(lr)
        tickets.append(int((epoch - epochs_explo - 1) // individual_epoch) if epoch > epochs_explo else -1)
        if epoch == epochs_explo:
            lr = 0.01
        elif epoch in minestone2:
            lr = 0.001
        elif epoch in minestone1:
            deaths.append(epoch)
            lr = 0.01
    return {"epochs": epochs, "epochs_explo": epochs_explo, "model_num": model_num, "lr_per_epoch": lrs,
            "large_death_after_epoch": deaths, "ticket_per_epoch": tickets}


def official_dst_lrs(epochs: int, multiplier: int, lr: float = 0.1) -> list[float]:
    """main_DST.py:255-257, 290: MultiStepLR at int(epochs/2), int(epochs*3/4) of --epochs, epochs*multiplier epochs."""
    milestones = [int(epochs / 2), int(epochs * 3 / 4)]
    return [lr * 0.1 ** sum(e >= m for m in milestones) for e in range(epochs * multiplier)]


def official_imagenet_lrs(lr: float = 0.1, warmup: int = 5, epochs: int = 310) -> list[float]:
    """ImageNet/main.py:352-377: warm-up lr*(e+1)/(warmup+1), then 0.1 / 0.01 / 0.001 / 1e-4 at its milestones."""
    m0, m1, m2, m3 = [warmup], [30, 100, 170, 240], [60, 130, 200, 270], [90, 160, 230, 300]
    out, current = [], lr
    for epoch in range(epochs):
        if epoch < warmup:
            current = lr * (epoch + 1) / (warmup + 1)
        elif epoch in m0:
            current = 0.1
        elif epoch in m1:
            current = 0.01
        elif epoch in m2:
            current = 0.001
        elif epoch in m3:
            current = 0.0001
        out.append(current)
    return out


def official_dst_run(update_frequency: int, steps: int, death_rate: float) -> list[dict]:
    """core.py:109-122: after optimizer.step, every update_frequency-th step (1-based counter) truncates with the
    constant --death-rate (the cosine decay is computed and unused)."""
    return [{"step": s, "rate": death_rate} for s in range(1, steps + 1) if s % update_frequency == 0]


def shapes_of(arch: str, classes: int, channels: int, side: int) -> dict[str, list[int]]:
    from lotterypools.models import build_model
    from lotterypools.training.sparse import sparse_weight_names

    model = build_model(arch, classes, channels, (0.5,) * channels, (0.5,) * channels, side)
    params = dict(model.named_parameters())
    return {name: list(params[name].shape) for name in sparse_weight_names(model)}


def main() -> None:
    reference = {
        "source": "VITA-Group/FreeTickets e5540d1 (sparselearning/core.py, main_DST.py, main_EDST.py, ImageNet/main.py, "
                  "sparselearning/utils.py), transcribed in benchmarks/parity/make_reference.py",
        "flag_defaults": {"death_rate": 0.5, "large_death_rate": 0.8, "density": 0.05, "update_frequency": 1000,
                          "growth": "random", "death": "magnitude", "redistribution": "none", "sparse_init": "ER"},
        "cifar10_pipeline": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010], "padding": 4,
                             "padding_mode": "reflect", "flip": True},
        "cifar100_pipeline": {"mean": [0.5070751592371323, 0.48654887331495095, 0.4409178433670343],
                              "std": [0.2673342858792401, 0.2564384629170883, 0.27615047132568404], "padding": 4,
                              "padding_mode": "constant", "flip": True},
        "erk": [], "mask_update": [],
        "edst": [official_edst(320, 150, 3), official_edst(450, 150, 3), official_edst(250, 100, 4)],
        "dst_lrs": {"epochs": 250, "multiplier": 2, "lr_per_epoch": official_dst_lrs(250, 2)},
        "imagenet_lrs": {"lr": 0.1, "warmup": 5, "epochs": 310, "lr_per_epoch": official_imagenet_lrs()},
        "dst_run": {"update_frequency": 2, "steps": 8, "death_rate": 0.5, "updates": official_dst_run(2, 8, 0.5)},
    }
    for arch, classes, channels, side in ERK_MODELS:
        shapes = shapes_of(arch, classes, channels, side)
        for density in DENSITIES:
            reference["erk"].append({"model": arch, "input": [channels, side, side], "classes": classes, "density": density,
                                     "shapes": shapes, "densities": official_erk(shapes, density)})
    for arch, classes, channels, side, density in UPDATE_MODELS:
        shapes = shapes_of(arch, classes, channels, side)
        densities = official_erk(shapes, density)
        for rate in (0.5, 0.8):
            reference["mask_update"].append({"model": arch, "input": [channels, side, side], "classes": classes,
                                             "density": density, "rate": rate,
                                             "layers": official_update(shapes, densities, rate)})
    (HERE / "official_reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {HERE / 'official_reference.json'}")


if __name__ == "__main__":
    main()

"""Flags and the CIFAR driver shared by FreeTickets' main_DST.py, main_EDST.py, main_individual.py and main_PF.py.

Flags keep the original spelling (``--sparse-init``, ``--death-rate``, ``--data cifar10`` naming the data set);
``--data_dir`` says where data lives and ``--save_dir`` where tickets go. No torch import at module level.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..config.settings import add_config_arguments, config_from_args
from ..config.sparse import DEFAULT_EPOCHS, FREETICKETS_DEFAULTS, FreeTicketsSettings, SparseConfig
from .aliases import add_no_effect_flags, aliases_of, say_no_effect

# Scripts whose original ran the CIFAR sparse-training core (sparselearning/core.py); the ImageNet script's
# original core decays the death rate and masks momentum, so there ours is the default.
ORIGINAL_CORE_METHODS = ("DST", "EDST", "PF", "individual")


def add_sparse_arguments(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    """The original ``sparselearning.core.add_sparse_args`` flags (generated from
    :class:`~lotterypools.config.sparse.SparseConfig`), plus switches back to the original's behaviour."""
    add_config_arguments(parser, {"sparse": "sparse training (sparselearning/core.py)"}, cls=FreeTicketsSettings)
    add_config_arguments(parser, {"sparse": "sparse training (sparselearning/core.py)"}, cls=SparseConfig,
                         defaults=defaults)
    original = parser.add_argument_group(
        "dynamic sparse training: the original's behaviour (default in the CIFAR scripts) or ours",
        "A verbatim FreeTickets command trains as the official CIFAR code does: constant --death-rate, momentum "
        "of masked weights left as it is, death and regrowth in layers ERK made dense. Each switch below gives "
        "ours instead; --improved-dst gives all three.")
    original.add_argument("--constant-death-rate", action="store_true", default=None,
                          help="always remove --death-rate (the original's behaviour; default in the CIFAR scripts)")
    original.add_argument("--decayed-death-rate", action="store_true", default=None,
                          help="ours: the death rate follows --decay-schedule over each phase")
    original.add_argument("--stale-momentum", action="store_true", default=None,
                          help="leave momentum buffers of masked weights unmasked, so regrown weights inherit them "
                               "(the original CIFAR code; default in the CIFAR scripts)")
    original.add_argument("--clear-regrown-momentum", action="store_true", default=None,
                          help="ours: zero the momentum of masked weights, so a regrown weight starts with none")
    original.add_argument("--reset-dense-layers", action="store_true", default=None,
                          help="apply death to layers ERK made dense, zeroing their smallest weights at every update "
                               "(the original; default in the CIFAR scripts)")
    original.add_argument("--keep-dense-layers", action="store_true", default=None,
                          help="ours: death and growth leave the layers ERK made dense alone")
    original.add_argument("--improved-dst", action="store_true",
                          help="preset: --decayed-death-rate --clear-regrown-momentum --keep-dense-layers")


# (original flag, our flag, SparseConfig field, the field's value under the original flag)
DST_SWITCHES = (("--constant-death-rate", "--decayed-death-rate", "constant_death_rate", True),
                ("--stale-momentum", "--clear-regrown-momentum", "stale_momentum", True),
                ("--reset-dense-layers", "--keep-dense-layers", "reset_dense_layers", True))


def dst_switches(args: argparse.Namespace, original_default: bool) -> dict[str, bool]:
    """The three DST behaviours from the paired flags: the original's unless the other flag (or
    ``--improved-dst``) asks for ours; ``original_default`` says which applies when neither is given."""
    from ..core.errors import UserError

    improved = getattr(args, "improved_dst", False)
    dest = lambda flag: getattr(args, flag[2:].replace("-", "_"), None)
    values = {}
    for original_flag, our_flag, field, original_value in DST_SWITCHES:
        wants_original, wants_ours = dest(original_flag), dest(our_flag) or improved
        if wants_original and wants_ours:
            raise UserError(f"{original_flag} and {our_flag if dest(our_flag) else '--improved-dst'} contradict "
                            f"each other: give one of them")
        use_original = bool(wants_original) or (not wants_ours and original_default)
        values[field] = original_value if use_original else not original_value
    return values


def add_training_arguments(parser: argparse.ArgumentParser, method: str, script: str) -> None:
    """Optimiser, data, model and file flags of the CIFAR FreeTickets scripts: IMPConfig's optimiser fields and
    FreeTicketsSettings' own, with FreeTickets' defaults and the script's original spellings (``--data``, ``--l2``)."""
    aliases = aliases_of(script)
    add_config_arguments(parser, {"model": "model", "data": "data set"}, defaults=FREETICKETS_DEFAULTS,
                         only=("dataset", "seed"), aliases=aliases)
    add_config_arguments(parser, {"model": "model"}, cls=FreeTicketsSettings, aliases=aliases)
    add_config_arguments(parser, {"training": "training"}, aliases=aliases,
                         defaults={**FREETICKETS_DEFAULTS, "epochs": DEFAULT_EPOCHS[method]},
                         only=("epochs", "batch_size", "lr", "momentum", "weight_decay"))
    groups = {"evaluation": "evaluation", "schedule": "schedule"}
    if method in ("DST", "individual"):
        groups["multiplier"] = "schedule"
    if method == "EDST":
        groups["edst"] = "EDST"
    if method == "PF":
        groups["pf"] = "PF"
    add_config_arguments(parser, groups, cls=FreeTicketsSettings, aliases=aliases)
    files = parser.add_argument_group("files and device")
    files.add_argument("--data_dir", default="../data", help="folder holding (or receiving) the data set (default ../data)")
    files.add_argument("--save_dir", default=None, help="folder for the tickets (default: the original's results/<model>/<data>/... layout)")
    files.add_argument("--no_download", action="store_true", help="never download a missing data set")
    files.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    add_no_effect_flags(parser, script)


def build_parser(method: str, description: str, script: str) -> argparse.ArgumentParser:
    """A parser with every flag of one FreeTickets CIFAR script (``script``: its command module, for its aliases)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_training_arguments(parser, method, script)
    add_sparse_arguments(parser, defaults={"sparse_init": "ER"})  # the original CIFAR flag's default
    return parser


def density_name(density: float) -> str:
    """``0.2`` -> ``density_0.2`` (the original wrote ``density_0.19999999999999996`` for PF)."""
    return f"density_{density:g}"


def default_save_dir(args: argparse.Namespace, method: str, density: float) -> Path:
    """The original's result folders (``results/`` under the working directory)."""
    base = Path("results") / args.model / args.dataset
    if method == "DST":
        return base / density_name(density) / "DST" / f"seed={args.seed}"
    if method == "EDST":
        return base / "random" / f"seed{args.seed}" / density_name(density) / "EDST" / f"M={args.model_num}"
    if method == "PF":
        return base / density_name(density) / "PF"
    return base / "individual" / (density_name(density) if args.sparse else "dense")


def sparse_config(args: argparse.Namespace, method: str):
    """The :class:`~lotterypools.training.sparse.SparseConfig` of the flags (PF: ``--PF-rate`` sets the density)."""
    from ..core.errors import UserError

    density = args.density
    if method == "PF":
        if args.sparse_init not in ("pruning", "resume"):
            raise UserError(f"main_PF.py prunes the pretrained model: use --sparse-init pruning (global magnitude) "
                            f"or resume (keep its zeros), not {args.sparse_init}")
        if args.pf_rate is not None:
            density = 1.0 - args.pf_rate
    config = config_from_args(args, cls=SparseConfig, density=density,
                              **dst_switches(args, original_default=method in ORIGINAL_CORE_METHODS))
    return config


def training_plan(args: argparse.Namespace, method: str):
    """The learning rates and ticket phases of the method."""
    from ..tickets.freetickets import REFINE_LRS, edst_plan, single_plan

    if method == "EDST":
        return edst_plan(args.epochs, args.epochs_explo, args.model_num, args.lr,
                         refine_lrs=None if args.relative_refine_lr else REFINE_LRS)
    if method == "PF":
        return single_plan(args.epochs, args.lr, Path(args.pretrain).name, schedule=False)
    ticket = "model.pth" if method == "DST" else f"{args.seed}.pt"
    multiplier = getattr(args, "multiplier", 1)
    plan = single_plan(args.epochs * multiplier, args.lr, ticket, schedule=not args.nolrsche, milestone_epochs=args.epochs)
    if plan.lrs and plan.lrs[0] != args.lr:  # both milestones (50% and 75% of the epochs) fall on epoch 0
        print(f"note: with --epochs {args.epochs} the original's lr drops at 50% and 75% of the epochs both fall on "
              f"epoch 0, so the whole run trains at lr {plan.lrs[0]:g}, not --lr {args.lr:g}; use --epochs 4 or "
              f"more for the decaying schedule, or --nolrsche for a constant --lr", flush=True)
    return plan


def load_pretrain(path: str, factory, model_name: str, data: str) -> dict:
    """PF's dense model: a bare state dict or a checkpoint with ``state_dict``, checked against ``--model``."""
    from ..core.torchfiles import holds_pruning_buffers, load_file, state_dict_of, tensor_differences
    from ..core.errors import UserError
    from ..core.provenance import check_tickets_match
    from ..data.datasets import freetickets_spec

    saved = load_file(path)
    spec = freetickets_spec(data)  # a model of another data set (or normalisation) is refused before its shapes
    check_tickets_match(path, data, "--pretrain", spec.mean, spec.std, saved if isinstance(saved, dict) else None)
    state = state_dict_of(saved, Path(path))
    reference = factory().state_dict()
    differ = tensor_differences(state, reference).names
    if differ and holds_pruning_buffers(state):
        raise UserError(f"--pretrain {path} is an IMP checkpoint (weight_orig/weight_mask pruning buffers), not a "
                        f"dense model: give a dense state dict, e.g. main_individual.py's <seed>.pt")
    if differ:
        raise UserError(f"--pretrain {path} is not a {model_name} for {data} ({len(differ)} tensors differ, e.g. "
                        f"{differ[0]}): give a checkpoint of --model {model_name}")
    return state


def run_cifar(args: argparse.Namespace, method: str) -> list[dict]:
    """Check the flags, then train one FreeTickets run on an in-memory data set; returns its tickets' records."""
    from dataclasses import replace

    from ..data.datasets import freetickets_spec, load_dataset
    from ..core.device import resolve_device, seed_everything
    from ..core.errors import UserError
    from ..core.files import check_writable_folder
    from ..tickets.freetickets import FreeTicketsRun, RunConfig, cifar_sources
    from ..models import build_model
    from ..core.console import log, progress_wanted

    if method == "PF" and not args.pretrain:  # before anything reads its file name
        raise UserError("main_PF.py needs --pretrain <dense model file> (e.g. from main_individual.py)")
    config = sparse_config(args, method)
    plan = training_plan(args, method)
    say_no_effect(args)
    check_data_set_name(args.dataset)
    spec = freetickets_spec(args.dataset)  # FreeTickets' own CIFAR-10 pipeline, not the Lottery Pools one
    factory = lambda: build_model(args.model, spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size)
    factory()  # an unknown --model fails here, before data is read
    start = load_pretrain(args.pretrain, factory, args.model, args.dataset) if method == "PF" else None
    save_dir = Path(args.save_dir) if args.save_dir else default_save_dir(args, method, config.density)
    check_writable_folder(save_dir, "--save_dir", create=False)  # made once the data is read: a refusal leaves nothing
    device = resolve_device(args.device)
    seed_everything(args.seed)
    data = replace(load_dataset(args.dataset, args.data_dir, download=not args.no_download), spec=spec)
    check_writable_folder(save_dir, "--save_dir")
    log(f"{method}: {args.model} on {args.dataset} ({len(data.train)} train / {len(data.val)} val / {len(data.test)} test), "
        f"{'sparse, density ' + format(config.density, 'g') if args.sparse else 'dense'}, {plan.epochs} epochs, "
        f"{len(plan.phases)} phase(s), device {device}; tickets in {save_dir}")
    run_config = RunConfig(method=method, model=args.model, data=args.dataset, seed=args.seed, batch_size=args.batch_size,
                           lr=args.lr, momentum=args.momentum, l2=args.weight_decay, sparse=args.sparse, sparse_config=config,
                           pretrain=str(args.pretrain) if method == "PF" else None)
    train, evaluate, trajectory = cifar_sources(data, args.batch_size, args.test_batch_size, device, args.seed)
    if getattr(args, "select_on_test", False):
        evaluate = selecting_on_test(evaluate)
    name = {"DST": "dst", "EDST": "edst", "individual": f"seed{args.seed}"}.get(method) or Path(args.pretrain).stem
    from ..core.provenance import data_provenance

    run = FreeTicketsRun(run_config, plan, factory, train, evaluate, device, save_dir, name=name, start_weights=start,
                         trajectory=trajectory, bare_tickets=method == "individual", progress=progress_wanted(),
                         data_provenance=data_provenance(data))
    return run.run()


def check_data_set_name(name: str) -> None:
    """One line for a folder given where FreeTickets' ``--data`` expects a data set's name (its original meaning)."""
    from ..core.errors import UserError
    from ..data.datasets import freetickets_spec

    try:
        freetickets_spec(name)
    except UserError:
        if "/" in name or os.sep in name or Path(name).is_dir():
            raise UserError(f"--data {name} looks like a folder: in the FreeTickets scripts --data names the data set "
                            f"(as in the original), e.g. --data cifar10; give the folder as --data_dir {name}") from None
        raise


def selecting_on_test(evaluate):
    """The original main_individual.py's selection: the test accuracy stands in for the validation accuracy."""
    def swapped(model):
        stats = evaluate(model)
        return {**stats, "val": stats["test"]}
    return swapped

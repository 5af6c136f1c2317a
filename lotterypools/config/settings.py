"""Hyperparameters declared once: dataclasses whose fields carry their flags and help, and the argparse glue.

:class:`IMPConfig` holds everything that decides an IMP run (and a retraining, which is one IMP round);
its defaults are those of ``CIFAR/main_imp.py``, which follow the original's ``main_imp.py`` flags.
Other scripts take the same fields with their own documented defaults (``OPENLTH_IMAGENET_DEFAULTS``).
:func:`add_config_arguments` turns the fields into argparse groups, :func:`config_from_args` turns the
parsed flags back into a config, and :func:`changed_settings` says which result-deciding settings two
configs disagree on (what ``--resume`` refuses). This module imports no torch, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .names import LOADERS, PRUNE_TYPES
from ..core.errors import UserError

TICKET_POLICIES = ("best_val", "last")


def setting(default: Any, help: str, *, flags: tuple[str, ...] = (), group: str = "training",
            affects_result: bool = True, choices: tuple[str, ...] | None = None, minimum: float | None = None,
            maximum: float | None = None, above: float | None = None, below: float | None = None,
            positive: bool = False, type: type | None = None, nargs: str | None = None) -> Any:
    """A dataclass field with its command-line spelling(s), help text, valid range and whether it changes the result.

    ``flags`` defaults to ``--<name>``; extra spellings (the originals') are aliases. Settings that do not
    change the result (workers, speed options, the number of rounds still to train) may differ on resume.
    The range: ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones, ``positive``
    means ``above=0``; a list is checked element by element. :func:`add_config_arguments` refuses an
    out-of-range value while parsing (one line, no traceback), :func:`check_ranges` checks a built config.
    ``type`` and ``nargs`` are for flags whose default (``None``, a list of numbers) does not show them.
    """
    meta = {"help": help, "flags": flags, "group": group, "affects_result": affects_result, "choices": choices,
            "minimum": minimum, "maximum": maximum, "above": 0 if positive and above is None else above,
            "below": below, "type": type, "nargs": nargs}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _bound(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def range_problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` against a field's declared range (``None`` when it is inside or undeclared).

    The wording is the error's tail: ``"--rate 1.5" + " is outside (0, 1)"``.
    """
    if isinstance(value, (list, tuple)):
        for item in value:
            problem = range_problem(item, meta)
            if problem:
                return problem
        return None
    if value is None or isinstance(value, (bool, str)):
        return None
    low, high = meta.get("minimum"), meta.get("maximum")
    above, below = meta.get("above"), meta.get("below")
    inside = ((low is None or value >= low) and (high is None or value <= high)
              and (above is None or value > above) and (below is None or value < below))
    if inside:
        return None
    if (low is not None or above is not None) and (high is not None or below is not None):
        left = f"[{_bound(low)}" if low is not None else f"({_bound(above)}"
        right = f"{_bound(high)}]" if high is not None else f"{_bound(below)})"
        return f"is outside {left}, {right}: give a value in that range"
    if above is not None:
        return "must be positive" if above == 0 else f"must be above {_bound(above)}"
    if low is not None:
        return "must be 0 or more" if low == 0 else f"must be at least {_bound(low)}"
    return f"must be at most {_bound(high)}" if high is not None else f"must be below {_bound(below)}"


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def check_ranges(config: Any, spelling: Mapping[str, str] | None = None) -> None:
    """One-line :class:`UserError` for the first field of a built config outside its declared range.

    ``spelling`` maps field names to the flag the user typed (default: the field's first flag).
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        problem = range_problem(value, f.metadata)
        if problem:
            flag = (spelling or {}).get(f.name) or _flag_of(f)
            raise UserError(f"{flag} {_shown(value)} {problem}")


def _flag_of(f: dataclasses.Field) -> str:
    flags = f.metadata.get("flags") or (f"--{f.name}",)
    return next((flag for flag in flags if flag.startswith("--")), flags[0])  # --batch_size rather than -b


@dataclass
class IMPConfig:
    """Everything that decides an IMP run's result (defaults: ``CIFAR/main_imp.py``, i.e. the original's flags)."""

    arch: str = setting("resnet20s", "architecture: resnet18, resnet50, resnet20s, resnet44s, resnet56s, vgg16_bn, "
                                      "conv2, conv4, conv6; the PrAC names res18, res50, res20s, res56s are aliases",
                         group="model")
    dataset: str = setting("cifar10", "data set: cifar10, cifar100, fashionmnist or mnist", group="data")
    epochs: int = setting(182, "training epochs (per IMP round; of the whole run in FreeTickets)", minimum=1)
    batch_size: int = setting(128, "global batch size: the images of one optimiser step, split evenly over the "
                                   "processes when there are several", flags=("-b", "--batch_size"),
                                   minimum=1)
    lr: float = setting(0.1, "initial (peak) learning rate", positive=True)
    momentum: float = setting(0.9, "SGD momentum", minimum=0)
    weight_decay: float = setting(1e-4, "weight decay", minimum=0)
    milestones: list[int] = setting([91, 136], "comma-separated epochs at which the lr is divided by 10",
                                    flags=("--decreasing_lr", "--milestones"), minimum=1)
    warmup: int = setting(0, "epochs of linear learning-rate warm-up", minimum=0)
    seed: int = setting(1, "random seed (the Lottery Pools paper's CIFAR runs use 41, FreeTickets' README 17)", group="model")
    amp: bool = setting(False, "bf16 autocast for training and evaluation (--fp16 is the same)",
                        flags=("--amp", "--fp16"))
    channels_last: bool = setting(False, "channels-last memory format (faster convolutions on GPUs)",
                                  affects_result=False)
    compile: bool = setting(False, "torch.compile the model (slow start, faster steps on GPUs)", affects_result=False)
    loader: str = setting("resident", "resident: the data set as uint8 on the device, crop/flip there; dataloader: "
                                      "PIL images through torchvision transforms and a DataLoader with --workers, as "
                                      "the original", choices=LOADERS)
    workers: int = setting(2, "data-loading worker processes (per process)", flags=("-j", "--workers"),
                           affects_result=False, minimum=0)
    pruning_times: int = setting(16, "number of trained networks: the dense one plus pruning_times-1 pruned ones",
                                 group="pruning", affects_result=False, minimum=1)
    rate: float = setting(0.2, "fraction of the remaining weights pruned per round", group="pruning",
                        above=0, below=1)
    prune_type: str = setting("lt", "lt: rewind to initialisation; rewind_lt: to epoch --rewind_epoch (weights and "
                                    "lr schedule); pt: to the best dense weights", group="pruning", choices=PRUNE_TYPES)
    random_prune: bool = setting(False, "prune at random instead of by magnitude", group="pruning")
    rewind_epoch: int = setting(3, "epoch to rewind weights and lr schedule to, for rewind_lt (a count of "
                                   "epochs: 3 = after 3 epochs)", group="pruning", minimum=0)
    include_linear: bool = setting(False, "prune linear layers too, not only conv layers", group="pruning")
    ticket: str = setting("best_val", "which epoch's weights are a round's ticket: best_val (the best validation "
                                      "accuracy, the original's) or last (OpenLTH's)", group="pruning",
                          choices=TICKET_POLICIES)

    def validate(self, world_size: int = 1) -> None:
        """One-line errors for settings that cannot work together (checked before any work starts).

        ``world_size`` is the number of training processes: the global batch must divide evenly over them.
        """
        check_ranges(self)
        if self.batch_size % world_size:
            raise UserError(f"--batch_size {self.batch_size} is the global batch: it must divide evenly over "
                            f"{world_size} processes")
        for name, allowed in (("prune_type", PRUNE_TYPES), ("ticket", TICKET_POLICIES), ("loader", LOADERS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"unknown --{name} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.prune_type == "rewind_lt" and not 0 <= self.rewind_epoch < self.epochs:
            raise UserError(f"--rewind_epoch {self.rewind_epoch} must be at least 0 and below --epochs {self.epochs}")

    def schedule_notes(self) -> list[str]:
        """Settings that work together but probably not as meant, said out loud before training (not refused)."""
        late = [m for m in self.milestones if m >= self.epochs]
        if not late:
            return []
        kept = [m for m in self.milestones if m < self.epochs]
        return [f"note: --decreasing_lr {','.join(map(str, late))} is at or after the last epoch (--epochs "
                f"{self.epochs}), so {'that drop never happens' if len(late) == 1 else 'those drops never happen'}"
                f"{'' if kept else ' and the whole run trains at --lr ' + str(self.lr)}; {self._schedule_fix()}"]

    def _schedule_fix(self) -> str:
        if self.epochs < 2:  # a drop needs an epoch after it
            return "with --epochs 1 no drop is possible: give --epochs 2 or more for a decaying schedule"
        return f"give milestones below --epochs (e.g. --decreasing_lr {self.epochs // 2}) for a decaying schedule"

    @property
    def rewind_point(self) -> int:
        """Epoch whose weights (and schedule) sparse rounds start from (0 = initialisation)."""
        return self.rewind_epoch if self.prune_type == "rewind_lt" else 0


# OpenLTH's ImageNet ResNet recipe: what ImageNet/main_imp.py uses instead of the CIFAR defaults.
OPENLTH_IMAGENET_DEFAULTS: dict[str, Any] = dict(
    arch="imagenet_resnet_18", dataset="imagenet", epochs=90, batch_size=1024, lr=0.4, milestones=[30, 60, 80],
    warmup=5, seed=1, workers=8, pruning_times=11, rate=0.2, prune_type="rewind_lt", rewind_epoch=5,
    include_linear=True, ticket="last", loader="dataloader")


def config_fields(cls: type = IMPConfig, groups: Iterable[str] | None = None) -> list[dataclasses.Field]:
    """The fields of ``cls`` in the given groups (all when ``None``)."""
    wanted = set(groups) if groups is not None else None
    return [f for f in dataclasses.fields(cls) if wanted is None or f.metadata.get("group") in wanted]


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _describe(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def parse_epoch_list(text: str, flag: str = "--decreasing_lr") -> list[int]:
    """``"91,136"`` -> ``[91, 136]``, or a one-line error."""
    if isinstance(text, list):
        return text
    try:
        return [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r} must be comma-separated epochs, e.g. 91,136") from None


class _CheckedStore(argparse.Action):
    """Stores a flag's value after checking it against the field's declared range: an out-of-range value is a
    one-line :class:`UserError` while parsing, before any work (``cli_entry`` prints it, exit code 2)."""

    def __init__(self, option_strings: list[str], dest: str, bounds: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(option_strings, dest, **kwargs)
        self.bounds = bounds or {}

    def __call__(self, parser, namespace, values, option_string=None):
        problem = range_problem(values, self.bounds)
        if problem:
            raise UserError(f"{option_string or self.dest} {_shown(values)} {problem}")
        setattr(namespace, self.dest, values)


def _range_text(meta: Mapping[str, Any]) -> str:
    """The declared range for the help text (``""`` when none)."""
    low, high, above, below = (meta.get(k) for k in ("minimum", "maximum", "above", "below"))
    if low is None and high is None and above is None and below is None:
        return ""
    if (low is not None or above is not None) and (high is not None or below is not None):
        left = f"[{_bound(low)}" if low is not None else f"({_bound(above)}"
        right = f"{_bound(high)}]" if high is not None else f"{_bound(below)})"
        return f"in {left}, {right}"
    if above is not None:
        return f"> {_bound(above)}"
    if low is not None:
        return f">= {_bound(low)}"
    return f"<= {_bound(high)}" if high is not None else f"< {_bound(below)}"


def _argument_group(parser: argparse.ArgumentParser, title: str) -> Any:
    """The parser's group of that title, made on first use (settings of two classes share one --help heading)."""
    for group in parser._action_groups:  # argparse has no public lookup by title
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def add_config_arguments(parser: argparse.ArgumentParser, groups: Mapping[str, str], *,
                         defaults: Mapping[str, Any] | None = None, skip: Iterable[str] = (),
                         cls: type = IMPConfig, aliases: Mapping[str, Sequence[str]] | None = None,
                         only: Iterable[str] | None = None) -> None:
    """Add one argparse group per entry of ``groups`` (config group -> title) with the fields' flags.

    ``defaults`` overrides field defaults for this script; help texts show the default in force and the valid
    range, and a value outside the range is refused while parsing. ``aliases`` (field -> extra spellings) is the
    script's alias table (:mod:`lotterypools.cli.aliases`): the original's spelling of a flag in this script
    only. ``only`` keeps just the named fields of the groups.
    """
    defaults, skip, aliases = dict(defaults or {}), set(skip), dict(aliases or {})
    wanted = None if only is None else set(only)
    for group_name, title in groups.items():
        group = _argument_group(parser, title)
        for f in config_fields(cls, [group_name]):
            if f.name in skip or (wanted is not None and f.name not in wanted):
                continue
            default = defaults.get(f.name, _default_of(f))
            extra = tuple(aliases.get(f.name, ()))
            flags = (*(f.metadata["flags"] or (f"--{f.name}",)), *extra)
            limits = _range_text(f.metadata)
            shown = "" if default is False or default is None else f" (default {_describe(default)})"
            also = f"; {', '.join(extra)} is this script's spelling (the original's)" if extra else ""
            # argparse formats help with %: escape it once (a help already written with %% stays as it is)
            help_text = f"{f.metadata['help']}{shown}{'; valid ' + limits if limits else ''}{also}".replace("%%", "%").replace("%", "%%")
            if isinstance(default, bool):  # a flag that is on by default can be turned off: --no-<name>
                action = argparse.BooleanOptionalAction if default else "store_true"
                group.add_argument(*flags, dest=f.name, action=action, default=default, help=help_text)
            elif f.metadata.get("nargs"):
                group.add_argument(*flags, dest=f.name, type=f.metadata["type"] or type(default[0]), default=default,
                                   nargs=f.metadata["nargs"], choices=f.metadata["choices"], help=help_text,
                                   action=_CheckedStore, bounds=f.metadata)
            elif isinstance(default, list):
                group.add_argument(*flags, dest=f.name, default=_describe(default), help=help_text)
            else:
                group.add_argument(*flags, dest=f.name, type=f.metadata.get("type") or type(default), default=default,
                                   choices=f.metadata["choices"], help=help_text, action=_CheckedStore,
                                   bounds=f.metadata)


def config_from_args(args: argparse.Namespace, cls: type = IMPConfig, defaults: Mapping[str, Any] | None = None,
                     **overrides: Any) -> Any:
    """A validated config from parsed flags; ``overrides`` win, fields absent from ``args`` take ``defaults``
    (the script's) or the dataclass's. The declared ranges are checked, then the class's ``validate()`` if any."""
    values: dict[str, Any] = dict(defaults or {})
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            if f.type in ("list[int]", list) or (isinstance(_default_of(f), list) and not f.metadata.get("nargs")):
                value = parse_epoch_list(value, f.metadata["flags"][0] if f.metadata["flags"] else f"--{f.name}")
            values[f.name] = value
    config = cls(**values)
    check_ranges(config)
    if hasattr(config, "validate"):
        config.validate()
    return config


def changed_settings(saved: Mapping[str, Any], config: Any) -> list[str]:
    """Names of result-deciding fields whose value in ``saved`` (a stored settings dict) differs from ``config``'s."""
    current = dataclasses.asdict(config)
    changed = []
    for f in dataclasses.fields(config):
        if not f.metadata.get("affects_result", True) or f.name not in saved:
            continue
        if saved[f.name] != current[f.name]:
            changed.extend(_value_changes(f.name, saved[f.name], current[f.name]))
    return changed


LONGEST_CHANGE = 80  # characters of one ``name old -> new`` in a refusal line


def _value_changes(name: str, old: Any, new: Any) -> list[str]:
    """``name old -> new``; for nested settings (FreeTickets' sparse_config) one entry per differing key."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        text = f"{name} {_describe(old)} -> {_describe(new)}"
        return [name if len(text) > LONGEST_CHANGE else text]  # a long list (a plan's phases): its name says enough
    missing = object()
    return [change for key in sorted(set(old) | set(new), key=str) if old.get(key, missing) != new.get(key, missing)
            for change in _value_changes(f"{name}.{key}", old.get(key, "unset"), new.get(key, "unset"))]

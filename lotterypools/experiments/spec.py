"""An experiment spec: one small TOML file that describes a whole comparison over seeds.

Example (``experiments/quickstart.toml`` holds a runnable one)::

    [experiment]
    name = "quickstart"
    output = "runs/quickstart"           # relative to the folder the command runs in
    seeds = [41, 42, 43]

    [data]
    dataset = "fashionmnist"
    data = "data"

    [imp]                                # flags of CIFAR/main_imp.py, without the dashes
    arch = "conv4"
    prune_type = "rewind_lt"
    pruning_times = 4

    [pools]                              # flags shared by every pool method (CIFAR/Lottery_pools.py)
    search_num = 4
    bn_batches = 20

    [[pools.methods]]                    # one table per method; its keys override [pools]
    interpolate_method = "Lottery_pools"

    [ensemble]                           # the IMP output-ensemble reference row (analyze_tickets.py ensemble)
    k = 2

    [sms]                                # flags shared by every Sparse Model Soups variant (CIFAR/main_SMS.py)
    epochs = 3
    candidates = 3

    [[sms.variants]]                     # one table per variant: a label (its folder) and its own flags
    label = "uniform"
    soup = "uniform"

    [edst]                               # FreeTickets EDST (CIFAR/main_EDST.py flags), one run per density and seed
    densities = [0.262144, 0.068719]     # IMP rounds 6 and 12 (0.8^k); needs [imp].include_linear = true
    epochs = 18
    epochs-explo = 6

Keys are the scripts' own flag names, so a spec says nothing a command line could not; each is checked by the
script's own parser before any work starts. A method table may add ``seeds`` (run it on some seeds only) and
``group`` (a results folder of its own, for a variant whose settings differ, e.g. the full BN pass on one seed).
SMS variants start from each seed's dense IMP ticket (``--dense``), so they share it with the pool methods; their
soups join the first group's tables as rows at the IMP densities they reach. SMS inherits ``[imp]``'s
``include_linear`` (a different value in ``[sms]`` is refused: the soups would miss IMP's densities). EDST runs
join them at the IMP density whose prunable weights they keep (:mod:`.report`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..core.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib; tomli is the same parser
    import tomli as tomllib

SECTIONS = {"experiment", "data", "imp", "pools", "ensemble", "sms", "edst"}
# Flags the experiment sets itself: a spec that sets them would write outside the experiment's folder layout.
RESERVED = {"seed", "save_dir", "checkpoint", "resume", "data", "dataset", "arch", "overwrite"}
METHOD_KEYS = {"seeds", "group", "label"}
DEFAULT_GROUP = "main"
SMS_RESERVED = {"dense"}  # the experiment starts every SMS variant from the seed's dense IMP ticket
# main_EDST.py's own names for what the experiment sets: --model (arch), --data_dir (the data folder), --density
# (from densities) and --sparse (EDST is sparse training); --data is its alias of --dataset
EDST_RESERVED = {"model", "data_dir", "density", "sparse"}
EDST_KEYS = {"densities", "seeds"}
RESERVED_WHY = ("seeds, data and arch come from [experiment], [data] and [imp].arch; SMS starts from the dense IMP "
                "ticket; EDST's --model, --dataset, --data_dir, --density and --sparse come from the spec")


@dataclass(frozen=True)
class PoolMethod:
    """One pool method of the comparison: its script flags and the seeds and results folder it runs on."""

    flags: Mapping[str, Any]
    seeds: tuple[int, ...]
    group: str = DEFAULT_GROUP


@dataclass(frozen=True)
class SMSVariant:
    """One Sparse Model Soups variant: its label (results folder), its script flags and its seeds."""

    label: str
    flags: Mapping[str, Any]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class EDSTRuns:
    """FreeTickets EDST: its script flags, one run per density and seed."""

    flags: Mapping[str, Any]
    densities: tuple[float, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed spec. ``output`` is resolved against the folder the command runs in."""

    name: str
    output: Path
    seeds: tuple[int, ...]
    dataset: str
    data: str
    arch: str
    imp_flags: Mapping[str, Any]
    methods: tuple[PoolMethod, ...]
    ensemble_k: int | None
    source: Path = field(default=Path("."))
    sms: tuple[SMSVariant, ...] = ()
    edst: EDSTRuns | None = None


def _table(raw: Mapping[str, Any], name: str, path: Path, required: bool = True) -> dict:
    value = raw.get(name, None)
    if value is None:
        if required:
            raise UserError(f"{path}: the [{name}] table is missing: see experiments/quickstart.toml for a spec")
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{path}: [{name}] must be a table, not {type(value).__name__}")
    return dict(value)


def _seed_list(value: Any, where: str, path: Path) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise UserError(f"{path}: {where} must be a non-empty list of integer seeds, e.g. [41, 42, 43]")
    if len(set(value)) != len(value):
        raise UserError(f"{path}: {where} {value} repeats a seed: give each seed once")
    return tuple(value)


def _check_reserved(flags: Mapping[str, Any], where: str, path: Path, extra: frozenset[str] = frozenset()) -> None:
    clash = sorted(key for key in flags if key.replace("-", "_") in RESERVED | extra)
    if clash:
        raise UserError(f"{path}: [{where}] sets {', '.join(clash)}, which the experiment sets itself "
                        f"({RESERVED_WHY}): remove them")


def _folder_name(value: Any, where: str, path: Path) -> str:
    name = str(value)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"{path}: {where} {name!r} must be a plain folder name (letters, digits, _ and -)")
    return name


def _sub_tables(section: dict, section_name: str, key: str, what: str, path: Path) -> list[dict]:
    """The ``[[section.key]]`` tables (removed from ``section``), or a one-line error."""
    tables = section.pop(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{path}: [[{section_name}.{key}]] must be a list of tables, one per {what}")
    return tables


def _methods(pools: dict, seeds: tuple[int, ...], path: Path) -> tuple[PoolMethod, ...]:
    tables = _sub_tables(pools, "pools", "methods", "method", path)
    _check_reserved(pools, "pools", path)
    methods = []
    for index, table in enumerate(tables):
        where = f"pools.methods[{index}]"
        own = {k: v for k, v in table.items() if k not in METHOD_KEYS}
        _check_reserved(own, where, path)
        method_seeds = _own_seeds(table, seeds, where, path)
        group = _folder_name(table.get("group", DEFAULT_GROUP), f"{where}.group", path)
        methods.append(PoolMethod({**pools, **own}, method_seeds, group))
    return tuple(methods)


def _own_seeds(table: Mapping[str, Any], seeds: tuple[int, ...], where: str, path: Path) -> tuple[int, ...]:
    """A method's or variant's ``seeds`` (a subset of the experiment's), or all of them."""
    own = _seed_list(table["seeds"], f"{where}.seeds", path) if "seeds" in table else seeds
    unknown = sorted(set(own) - set(seeds))
    if unknown:
        raise UserError(f"{path}: {where}.seeds has {unknown}, which are not in [experiment].seeds {list(seeds)}")
    return own


def _check_include_linear(flags: Mapping[str, Any], imp: Mapping[str, Any], where: str, path: Path) -> None:
    """SMS prunes what IMP prunes: a table that sets ``include_linear`` to another value than ``[imp]`` is refused."""
    wanted = bool(imp.get("include_linear", False))
    if "include_linear" in flags and bool(flags["include_linear"]) != wanted:
        raise UserError(f"{path}: [{where}] sets include_linear = {str(bool(flags['include_linear'])).lower()} but "
                        f"[imp] prunes {'every conv and linear' if wanted else 'only the conv'} weights, so the soups "
                        f"would not land on IMP's densities: remove include_linear from [{where}] (SMS takes [imp]'s)")


def _inherit_include_linear(flags: dict, imp: Mapping[str, Any]) -> dict:
    """``[imp]``'s include_linear for an SMS variant that does not repeat it (first, as a spec that repeats it)."""
    return {"include_linear": True, **flags} if imp.get("include_linear", False) else flags


def _sms_variants(sms: dict, seeds: tuple[int, ...], imp: Mapping[str, Any], path: Path) -> tuple[SMSVariant, ...]:
    tables = _sub_tables(sms, "sms", "variants", "variant", path)
    if sms and not tables:
        raise UserError(f"{path}: [sms] has no [[sms.variants]]: add one, e.g. label = \"uniform\"")
    _check_reserved(sms, "sms", path, frozenset(SMS_RESERVED))
    _check_include_linear(sms, imp, "sms", path)
    variants = []
    for index, table in enumerate(tables):
        where = f"sms.variants[{index}]"
        if "label" not in table:
            raise UserError(f"{path}: {where} has no label: add e.g. label = \"uniform\" (its results folder)")
        own = {k: v for k, v in table.items() if k not in ("label", "seeds")}
        _check_reserved(own, where, path, frozenset(SMS_RESERVED))
        _check_include_linear(own, imp, where, path)
        flags = _inherit_include_linear({**sms, **own}, imp)
        variants.append(SMSVariant(_folder_name(table["label"], f"{where}.label", path), flags,
                                   _own_seeds(table, seeds, where, path)))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise UserError(f"{path}: [[sms.variants]] repeat a label ({labels}): give each variant its own")
    return tuple(variants)


def _densities(value: Any, path: Path) -> tuple[float, ...]:
    """``[edst].densities``: distinct numbers in (0, 1) whose folder names (:func:`density_folder`) differ."""
    if not isinstance(value, list) or not value or not all(
            isinstance(d, (int, float)) and not isinstance(d, bool) and 0 < d < 1 for d in value):
        raise UserError(f"{path}: [edst].densities = {value!r} must be a non-empty list of numbers between 0 and 1 "
                        f"(fractions of conv and linear weights kept), e.g. [0.262144, 0.068719]")
    names = [density_folder(d) for d in value]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: [edst].densities {value} repeats a density (to 6 significant digits, the folder "
                        f"names {names}): give each density once")
    return tuple(float(d) for d in value)


def density_folder(density: float) -> str:
    """``0.262144`` -> ``d0.262144``: 6 significant digits, the same name on every platform and Python."""
    return f"d{density:g}"


def _edst(edst: dict, seeds: tuple[int, ...], imp: Mapping[str, Any], path: Path) -> EDSTRuns | None:
    if not edst:
        return None
    if "densities" not in edst:
        raise UserError(f"{path}: [edst] has no densities: add e.g. densities = [0.262144] (one EDST run per density "
                        f"and seed; 0.8^k is IMP's round k)")
    if not imp.get("include_linear", False):
        raise UserError(f"{path}: [edst] needs include_linear = true in [imp]: FreeTickets masks every conv and linear "
                        f"weight, so an IMP that prunes only the convs has no density an EDST run could match")
    flags = {k: v for k, v in edst.items() if k not in EDST_KEYS}
    _check_reserved(flags, "edst", path, frozenset(EDST_RESERVED))
    return EDSTRuns(flags, _densities(edst["densities"], path), _own_seeds(edst, seeds, "[edst]", path))


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str, path: Path) -> None:
    """Tables whose keys are not flags: a misspelt key is refused (the flag tables are checked by the parsers)."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{path}: [{where}] has no key {unknown[0]!r}: its keys are {', '.join(sorted(allowed))}")


def _ensemble_k(table: dict, path: Path) -> int | None:
    if not table:
        return None
    _check_keys(table, {"k"}, "ensemble", path)
    k = table.get("k", 2)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"{path}: [ensemble].k = {k!r} must be an integer of at least 1 (tickets joining the target)")
    return k


def parse_spec(raw: Mapping[str, Any], path: Path) -> ExperimentSpec:
    """Check a spec's structure (not yet the flags' values: :func:`plan.check_jobs` runs the parsers)."""
    unknown = sorted(set(raw) - SECTIONS)
    if unknown:
        raise UserError(f"{path}: unknown table [{unknown[0]}]: a spec has {', '.join(sorted(SECTIONS))}")
    experiment = _table(raw, "experiment", path)
    _check_keys(experiment, {"name", "output", "seeds"}, "experiment", path)
    if "seeds" not in experiment:
        raise UserError(f"{path}: [experiment] has no seeds: add e.g. seeds = [41, 42, 43]")
    seeds = _seed_list(experiment["seeds"], "[experiment].seeds", path)
    data = _table(raw, "data", path)
    _check_keys(data, {"dataset", "data"}, "data", path)
    if "dataset" not in data:
        raise UserError(f"{path}: [data] has no dataset: add e.g. dataset = \"fashionmnist\"")
    imp = _table(raw, "imp", path)
    if "arch" not in imp:
        raise UserError(f"{path}: [imp] has no arch: add e.g. arch = \"conv4\"")
    arch = str(imp.pop("arch"))
    _check_reserved(imp, "imp", path)
    name = str(experiment.get("name", path.stem))
    output = Path(str(experiment.get("output", Path("runs") / name)))
    return ExperimentSpec(name=name, output=output, seeds=seeds, dataset=str(data["dataset"]),
                          data=str(data.get("data", "data")), arch=arch, imp_flags=imp,
                          methods=_methods(_table(raw, "pools", path, required=False), seeds, path),
                          ensemble_k=_ensemble_k(_table(raw, "ensemble", path, required=False), path), source=path,
                          sms=_sms_variants(_table(raw, "sms", path, required=False), seeds, imp, path),
                          edst=_edst(_table(raw, "edst", path, required=False), seeds, imp, path))


def read_spec(path: str | Path) -> ExperimentSpec:
    """Read and check a spec file; every problem is one line naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such spec file: give the path of a .toml spec, e.g. "
                        f"experiments/quickstart.toml") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the spec ({error}): check the file") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error}): fix the line it names") from None
    return parse_spec(raw, path)

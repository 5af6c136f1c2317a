"""Pruning masks: global magnitude (or random) pruning through ``torch.nn.utils.prune``, and masks as data.

A mask is a dict ``{parameter name: 0/1 tensor}`` keyed like ``layer1.0.conv1.weight``. Inside a model
being trained, masks live where ``torch.nn.utils.prune`` puts them (``weight_orig`` + ``weight_mask``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from ..core.torchfiles import check_compatible
from ..core.types import Masks


def prunable_modules(model: nn.Module, include_linear: bool = False) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs whose ``weight`` IMP prunes: every conv, and linear layers if asked."""
    kinds = (nn.Conv2d, nn.Linear) if include_linear else (nn.Conv2d,)
    return [(name, module) for name, module in model.named_modules() if isinstance(module, kinds)]


def prunable_names(model: nn.Module, include_linear: bool = False) -> list[str]:
    """The parameter names (``<module>.weight``) that IMP prunes."""
    return [f"{name}.weight" for name, _ in prunable_modules(model, include_linear)]


def prune_globally(model: nn.Module, rate: float, include_linear: bool = False, random: bool = False,
                   generator_seed: int | None = None) -> None:
    """Remove ``rate`` of the remaining prunable weights, ranked globally by magnitude (or at random).

    Existing masks are kept: ``torch.nn.utils.prune`` combines the new mask with the old one and ranks
    only the surviving weights, so density goes (1 - rate)^k over rounds.
    """
    parameters = [(module, "weight") for _, module in prunable_modules(model, include_linear)]
    refresh_masked_weights(model)
    if random:  # RandomUnstructured draws from the global generator: seed it for this call only
        with torch.random.fork_rng(devices=[]):
            if generator_seed is not None:
                torch.manual_seed(generator_seed)
            prune.global_unstructured(parameters, pruning_method=prune.RandomUnstructured, amount=rate)
    else:
        prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=rate)


def refresh_masked_weights(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` of pruned modules now.

    ``torch.nn.utils.prune`` refreshes ``weight`` only before a forward pass, so after an optimiser step or
    ``load_state_dict`` it is stale until then; magnitude pruning ranks ``weight`` and must see current values.
    """
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


def masks_of(model: nn.Module) -> Masks:
    """The masks a pruned model carries (``<module>.weight`` -> mask); empty for a dense model."""
    return {f"{name}.weight": module.weight_mask.detach().clone()
            for name, module in model.named_modules() if hasattr(module, "weight_mask")}


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Attach ``masks`` to the model's modules with ``prune.custom_from_mask`` (replacing any earlier mask)."""
    modules = dict(model.named_modules())
    for key, mask in masks.items():
        module = modules[key.rsplit(".", 1)[0]]
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device, dtype=module.weight.dtype))


def remove_masks(model: nn.Module) -> None:
    """Make pruning permanent: ``weight = weight_orig * weight_mask`` as a plain parameter."""
    for _, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


def density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of weights kept over all masked tensors (1.0 for no masks)."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.count_nonzero()) for m in masks.values())
    return kept / total if total else 1.0


def kept_count(masks: Mapping[str, torch.Tensor]) -> int:
    """Number of weights the masks keep."""
    return sum(int(m.count_nonzero()) for m in masks.values())


def magnitude_masks(weights: Mapping[str, torch.Tensor], names: list[str], keep: int) -> Masks:
    """Masks keeping exactly the ``keep`` largest-magnitude entries over ``names``, ranked globally.

    ``topk`` (not a threshold) so that ties cannot keep extra weights: the density is exact.
    """
    flat = torch.cat([weights[name].detach().abs().flatten().float() for name in names])
    keep_flags = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        keep_flags[torch.topk(flat, keep, sorted=False).indices] = True
    masks, offset = {}, 0
    for name in names:
        count = weights[name].numel()
        masks[name] = keep_flags[offset:offset + count].view_as(weights[name]).to(weights[name].dtype)
        offset += count
    return masks


def prune_to_count(weights: dict[str, torch.Tensor], names: list[str], keep: int) -> Masks:
    """Zero all but the ``keep`` largest-magnitude weights over ``names`` in place; return the new masks."""
    masks = magnitude_masks(weights, names, keep)
    for name in names:
        weights[name].mul_(masks[name])
    return masks


# ---------------------------------------------------------------- masks inside a state dict
def split_pruned_state(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Masks]:
    """``weight_orig``/``weight_mask`` pairs (or plain ``weight`` beside ``weight_mask``) -> masked plain weights
    and a mask dict."""
    weights: dict[str, torch.Tensor] = {}
    masks: Masks = {}
    for key, value in state_dict.items():
        if key.endswith("_mask"):
            masks[key[: -len("_mask")]] = value.clone()
            continue
        base = key[: -len("_orig")] if key.endswith("_orig") else key
        mask = state_dict.get(f"{base}_mask")
        weights[base] = value * mask if mask is not None else (value.clone() if torch.is_tensor(value) else value)
    return weights, masks


def join_pruned_state(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain weights and masks -> the original's layout (``weight_orig`` + ``weight_mask`` for masked tensors)."""
    state = {}
    for key, value in weights.items():
        if key in masks:
            state[f"{key}_orig"] = value * masks[key]
            state[f"{key}_mask"] = masks[key].clone()
        else:
            state[key] = value
    return state


def load_pruned_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """Load a state dict in the original layout into a dense ``model``: masks attached, ``weight_orig`` kept as saved.

    Keeping ``weight_orig`` unmultiplied (the pruned entries still hold their decaying values) makes a
    resumed run continue exactly as the uninterrupted one.
    """
    weights, masks = split_pruned_state(state_dict)
    check_compatible(weights, model.state_dict(), path, what)
    apply_masks(model, masks)
    model.load_state_dict(dict(state_dict))
    refresh_masked_weights(model)


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
              path: Path | None, what: str) -> None:
    """Load saved weights into a fresh dense ``model`` and attach the masks.

    ``state`` is in the original's layout (``weight_orig`` + ``weight_mask``: loaded as saved, so that a resumed
    run continues exactly) or plain (then ``masks`` says which weights are pruned).
    """
    _, saved_masks = split_pruned_state(state)
    if saved_masks:
        load_pruned_state(model, state, path or Path("?"), what)
        return
    check_compatible(state, model.state_dict(), path or Path("?"), what)
    model.load_state_dict(dict(state))
    if masks:
        apply_masks(model, masks)

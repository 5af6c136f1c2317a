"""Host-device synchronisations and blocking copies of the hot loops, counted on the CPU; the CUDA-only decisions.

A read of a device tensor on the host (``.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()``, ``float()``, ``int()``,
``bool()``) stalls a GPU until its queue is empty. The counts below are what the loops make today: a new one
fails its test. A copy to the device that does not go through ``to_device_async`` (``.to(...)`` without
``non_blocking=True``) would block on a GPU as well: the data path makes none.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch
from torch.optim.swa_utils import update_bn

from helpers import tiny_data, tiny_model
from lotterypools.core.device import autocast_dtype, choose_device, pin_wanted, to_device_async
from lotterypools.core.errors import UserError
from lotterypools.data.datasets import BatchSource, augment_batch
from lotterypools.pools.search import PoolEvaluator, interpolate_state, recalibrate_batchnorm
from lotterypools.training.distributed import distributed_backend, wants_process_group
from lotterypools.training.loop import build_optimizer, train_one_epoch
from lotterypools.training.masks import prunable_names, prune_to_count
from lotterypools.training.sparse import MaskedWeights, MaskUpdater, SparseConfig, initial_masks

CPU = torch.device("cpu")
READS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")


@contextlib.contextmanager
def counting_syncs():
    """Count host reads of tensors and ``.to`` copies without ``non_blocking=True`` while the block runs."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in (*READS, "to")}

    def counted(name):
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            if name != "to":
                counts[name] += 1
            elif not kwargs.get("non_blocking") and any(isinstance(a, (torch.device, str)) for a in args):
                counts["blocking to"] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in originals:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def test_the_counter_sees_update_bns_reads():
    # torch's update_bn (momentum=None) reads num_batches_tracked back at every batch in every BN layer
    model, data = tiny_model(), tiny_data()
    batches = list(BatchSource(data.train, 32, CPU))
    norms = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with counting_syncs() as counts:
        update_bn(batches, model, CPU)
    assert norms > 0 and counts["__float__"] == norms * len(batches)


def train_syncs(batches: int, hooks=()) -> Counter:
    torch.manual_seed(0)
    model, data = tiny_model(), tiny_data()
    optimizer = build_optimizer(model, 0.05, 0.9, 1e-4)
    source = BatchSource(data.train, 96 // batches, CPU, data.spec, shuffle=True, augment=True, seed=1)
    hooks = hooks(model) if callable(hooks) else hooks  # set-up reads (mask counts) are not per step
    with counting_syncs() as counts:
        train_one_epoch(model, source, optimizer, CPU, hooks=hooks)
    return counts


# Once an epoch: its mean loss and accuracy, the divergence watch's first-bad-step flag and the weights' finiteness.
EPOCH_READS = {"__float__": 2, "__int__": 1, "tolist": 1}


def test_a_training_step_reads_nothing_back_and_an_epoch_reads_its_two_means():
    one, three = train_syncs(1), train_syncs(3)
    assert one == three  # nothing per step
    assert dict(three) == EPOCH_READS


@pytest.mark.parametrize("growth", ["gradient", "random"])
def test_mask_updates_at_every_step_read_nothing_back(growth):
    config = SparseConfig(density=0.3, sparse_init="ERK", growth=growth, update_frequency=1)

    def hooks(model):
        masked = MaskedWeights(model, initial_masks(model, config, seed=0))
        updater = MaskUpdater(masked, config, total_steps=3)
        hooks.updater = updater
        return [updater]

    counts = train_syncs(3, hooks)
    assert dict(counts) == EPOCH_READS  # the updates' own guards are read by MaskUpdater.check, at the epoch's end
    assert len(hooks.updater.updates) == 3 and all(u["replaced"] > 0 for u in hooks.updater.updates)
    counts_after = hooks.updater.weights.counts()
    assert counts_after == hooks.updater.active  # the cached counts stay exact


def test_a_pool_trial_reads_only_its_validation_means():
    torch.manual_seed(0)
    data = tiny_data()
    current = tiny_model().state_dict()
    candidate = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v for k, v in current.items()}
    names = prunable_names(tiny_model())
    source = BatchSource(data.train, 32, CPU, data.spec, shuffle=True, augment=True)
    evaluator = PoolEvaluator(tiny_model(), source, BatchSource(data.val, 16, CPU), [], CPU, fresh_bn_seed=3)
    trial: dict = {}
    with counting_syncs() as counts:
        interpolate_state(current, candidate, 0.3, out=trial)
        prune_to_count(trial, names, 100)
        evaluator.score(trial, trial=(1, 2, 0))
        evaluator.state()
    assert dict(counts) == {"__float__": 2}  # validation's mean loss and accuracy


def test_batches_and_augmentation_copy_only_through_the_asynchronous_path(monkeypatch):
    import lotterypools.data.datasets as datasets

    calls = []
    monkeypatch.setattr(datasets, "to_device_async", lambda t, d: calls.append(t.shape) or to_device_async(t, d))
    data = tiny_data()
    with counting_syncs() as counts:
        batches = list(BatchSource(data.train, 32, CPU, data.spec, shuffle=True, augment=True))
    assert dict(counts) == {}
    assert len(calls) == 4 * len(batches)  # index, images, labels and the stacked augmentation draws
    assert (1, 32) in calls  # the crop is off in this spec (padding 0): flip only, one row


def test_recalibration_gives_update_bns_statistics_exactly():
    torch.manual_seed(0)
    data = tiny_data()
    batches = list(BatchSource(data.train, 20, CPU, data.spec, shuffle=True, augment=True))
    ours, theirs = tiny_model(), tiny_model()
    theirs.load_state_dict(ours.state_dict())
    for model in (ours, theirs):
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.fill_(3.0)  # stale statistics that the pass must replace
    recalibrate_batchnorm(ours, batches, CPU)
    update_bn(batches, theirs, CPU)
    for (key, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), key
    momenta = [m.momentum for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert momenta and all(m == 0.1 for m in momenta)  # restored


def test_augmentation_draws_are_unchanged_by_the_single_copy():
    spec = tiny_data().spec.__class__("t", 3, 1, 8, (0.5,), (0.25,), 16, crop_padding=2, flip=True)
    images = torch.rand(16, 1, 8, 8)
    out = augment_batch(images, spec, torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    dy, dx = (torch.randint(0, 5, (16,), generator=generator) for _ in range(2))
    flip = torch.rand(16, generator=generator) < 0.5
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):
        crop = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


# ---------------------------------------------------------------------------------------- CUDA-only decisions
def test_device_choice():
    assert choose_device("auto", True, None) == torch.device("cuda", 0)
    assert choose_device("auto", True, 2) == torch.device("cuda", 2)
    assert choose_device("cuda", True, None) == torch.device("cuda", 0)
    assert choose_device("auto", False, 1) == CPU
    assert choose_device("cpu", True, 1) == CPU
    with pytest.raises(UserError, match="--device cuda"):
        choose_device("cuda", False)
    with pytest.raises(UserError, match="unknown --device"):
        choose_device("gpu", True)


def test_autocast_dtype_choice():
    assert autocast_dtype("cpu", False) is torch.bfloat16
    assert autocast_dtype("cuda", True) is torch.bfloat16
    assert autocast_dtype("cuda", False) is None  # no float16 without a loss scaler: autocast off


def test_pinned_memory_only_for_host_to_gpu_copies():
    assert pin_wanted(CPU, torch.device("cuda", 0))
    assert not pin_wanted(torch.device("cuda", 0), torch.device("cuda", 0))
    assert not pin_wanted(CPU, CPU)
    assert not pin_wanted(torch.device("cuda", 0), CPU)


def test_backend_and_process_group_choice():
    assert distributed_backend(True) == "nccl" and distributed_backend(False) == "gloo"
    assert not wants_process_group({})
    assert not wants_process_group({"WORLD_SIZE": "1"})  # set by hand, no rendezvous: one plain process
    assert wants_process_group({"WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})  # torchrun
    assert wants_process_group({"WORLD_SIZE": "2"})

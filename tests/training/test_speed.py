"""Speed paths: device-side augmentation, the DataLoader path, channels-last and compile flags."""

from __future__ import annotations

import os
import time

import pytest
import torch

from lotterypools.data.datasets import BatchSource, DataSplits, DatasetSpec, Split, augment_batch
from lotterypools.core.errors import UserError
from lotterypools.tickets.imp import IMPConfig, IMPRun
from lotterypools.data.loaders import pil_source
from lotterypools.models import build_model
from lotterypools.training.loop import prepare_model
from lotterypools.training.sources import SplitTrainData
from lotterypools.formats import paths
from helpers import state_of

CROP_SPEC = DatasetSpec("crop", 3, 3, 8, (0.5,) * 3, (0.25,) * 3, 8, crop_padding=2, flip=False)
FLIP_SPEC = DatasetSpec("flip", 3, 3, 8, (0.5,) * 3, (0.25,) * 3, 8, crop_padding=0, flip=True)
TINY_SPEC = DatasetSpec("tiny", 3, 1, 8, (0.5,), (0.25,), 16, crop_padding=1, flip=True)


def random_images(n: int, channels: int = 3, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed)) + 0.01


def tiny_data(seed: int = 0) -> DataSplits:
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        labels = torch.randint(0, 3, (n,), generator=generator)
        noise = torch.randint(0, 60, (n, 1, 8, 8), generator=generator)
        return Split((labels[:, None, None, None] * 80 + noise).to(torch.uint8), labels)

    return DataSplits(TINY_SPEC, split(64), split(32), split(32), "memory")


def is_window(crop: torch.Tensor, padded: torch.Tensor) -> bool:
    side = crop.shape[-1]
    span = padded.shape[-1] - side + 1
    return any(torch.equal(padded[:, dy:dy + side, dx:dx + side], crop) for dy in range(span) for dx in range(span))


def test_device_crop_is_a_window_of_the_zero_padded_image():
    images = random_images(32)
    crops = augment_batch(images, CROP_SPEC, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    assert crops.shape == images.shape
    assert all(is_window(crop, image) for crop, image in zip(crops, padded))
    assert not torch.equal(crops, images)  # some crops moved


def test_device_flip_reverses_columns_of_about_half_the_images():
    images = random_images(64)
    flipped = augment_batch(images, FLIP_SPEC, torch.Generator().manual_seed(2))
    same = [torch.equal(a, b) for a, b in zip(flipped, images)]
    reversed_ = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, images)]
    assert all(s or r for s, r in zip(same, reversed_))
    assert 16 <= sum(reversed_) <= 48


def test_pil_dataloader_path_yields_the_same_batches_as_ours_without_augmentation():
    split = tiny_data().train
    ours = list(BatchSource(split, 24, torch.device("cpu")))
    theirs = list(pil_source(split, TINY_SPEC, 24, torch.device("cpu")))
    assert len(ours) == len(theirs) == 3
    for (x, y), (u, v) in zip(ours, theirs):
        assert x.dtype == u.dtype == torch.float32
        assert torch.equal(x, u) and torch.equal(y, v)


def test_pil_dataloader_augmentation_gives_valid_windows_and_flips():
    split = Split((random_images(16) * 200).to(torch.uint8), torch.zeros(16, dtype=torch.long))
    spec = DatasetSpec("both", 3, 3, 8, (0.5,) * 3, (0.25,) * 3, 8, crop_padding=2, flip=True)
    (images, _), = list(pil_source(split, spec, 16, torch.device("cpu"), augment=True))
    padded = torch.nn.functional.pad(split.images.float() / 255, (2, 2, 2, 2))
    assert all(is_window(x, p) or is_window(x.flip(-1), p) for x, p in zip(images, padded))


@pytest.mark.parametrize("arch", ["conv4", "resnet20s"])
def test_channels_last_gives_the_same_outputs_and_gradients(arch):
    torch.manual_seed(0)
    plain = build_model(arch, 10, 3, (0.5,) * 3, (0.25,) * 3, 16)
    fast = prepare_model(build_model(arch, 10, 3, (0.5,) * 3, (0.25,) * 3, 16), channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.get_submodule(next(n for n, m in fast.named_modules() if isinstance(m, torch.nn.Conv2d))).weight \
        .is_contiguous(memory_format=torch.channels_last)
    images, labels = random_images(8, side=16), torch.arange(8) % 10
    losses = [torch.nn.functional.cross_entropy(model(images), labels) for model in (plain, fast)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    for loss in losses:
        loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), fast.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=name)


# The tiny data set without augmentation: the resident and the DataLoader path then see the same images.
PLAIN_SPEC = DatasetSpec("tiny", 3, 1, 8, (0.5,), (0.25,), 16, crop_padding=0, flip=False)


def run_imp(folder, spec: DatasetSpec = TINY_SPEC, **flags) -> IMPRun:
    config = IMPConfig(arch="conv2", dataset="tiny", epochs=2, batch_size=16, lr=0.05, milestones=[1],
                       pruning_times=2, rewind_epoch=1, seed=3, **flags)
    factory = lambda: build_model("conv2", 3, 1, spec.mean, spec.std, 8)
    data = tiny_data()
    data = DataSplits(spec, data.train, data.val, data.test, "memory")
    run = IMPRun(config, factory, data, torch.device("cpu"), folder, log=lambda _: None, progress=False)
    run.run()
    return run


def round_files(folder, rounds: int = 2) -> list[dict[str, torch.Tensor]]:
    """Every round's ticket and last-epoch checkpoint, as state dicts (weight_orig and weight_mask apart)."""
    return [state_of(path(folder, r)) for r in range(rounds) for path in (paths.round_best, paths.round_checkpoint)]


def test_imp_with_channels_last_trains_the_same_weights_and_masks_as_the_plain_run(tmp_path):
    plain = run_imp(tmp_path / "plain")
    fast = run_imp(tmp_path / "fast", channels_last=True)
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert untimed(fast.summary()) == untimed(plain.summary())
    assert fast.summary()[1]["density"] < 1.0
    for expected, got in zip(round_files(tmp_path / "plain"), round_files(tmp_path / "fast")):
        assert expected.keys() == got.keys()
        for name in expected:
            if name.endswith("_mask") or not expected[name].is_floating_point():
                assert torch.equal(expected[name], got[name]), name  # the same weights pruned, the same counters
            else:  # other kernels for the same maths: float rounding only, over 4 epochs of 4 steps
                torch.testing.assert_close(got[name].contiguous(), expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_dataloader_path_serves_each_training_image_once_per_epoch_as_the_resident_path_holds_it():
    data = tiny_data()
    data = DataSplits(PLAIN_SPEC, data.train, data.val, data.test, "memory")
    for loader in ("resident", "dataloader"):
        source = SplitTrainData(data, 16, torch.device("cpu"), seed=3, loader=loader, workers=0)
        images, labels, indices = map(torch.cat, zip(*source.batches(1, 0, with_indices=True)))
        order = torch.argsort(indices)
        assert torch.equal(indices[order], torch.arange(64)), loader  # every image exactly once
        assert torch.equal(labels[order], data.train.labels), loader
        assert torch.equal(images[order], data.train.images.float() / 255), loader


def test_imp_through_the_dataloader_path_prunes_as_the_resident_path_and_repeats_itself(tmp_path):
    resident = run_imp(tmp_path / "resident")
    torch.manual_seed(11)  # the augmentation of -j0 draws from the global generator: the run must seed it
    loader = run_imp(tmp_path / "loader", loader="dataloader", workers=0)
    torch.manual_seed(12)
    again = run_imp(tmp_path / "again", loader="dataloader", workers=0)
    assert [(r["round"], r["density"]) for r in loader.summary()] == [(r["round"], r["density"]) for r in resident.summary()]
    assert all(r["test_acc"] >= 90.0 for r in loader.summary())  # 3 classes 80 grey levels apart: learnt, as resident
    names = lambda folder: sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert names(tmp_path / "loader") == names(tmp_path / "resident")
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert untimed(again.summary()) == untimed(loader.summary())
    for first, second in zip(round_files(tmp_path / "loader"), round_files(tmp_path / "again")):
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    kept = lambda state: sum(int(v.sum()) for k, v in state.items() if k.endswith("_mask"))
    assert [kept(s) for s in round_files(tmp_path / "loader")] == [kept(s) for s in round_files(tmp_path / "resident")]


def test_unknown_loader_is_a_one_line_error():
    with pytest.raises(UserError, match="--loader"):
        IMPConfig(arch="conv2", dataset="tiny", loader="ffcv").validate()


@pytest.mark.skipif(not os.environ.get("LOTTERYPOOLS_TEST_COMPILE"),
                    reason="torch.compile takes about a minute on this 2-core CPU; set LOTTERYPOOLS_TEST_COMPILE=1")
def test_compile_gives_the_same_outputs_and_keeps_state_dict_keys():
    torch.manual_seed(0)
    plain = build_model("conv2", 3, 1, TINY_SPEC.mean, TINY_SPEC.std, 8)
    fast = prepare_model(build_model("conv2", 3, 1, TINY_SPEC.mean, TINY_SPEC.std, 8), compile=True)
    fast.load_state_dict(plain.state_dict())
    assert list(fast.state_dict()) == list(plain.state_dict())
    images = random_images(4, channels=1)
    plain.eval(), fast.eval()
    started = time.time()
    torch.testing.assert_close(fast(images), plain(images), rtol=1e-4, atol=1e-5)
    print(f"compile + first call: {time.time() - started:.1f}s")

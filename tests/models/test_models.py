"""Architectures: the original's state_dict keys and shapes, and every model runs on every data set's shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lotterypools.core.torchfiles import atomic_save, load_file
from lotterypools.training.masks import load_pruned_state
from lotterypools.data.datasets import SPECS
from lotterypools.core.errors import UserError
from lotterypools.training.masks import masks_of, prune_globally
from lotterypools.models import CIFAR_ARCHITECTURES, build_model

KEY_FILES = Path(__file__).resolve().parents[1] / "fixtures"


def original_keys(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the original's state_dict after the first pruning round (num_classes=10)."""
    entries = {}
    for line in (KEY_FILES / f"original_keys_{arch}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            entries[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return entries


def cifar10_model(arch: str) -> torch.nn.Module:
    spec = SPECS["cifar10"]
    return build_model(arch, spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size)


@pytest.mark.parametrize("arch, count", [("resnet20s", 137), ("resnet18", 144), ("vgg16_bn", 108)])
def test_pruned_state_dict_matches_the_original_keys_and_shapes(arch, count):
    model = cifar10_model(arch)
    prune_globally(model, 0.2)
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    reference = original_keys(arch)
    assert len(reference) == count
    assert ours == reference
    assert torch.allclose(model.state_dict()["normalize.mean"], torch.tensor(SPECS["cifar10"].mean))


@pytest.mark.parametrize("arch", ["resnet20s", "vgg16_bn"])
def test_checkpoint_written_here_loads_back(tmp_path, arch):
    torch.manual_seed(0)
    model = cifar10_model(arch)
    prune_globally(model, 0.2)
    atomic_save({"state_dict": model.state_dict()}, tmp_path / "ticket.pth.tar")
    restored = cifar10_model(arch)
    load_pruned_state(restored, load_file(tmp_path / "ticket.pth.tar")["state_dict"], tmp_path, arch)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    assert all(torch.equal(masks_of(model)[n], m) for n, m in masks_of(restored).items())
    images = torch.rand(2, 3, 32, 32)
    model.eval(), restored.eval()
    assert torch.equal(model(images), restored(images))


@pytest.mark.parametrize("dataset", ["cifar100", "fashionmnist"])
@pytest.mark.parametrize("arch", sorted(set(CIFAR_ARCHITECTURES) - {"resnet50", "resnet56s", "resnet44s"}))
def test_models_fit_each_data_set(arch, dataset):
    spec = SPECS[dataset]
    model = build_model(arch, spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, spec.channels, spec.image_size, spec.image_size))
    assert out.shape == (2, spec.num_classes)


@pytest.mark.parametrize("arch, blocks", [("resnet44s", 7), ("resnet56s", 9)])
def test_deeper_thin_resnets_have_their_block_counts(arch, blocks):
    model = cifar10_model(arch)
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == blocks


def test_resnet50_and_imagenet_stem_run():
    spec = SPECS["cifar10"]
    for imagenet in (False, True):
        model = build_model("resnet50", 10, 3, spec.mean, spec.std, 32, imagenet_stem=imagenet).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    stem = build_model("resnet18", 10, 3, spec.mean, spec.std, 32, imagenet_stem=True)
    assert stem.conv1.kernel_size == (7, 7) and isinstance(stem.maxpool, torch.nn.MaxPool2d)


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(UserError, match="unknown architecture 'resnet19'"):
        build_model("resnet19", 10)
    with pytest.raises(UserError, match="imagenet_arch"):
        build_model("conv4", 10, imagenet_stem=True)

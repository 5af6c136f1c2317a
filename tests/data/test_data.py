"""The real loaders on tiny data sets written in the real on-disk formats, and batches."""

from __future__ import annotations

import gzip
import os
import pickle

import pytest
import torch

from lotterypools.data.datasets import SYSTEM_FASHION_MNIST, BatchSource, load_dataset
from lotterypools.core.errors import UserError
from lotterypools.tickets.imp import IMPConfig, IMPRun
from lotterypools.models import build_model
from helpers import CPU, IDX_STEMS, tiny_splits, write_cifar, write_mnist_like


def assert_splits_equal_written(data, train_x, train_y, test_x, test_y, val_size=5000):
    cut = len(train_y) - val_size
    assert torch.equal(data.train.images, torch.from_numpy(train_x[:cut]))
    assert torch.equal(data.val.images, torch.from_numpy(train_x[cut:]))
    assert torch.equal(data.train.labels, torch.from_numpy(train_y[:cut]).long())
    assert torch.equal(data.val.labels, torch.from_numpy(train_y[cut:]).long())
    assert torch.equal(data.test.images, torch.from_numpy(test_x))
    assert torch.equal(data.test.labels, torch.from_numpy(test_y).long())


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_load_with_the_last_5000_training_images_validating(tmp_path, name):
    written = write_cifar(tmp_path, name)
    data = load_dataset(name, tmp_path, download=False)
    assert data.train.images.shape == (50, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert_splits_equal_written(data, **written)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name, folder", [("fashionmnist", "fashionmnist"), ("mnist", "MNIST/raw")])
def test_idx_files_load_gzipped_or_plain(tmp_path, name, folder, gz):
    arrays = write_mnist_like(tmp_path / folder, gz=gz)
    data = load_dataset(name, tmp_path, download=False)
    train_x, train_y, test_x, test_y = (arrays[s] for s in IDX_STEMS)
    assert data.source == str(tmp_path / folder)
    assert_splits_equal_written(data, train_x[:, None], train_y, test_x[:, None], test_y)


def test_missing_data_is_a_user_error_naming_the_folder(tmp_path):
    for name in ("cifar10", "cifar100", "mnist"):
        with pytest.raises(UserError, match=str(tmp_path)):
            load_dataset(name, tmp_path, download=False)


def test_unknown_data_set_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown data set 'svhn'"):
        load_dataset("svhn", tmp_path)


def test_an_incomplete_idx_folder_is_not_completed_from_elsewhere(tmp_path):
    write_mnist_like(tmp_path / "fashionmnist")
    (tmp_path / "fashionmnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashionmnist", tmp_path, download=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "count"])
def test_corrupt_idx_files_are_user_errors(tmp_path, damage):
    folder = tmp_path / "mnist"
    write_mnist_like(folder)
    path = folder / "train-images-idx3-ubyte.gz"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(gzip.compress(b"not an idx file at all"))
    else:  # fewer labels than images
        write_mnist_like(tmp_path / "other", train=5050)
        (folder / "train-labels-idx1-ubyte.gz").write_bytes((tmp_path / "other" / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(UserError):
        load_dataset("mnist", tmp_path, download=False)


@pytest.mark.parametrize("damage", ["truncate", "not a dict", "wrong shape", "meta"])
def test_corrupt_cifar_files_are_user_errors(tmp_path, damage):
    write_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    path = folder / "data_batch_3"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "not a dict":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    elif damage == "wrong shape":
        entry = pickle.loads(path.read_bytes())
        entry["data"] = entry["data"][:, :100]
        path.write_bytes(pickle.dumps(entry))
    else:
        (folder / "batches.meta").unlink()
    with pytest.raises(UserError, match="cifar10 files under"):
        load_dataset("cifar10", tmp_path, download=False)


def test_too_few_training_images_for_the_validation_split_is_a_user_error(tmp_path):
    write_mnist_like(tmp_path / "mnist", train=4000)
    with pytest.raises(UserError, match="fewer than the 5000"):
        load_dataset("mnist", tmp_path, download=False)


def test_batches_repeat_for_a_seed_and_cover_the_split():
    data = tiny_splits()
    source = BatchSource(data.train, 20, CPU, data.spec, shuffle=True, augment=True)
    first = list(source.with_seed(7))
    again = list(source.with_seed(7))
    other = list(source.with_seed(8))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    labels = torch.cat([labels for _, labels in first])
    assert len(labels) == len(data.train) and len(first) == len(source) == 5
    assert torch.equal(labels.sort().values, data.train.labels.sort().values)
    assert all(0.0 <= images.min() and images.max() <= 1.0 for images, _ in first)


@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_conv4_reaches_85_percent_on_real_fashion_mnist_in_one_epoch(tmp_path, all_threads):
    data = load_dataset("fashionmnist", tmp_path / "empty", download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    spec = data.spec
    config = IMPConfig(arch="conv4", dataset="fashionmnist", epochs=1, batch_size=128, lr=0.05, milestones=[],
                       pruning_times=1, prune_type="lt", seed=1)
    factory = lambda: build_model("conv4", spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size)
    summary = IMPRun(config, factory, data, CPU, tmp_path / "run", log=lambda line: None, progress=False).run()
    assert summary[0]["test_acc"] >= 85.0


class RunsAShellCommand:
    """A pickled object whose loading would run a shell command (as a malicious batches.meta would)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("victim", ["batches.meta", "data_batch_2", "test_batch"])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_cifar_pickle_that_would_run_code_is_refused_as_unsafe(tmp_path, victim, protocol):
    write_cifar(tmp_path, "cifar10", train=5010, test=10)
    path = tmp_path / "cifar-10-batches-py" / victim
    marker = tmp_path / "code-was-run"
    path.write_bytes(pickle.dumps({"label_names": RunsAShellCommand(marker)}, protocol=protocol))
    with pytest.raises(UserError) as caught:
        load_dataset("cifar10", tmp_path, download=False)
    message = str(caught.value)
    assert "\n" not in message and "unsafe" in message and str(path) in message and "system" in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_cifar_pickles_of_every_protocol_load(tmp_path, protocol):
    written = write_cifar(tmp_path, "cifar100", train=5010, test=10)
    folder = tmp_path / "cifar-100-python"
    for name in ("train", "test", "meta"):
        entry = pickle.loads((folder / name).read_bytes())
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    data = load_dataset("cifar100", tmp_path, download=False)
    assert torch.equal(data.test.images, torch.from_numpy(written["test_x"]))

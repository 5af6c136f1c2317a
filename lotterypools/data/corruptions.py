"""Corrupted test sets in the CIFAR-10-C layout: reading the official folders, and writing CIFAR-C-like copies.

Layout (Hendrycks & Dietterich 2019): one ``<corruption>.npy`` per corruption holding the test set five
times, severity 1 first, as uint8 ``(5 * N, H, W, C)``, and ``labels.npy`` holding the ``5 * N`` labels.
Severity ``s`` is rows ``(s - 1) * N`` to ``s * N``. Grey sets are written as ``(5 * N, H, W, 1)``;
``(5 * N, H, W)`` is read too.

The corruptions below are our own torch implementations (torch, and Pillow for JPEG; no OpenCV, scikit-image or Wand), so a set
written here is *CIFAR-C-like*, not CIFAR-10-C: the same kinds and the CIFAR-10-C severity constants
(not ImageNet-C's harsher ones), different random draws and filters. Every one applies to grey images
as well as colour ones. ``fog`` uses a multi-octave smooth noise field instead of the diamond-square
plasma fractal. Official corruptions that need those libraries or stock images (glass, motion and zoom
blur, snow, frost, elastic transform, spatter, saturate) are not generated; their official files are
still read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config.names import SEVERITIES
from .datasets import Split
from ..core.device import derived_seed
from ..core.errors import UserError
from ..core.files import atomic_output

LABELS_FILE = "labels.npy"
METADATA_FILE = "corruptions.json"

Corruption = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


# ----------------------------------------------------------------------------- the corruptions
# Each takes float images (N, C, H, W) in [0, 1], the severity's constant and a CPU generator.
def _normal(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator).to(like.device)


def _uniform(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(like.shape, generator=generator).to(like.device)


def gaussian_noise(images: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Add N(0, scale^2) noise to every value."""
    return images + scale * _normal(images, generator)


def shot_noise(images: torch.Tensor, photons: float, generator: torch.Generator) -> torch.Tensor:
    """Poisson photon noise: Poisson(x * photons) / photons."""
    return torch.poisson((images * photons).cpu(), generator=generator).to(images.device) / photons


def impulse_noise(images: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper: a fraction ``amount`` of the values becomes 0 or 1 with equal chance."""
    hit = _uniform(images, generator) < amount
    salt = (_uniform(images, generator) < 0.5).to(images.dtype)
    return torch.where(hit, salt, images)


def speckle_noise(images: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative noise: x + x * N(0, scale^2)."""
    return images + images * scale * _normal(images, generator)


def _filter(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with the same odd-sized 2-D kernel, edges replicated."""
    channels = images.shape[1]
    pad_h, pad_w = kernel.shape[0] // 2, kernel.shape[1] // 2
    weight = kernel.to(images)[None, None].expand(channels, 1, *kernel.shape)
    padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h), mode="replicate")
    return F.conv2d(padded, weight, groups=channels)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(4 * sigma))  # truncated at 4 sigma
    grid = torch.arange(-radius, radius + 1, dtype=torch.float64)
    line = torch.exp(-grid ** 2 / (2 * sigma ** 2))
    kernel = line[:, None] * line[None, :]
    return (kernel / kernel.sum()).float()


def gaussian_blur(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return _filter(images, _gaussian_kernel(sigma))


def defocus_blur(images: torch.Tensor, setting: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Blur by a disk of radius ``setting[0]`` pixels, its edges softened by a Gaussian of sigma ``setting[1]``."""
    radius, soften = setting
    half = max(1, math.ceil(radius))
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius ** 2).double()
    return _filter(_filter(images, (disk / disk.sum()).float()), _gaussian_kernel(soften))


def contrast(images: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Pull every pixel towards its image's per-channel mean: (x - mean) * factor + mean."""
    mean = images.mean(dim=(2, 3), keepdim=True)
    return (images - mean) * factor + mean


def brightness(images: torch.Tensor, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Add ``shift`` to the HSV value (the channel maximum) with hue and saturation kept.

    With H and S fixed, every channel scales with V, so x' = x * V'/V; black pixels become grey V'.
    On grey images this is x + shift.
    """
    value = images.amax(dim=1, keepdim=True)
    new_value = (value + shift).clamp(0, 1)
    scaled = images * new_value / value.clamp_min(1e-12)
    return torch.where(value > 0, scaled, new_value.expand_as(images))


def pixelate(images: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Box-downsample to ``fraction`` of the side length, then enlarge back with nearest neighbours."""
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(int(height * fraction), int(width * fraction)), mode="area")
    return F.interpolate(small, size=(height, width), mode="nearest")


def jpeg_compression(images: torch.Tensor, quality: float, generator: torch.Generator) -> torch.Tensor:
    """Encode as JPEG at ``quality`` and decode again (Pillow, on the CPU)."""
    import io

    from PIL import Image

    pixels = (images.cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    decoded = []
    for picture in pixels:
        buffer = io.BytesIO()
        Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(buffer, "JPEG", quality=int(quality))
        decoded.append(np.array(Image.open(buffer)).reshape(picture.shape))
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(images.device).float() / 255


def _smooth_field(count: int, size: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    """Multi-octave value noise in [0, 1], (count, 1, size, size): octave k has amplitude decay^-k."""
    field = torch.zeros(count, 1, size, size)
    cells, amplitude = 2, 1.0
    while cells <= 2 * size:
        grid = torch.rand(count, 1, cells + 1, cells + 1, generator=generator) - 0.5
        field += amplitude * F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)
        cells, amplitude = cells * 2, amplitude / decay
    low = field.amin(dim=(2, 3), keepdim=True)
    high = field.amax(dim=(2, 3), keepdim=True)
    return (field - low) / (high - low).clamp_min(1e-12)


def fog(images: torch.Tensor, setting: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Fog-like haze: add ``setting[0]`` times a smooth noise field (roughness ``setting[1]``), rescale the range."""
    strength, decay = setting
    field = _smooth_field(images.shape[0], max(images.shape[-2:]), decay, generator)
    field = field[..., : images.shape[-2], : images.shape[-1]].to(images.device)
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images + strength * field) * peak / (peak + strength)


# name -> (function, the five CIFAR-10-C severity constants)
CORRUPTIONS: dict[str, tuple[Corruption, tuple]] = {
    "gaussian_noise": (gaussian_noise, (0.04, 0.06, 0.08, 0.09, 0.10)),
    "shot_noise": (shot_noise, (500, 250, 100, 75, 50)),
    "impulse_noise": (impulse_noise, (0.01, 0.02, 0.03, 0.05, 0.07)),
    "speckle_noise": (speckle_noise, (0.06, 0.10, 0.12, 0.16, 0.20)),
    "gaussian_blur": (gaussian_blur, (0.4, 0.6, 0.7, 0.8, 1.0)),
    "defocus_blur": (defocus_blur, ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))),
    "contrast": (contrast, (0.75, 0.5, 0.4, 0.3, 0.15)),
    "brightness": (brightness, (0.05, 0.1, 0.15, 0.2, 0.3)),
    "pixelate": (pixelate, (0.95, 0.9, 0.85, 0.75, 0.65)),
    "jpeg_compression": (jpeg_compression, (80, 65, 58, 50, 40)),
    "fog": (fog, ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))),
}


def check_severities(severities: Sequence[int]) -> list[int]:
    """The severities as a sorted list, or a one-line error for any outside 1..5."""
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise UserError(f"--severities {list(severities)}: give one or more of 1 2 3 4 5")
    return sorted(set(severities))


def _check_names(names: Sequence[str], valid: Sequence[str], where: str) -> list[str]:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UserError(f"unknown corruption(s) {', '.join(unknown)} {where}: choose from {', '.join(valid)}")
    return list(dict.fromkeys(names))


def writable_corruptions(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, or a one-line error listing the corruptions this module can write."""
    return _check_names(names, list(CORRUPTIONS), "for writing")


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to float images in [0, 1]; the result is clipped to [0, 1]."""
    writable_corruptions([name])
    check_severities([severity])
    function, constants = CORRUPTIONS[name]
    return function(images, constants[severity - 1], generator).clamp(0, 1)


# ----------------------------------------------------------------------------- writing a CIFAR-C-like set
def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path) as stream:
        np.save(stream, array)


def corrupted_copy(split: Split, name: str, seed: int, device: torch.device, batch_size: int = 1000) -> np.ndarray:
    """All five severities of ``split`` under corruption ``name`` as uint8 (5 * N, H, W, C), severity 1 first."""
    parts = []
    for severity in SEVERITIES:
        generator = torch.Generator().manual_seed(derived_seed(seed, sorted(CORRUPTIONS).index(name), severity))
        for start in range(0, len(split), batch_size):
            images = split.images[start:start + batch_size].to(device).float() / 255
            result = corrupt(images, name, severity, generator)
            parts.append((result * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(parts)


def write_corrupted_set(split: Split, folder: str | os.PathLike, names: Sequence[str], seed: int,
                        device: torch.device, source: str = "", log: Callable[[str], None] = print) -> Path:
    """Write a CIFAR-C-like set of ``split`` in the official layout, plus ``corruptions.json`` describing it."""
    names = writable_corruptions(names)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_npy(folder / LABELS_FILE, np.tile(split.labels.cpu().numpy().astype(np.int64), len(SEVERITIES)))
    for name in names:
        _save_npy(folder / f"{name}.npy", corrupted_copy(split, name, seed, device))
        log(f"  {name}: 5 severities x {len(split)} images")
    metadata = {"kind": "CIFAR-C-like (lotterypools.data.corruptions; CIFAR-10-C severity constants)",
                "source": source, "images_per_severity": len(split), "seed": seed,
                "corruptions": {n: list(CORRUPTIONS[n][1]) for n in names}}
    from ..core.records import write_json
    write_json(folder / METADATA_FILE, metadata)
    return folder


# ----------------------------------------------------------------------------- reading the official layout
def _load_plain_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A numeric ``.npy`` array; an object array (it would need pickle, which can run code) or a damaged file is
    a one-line error naming the file."""
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error) or "Python objects" in str(error):
            raise UserError(f"{path} holds an object array, which only pickle could load and which may run code: "
                            f"it is refused as unsafe; write the images as a uint8 array (make_corrupted.py "
                            f"does)") from None
        raise UserError(f"{path} is not a readable .npy array ({error}); write it again") from None
    except (OSError, EOFError) as error:
        raise UserError(f"{path} is not a readable .npy array ({type(error).__name__}: {error}); write it again") from None
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise UserError(f"{path} holds {array.dtype} values, not numbers: not an image or label array")
    return array


class CorruptedSet:
    """A folder in the CIFAR-10-C layout; corruptions are the ``.npy`` files present besides ``labels.npy``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"corruption folder {self.folder} does not exist; write one with CIFAR/make_corrupted.py "
                            f"or point --ood_data to the extracted CIFAR-10-C folder")
        if not (self.folder / LABELS_FILE).is_file():
            raise UserError(f"corruption folder {self.folder} has no {LABELS_FILE}: not in the CIFAR-10-C layout")
        self.labels = torch.from_numpy(_load_plain_npy(self.folder / LABELS_FILE).astype(np.int64))
        if len(self.labels) % len(SEVERITIES):
            raise UserError(f"{self.folder / LABELS_FILE} holds {len(self.labels)} labels, not 5 severities x N")
        self.per_severity = len(self.labels) // len(SEVERITIES)
        self.names = sorted(p.stem for p in self.folder.glob("*.npy") if p.name != LABELS_FILE)
        if not self.names:
            raise UserError(f"corruption folder {self.folder} holds no '<corruption>.npy' files")

    def select(self, names: Sequence[str] | None) -> list[str]:
        """The chosen corruptions (all present when ``names`` is None), each checked for its size."""
        chosen = self.names if not names else _check_names(names, self.names, f"in {self.folder}")
        for name in chosen:
            self._array(name)
        return chosen

    def _array(self, name: str) -> np.ndarray:
        path = self.folder / f"{name}.npy"
        if not path.is_file():
            raise UserError(f"{path} is missing: the folder lists {', '.join(self.names)}")
        array = _load_plain_npy(path, mmap_mode="r")
        if array.shape[0] != len(self.labels) or array.ndim not in (3, 4):
            raise UserError(f"{path} holds {array.shape[0]} images of shape {array.shape[1:]}, expected "
                            f"{len(self.labels)} (5 severities x {self.per_severity}, as labels.npy) of (H, W[, C])")
        return array

    def split(self, name: str, severity: int) -> Split:
        """The test images of one corruption at one severity as uint8 (N, C, H, W) with their labels."""
        check_severities([severity])
        start, stop = (severity - 1) * self.per_severity, severity * self.per_severity
        block = np.array(self._array(name)[start:stop])  # a writable copy of the slice
        images = torch.from_numpy(block if block.ndim == 4 else block[..., None]).permute(0, 3, 1, 2).contiguous()
        return Split(images, self.labels[start:stop].clone())

    def check_shape(self, channels: int, size: int) -> None:
        """One-line error when the images do not fit a model for ``channels`` x ``size`` x ``size`` inputs."""
        images = self.split(self.names[0], 1).images
        if tuple(images.shape[1:]) != (channels, size, size):
            raise UserError(f"images in {self.folder} are {tuple(images.shape[1:])} (C, H, W) but the model takes "
                            f"{(channels, size, size)}: check --dataset and --ood_data")

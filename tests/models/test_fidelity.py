"""Initialisation and augmentation as in the original code (VGG-16 classifier) and OpenLTH (ImageNet crop)."""

from __future__ import annotations

import torch
from torchvision import transforms

from lotterypools.data.imagefolder import train_transform
from lotterypools.models import build_model


def test_vgg16_classifier_is_normal_with_std_001_and_zero_bias():
    torch.manual_seed(0)
    model = build_model("vgg16_bn", 100, 3, (0.5,) * 3, (0.25,) * 3, 32)
    weight, bias = model.classifier.weight.detach(), model.classifier.bias.detach()
    # 51,200 draws: the sample std of N(0, 0.01) is within 1% of 0.01; PyTorch's default would give 0.0255
    assert abs(weight.std().item() - 0.01) < 3e-4 and abs(weight.mean().item()) < 3e-4
    assert torch.count_nonzero(bias) == 0


def test_vgg16_convolutions_keep_kaiming_normal_fan_out_and_zero_bias():
    torch.manual_seed(0)
    model = build_model("vgg16_bn", 10, 3, (0.5,) * 3, (0.25,) * 3, 32)
    conv = model.features[-3]  # the last 512 -> 512 conv: fan_out = 512 * 9
    assert isinstance(conv, torch.nn.Conv2d)
    assert abs(conv.weight.std().item() - (2 / (512 * 9)) ** 0.5) < 1e-3
    assert torch.count_nonzero(conv.bias) == 0


def test_imagenet_training_crop_uses_openlth_scale_and_ratio():
    crop = train_transform(224).transforms[0]
    assert isinstance(crop, transforms.RandomResizedCrop)
    assert tuple(crop.scale) == (0.1, 1.0) and tuple(crop.ratio) == (0.8, 1.25)
    torch.manual_seed(0)
    image = torch.zeros(3, 400, 400)
    shapes = [transforms.RandomResizedCrop.get_params(image, list(crop.scale), list(crop.ratio))[2:]
              for _ in range(2000)]
    areas = [h * w / 400 ** 2 for h, w in shapes]
    aspects = [w / h for h, w in shapes]
    assert min(areas) >= 0.099 and max(areas) <= 1.0
    assert min(aspects) >= 0.79 and max(aspects) <= 1.26  # torchvision's default would reach 3/4 and 4/3
    assert min(areas) < 0.15 and min(aspects) < 0.85 and max(aspects) > 1.2  # the whole range is used

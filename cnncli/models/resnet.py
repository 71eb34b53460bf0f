"""Residual networks (He, Zhang, Ren & Sun, 2016): torchvision's ImageNet ResNets and the paper's CIFAR ones.

ImageNet ResNets (`resnet18` ... `resnet152`, torchvision's builders) at 224x224x3:

    stage     kernel / units                              output       18 / 34 blocks   50 / 101 / 152 blocks
    conv1     64 @ 7x7, stride 2; BN; 3x3 max pool, s 2   56x56x64
    conv2_x   basic [3x3, 3x3] or bottleneck [1x1,3x3,1x1] 56x56        2 / 3            3 / 3 / 3
    conv3_x   stride 2 in the first block                 28x28        2 / 4            4 / 4 / 8
    conv4_x   stride 2                                    14x14        2 / 6            6 / 23 / 36
    conv5_x   stride 2                                    7x7x512 (x4 for bottlenecks) 2 / 3   3 / 3 / 3
    fc        global average pool, 1000                   1000         512*1000+1000    2048*1000+1000

A basic block has 2 * (3*3*c*c) weights + 2 BNs of 2*c; a bottleneck 1x1 c*4c -> c, 3x3 c -> c, 1x1 c -> 4c
plus BNs; a stride-2 or widening block adds a 1x1 projection shortcut (option B). Totals: 11,689,512 /
21,797,672 / 25,557,032 / 44,549,160 / 60,192,808. The global average pool makes the head independent of
the input size, and every stride is padded, so any input from 1x1 up runs (small ones lose most of the
spatial detail by conv3_x; the 32x32 digits end at 1x1 after conv5_x).

CIFAR ResNets (`resnet20` ... `resnet110`, section 4.2 of the paper), 6n+2 layers at 32x32x3, 10 classes:

    stage    kernel / units                  output     parameters (BN: 2 per map)
    conv1    16 @ 3x3; BN                    32x32x16   (3*3*3)*16 + 32                         =    464
    stage1   n blocks [16 @ 3x3, 16 @ 3x3]   32x32x16   n * (2*(3*3*16)*16 + 2*32)              = n * 4,672
    stage2   n blocks, 32, first stride 2    16x16x32   (3*3*16)*32+(3*3*32)*32+128 + (n-1)*18,560
    stage3   n blocks, 64, first stride 2    8x8x64     (3*3*32)*64+(3*3*64)*64+256 + (n-1)*73,984
    fc       global average pool, 10         10         64*10+10                                =    650

n = 3, 5, 7, 9, 18: 269,722 / 464,154 / 658,586 / 853,018 / 1,727,962. Shortcuts are option A: the identity,
and where a stage halves the size and doubles the width, every other pixel with the new maps zero-padded,
so shortcuts add no parameters. Any input from 1x1 up runs (stride-2 convs and x[::2] both give
ceil(size/2)).
"""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnncli.models import ModelCard
from cnncli.models.common import check_input_size, kaiming_fan_out, with_in_channels

MIN_IMAGE_SIZE = 1  # every stride is padded and the head pools globally: even 1x1 passes through


def _torchvision_resnet(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    check_input_size(name, image_size, MIN_IMAGE_SIZE)
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    model.conv1 = with_in_channels(model.conv1, in_channels, init_weight=kaiming_fan_out)
    return model


def resnet18(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return _torchvision_resnet("resnet18", in_channels, num_classes, image_size)


def resnet34(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return _torchvision_resnet("resnet34", in_channels, num_classes, image_size)


def resnet50(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return _torchvision_resnet("resnet50", in_channels, num_classes, image_size)


def resnet101(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return _torchvision_resnet("resnet101", in_channels, num_classes, image_size)


def resnet152(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return _torchvision_resnet("resnet152", in_channels, num_classes, image_size)


class BasicBlockA(nn.Module):
    """Two 3x3 conv-BN layers plus an option-A shortcut: y = relu(F(x) + shortcut(x))."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.stride, self.extra_maps = stride, channels_out - channels_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra_maps:
            # option A: zero maps for the extra width, so the shortcut stays parameter-free
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_maps))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, width = [], 16
        for stage_width, stride in ((16, 1), (32, 2), (64, 2)):
            for block in range(blocks_per_stage):
                layers.append(BasicBlockA(width, stage_width, stride if block == 0 else 1))
                width = stage_width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)  # the paper initializes as in He et al. 2015

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _cifar_resnet(depth: int, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    check_input_size(f"resnet{depth}", image_size, MIN_IMAGE_SIZE)
    return CifarResNet((depth - 2) // 6, in_channels, num_classes)


def resnet20(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    return _cifar_resnet(20, in_channels, num_classes, image_size)


def resnet32(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    return _cifar_resnet(32, in_channels, num_classes, image_size)


def resnet44(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    return _cifar_resnet(44, in_channels, num_classes, image_size)


def resnet56(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    return _cifar_resnet(56, in_channels, num_classes, image_size)


def resnet110(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    return _cifar_resnet(110, in_channels, num_classes, image_size)


def _resnet_card(image_size: int, num_classes: int, imagenet: str | None = None, **paper) -> ModelCard:
    return ModelCard(
        channels=3, image_size=image_size, num_classes=num_classes, min_size=MIN_IMAGE_SIZE,
        head=("fc",), classifier=("fc",), first_conv="conv1", imagenet_weights=imagenet,
        paper_source="He et al. 2016, " + ("table 1" if imagenet else "table 6 (CIFAR-10)"), **paper,
    )  # fmt: skip


MODELS = {
    **{name: _resnet_card(224, 1000, name, paper_macs=macs) for name, macs in (
        ("resnet18", 1.8e9), ("resnet34", 3.6e9), ("resnet50", 3.8e9), ("resnet101", 7.6e9), ("resnet152", 11.3e9))},
    **{name: _resnet_card(32, 10, paper_params=params) for name, params in (
        ("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet44", 0.66e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6))},
}  # fmt: skip

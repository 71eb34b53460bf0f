"""Network in Network (Lin, Chen & Yan, 2014): mlpconv blocks and global average pooling.

An mlpconv block is a conv followed by two 1x1 convs (a small MLP slid over the image), each with a ReLU.
The last block has one map per class, and their global averages are the logits: no fully connected layer,
so the parameter count does not depend on the input size. Default variant `cifar10`, the authors'
CIFAR-10 model at 32x32x3 (pools round up, as in their Caffe model):

    block     kernel / units                            output     parameters
    mlpconv1  192 @ 5x5 pad 2, 160 @ 1x1, 96 @ 1x1       32x32x96   (5*5*3)*192+192 + 192*160+160 + 160*96+96 =  60,928
    pool1     3x3 max, stride 2; dropout                 16x16x96
    mlpconv2  192 @ 5x5 pad 2, 192 @ 1x1, 192 @ 1x1      16x16x192  (5*5*96)*192+192 + 2*(192*192+192)        = 535,104
    pool2     3x3 average, stride 2; dropout             8x8x192
    mlpconv3  192 @ 3x3 pad 1, 192 @ 1x1, 10 @ 1x1       8x8x10     (3*3*192)*192+192 + 192*192+192 +
                                                                    192*10+10                                 = 370,954
    pool3     global average                             10
                                                                                                      total 966,986

variant `imagenet`: the authors' ImageNet model at 224x224x3, mlpconv blocks 96-256-384-1024:

    block     kernel / units                            output     parameters
    mlpconv1  96 @ 11x11 stride 4, 96 @ 1x1, 96 @ 1x1    54x54x96   (11*11*3)*96+96 + 2*(96*96+96)      =    53,568
    pool      3x3 max, stride 2                          27x27x96
    mlpconv2  256 @ 5x5 pad 2, 256 @ 1x1 (x2)            27x27x256  (5*5*96)*256+256 + 2*(256*256+256)  =   746,240
    pool      3x3 max, stride 2                          13x13x256
    mlpconv3  384 @ 3x3 pad 1, 384 @ 1x1 (x2)            13x13x384  (3*3*256)*384+384 + 2*(384*384+384) = 1,180,800
    pool      3x3 max, stride 2; dropout                 6x6x384
    mlpconv4  1024 @ 3x3 pad 1, 1024 @ 1x1, 1000 @ 1x1   6x6x1000   (3*3*384)*1024+1024 +
                                                                    1024*1024+1024 + 1024*1000+1000     = 5,614,568
    pool      global average                             1000
                                                                                                total 7,595,176

As in the released models the class maps also pass a ReLU before the average (so the logits are >= 0).
Smallest inputs (searched on the meta device): cifar10 4x4, imagenet 39x39. The paper does not state an
initialization; PyTorch's default is kept.
"""

from torch import nn

from cnncli.errors import check_choice
from cnncli.models import ModelCard
from cnncli.models.common import check_dropout, check_input_size

MIN_IMAGE_SIZE = {"cifar10": 4, "imagenet": 39}  # the smallest inputs the pools leave 1x1 of


def mlpconv(channels_in: int, widths: tuple[int, int, int], kernel_size: int, stride: int = 1, padding: int = 0):
    first, second, third = widths
    return [
        nn.Conv2d(channels_in, first, kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(first, second, 1),  # the 1x1 convs: a per-pixel MLP across the maps
        nn.ReLU(inplace=True),
        nn.Conv2d(second, third, 1),
        nn.ReLU(inplace=True),
    ]


def nin(
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    variant: str = "cifar10",
    dropout: float = 0.5,
) -> nn.Sequential:
    check_choice("variant", variant, MIN_IMAGE_SIZE)
    check_dropout(dropout)
    check_input_size(f"nin ({variant})", image_size, MIN_IMAGE_SIZE[variant])
    if variant == "cifar10":
        layers = [
            *mlpconv(in_channels, (192, 160, 96), 5, padding=2),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Dropout(dropout),  # the paper's dropout between mlpconv blocks
            *mlpconv(96, (192, 192, 192), 5, padding=2),
            nn.AvgPool2d(3, stride=2, ceil_mode=True),
            nn.Dropout(dropout),
            *mlpconv(192, (192, 192, num_classes), 3, padding=1),
        ]
    else:
        layers = [
            *mlpconv(in_channels, (96, 96, 96), 11, stride=4),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            *mlpconv(96, (256, 256, 256), 5, padding=2),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            *mlpconv(256, (384, 384, 384), 3, padding=1),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Dropout(dropout),
            *mlpconv(384, (1024, 1024, num_classes), 3, padding=1),
        ]
    # global average pooling replaces the fully connected classifier: one average per class map
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


MODELS = {
    "nin": ModelCard(
        channels=3, image_size=32, num_classes=10, min_size=lambda o: MIN_IMAGE_SIZE[o.get("variant", "cifar10")],
        # the last 1x1 conv outputs one map per class; the global average pool makes them the scores
        head=("-4",), classifier=("-4",), first_conv="0",
    ),
}  # fmt: skip

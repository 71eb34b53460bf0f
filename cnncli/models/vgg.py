"""VGG (Simonyan & Zisserman, 2014): torchvision's builders, configurations A, B, D, E = VGG-11/13/16/19.

All 3x3 convolutions (stride 1, pad 1: two stacked see 5x5, three see 7x7, with fewer weights and more
ReLUs than one big kernel), five 2x2 max pools, then 4096-4096-classes. VGG-16 at 224x224x3:

    stage   kernel / units               output        parameters
    1       2 x 64 @ 3x3; pool 2x2       112x112x64    (3*3*3)*64+64 + (3*3*64)*64+64        =     38,720
    2       2 x 128 @ 3x3; pool          56x56x128     (3*3*64)*128+128 + (3*3*128)*128+128  =    221,440
    3       3 x 256 @ 3x3; pool          28x28x256     295,168 + 2*590,080                   =  1,475,328
    4       3 x 512 @ 3x3; pool          14x14x512     1,180,160 + 2*2,359,808               =  5,899,776
    5       3 x 512 @ 3x3; pool          7x7x512       3*2,359,808                           =  7,079,424
    fc6     4096, dropout                4096          (7*7*512)*4096+4096                   = 102,764,544
    fc7     4096, dropout                4096          4096*4096+4096                        =  16,781,312
    fc8     1000                         1000          4096*1000+1000                        =   4,097,000
                                                                                       total 138,357,544

VGG-11 132,863,336 (stages of 1, 1, 2, 2, 2 convs), VGG-13 133,047,848 (2, 2, 2, 2, 2), VGG-19 143,667,240
(2, 2, 4, 4, 4). `batch_norm: true` (torchvision's vgg*_bn, not in the paper) adds a BatchNorm after every
conv: 2 parameters per map, +5,504 / +5,888 / +8,448 / +11,008.

Other input sizes: torchvision's adaptive average pool brings the last maps to the native 7x7 before fc6,
so the head and the parameter count never change. The five pools halve the input, so the smallest input is
32x32 (one pixel left, spread over the 7x7 grid by the pool); the 32x32 digits work as they are.
"""

import torchvision
from torch import nn

from cnncli.models import ModelCard
from cnncli.models.common import check_dropout, check_flag, check_input_size, kaiming_fan_out, with_in_channels

MIN_IMAGE_SIZE = 32  # 2^5: five 2x2 max pools


def _vgg(name: str, in_channels: int, num_classes: int, image_size: int, batch_norm: bool, dropout: float):
    check_flag("batch_norm", batch_norm)
    check_dropout(dropout)
    check_input_size(name, image_size, MIN_IMAGE_SIZE)
    builder = getattr(torchvision.models, f"{name}_bn" if batch_norm else name)
    model = builder(weights=None, num_classes=num_classes, dropout=dropout)
    model.features[0] = with_in_channels(model.features[0], in_channels, init_weight=kaiming_fan_out)
    return model


def vgg11(in_channels=3, num_classes=1000, image_size=224, batch_norm=False, dropout=0.5) -> nn.Module:
    return _vgg("vgg11", in_channels, num_classes, image_size, batch_norm, dropout)


def vgg13(in_channels=3, num_classes=1000, image_size=224, batch_norm=False, dropout=0.5) -> nn.Module:
    return _vgg("vgg13", in_channels, num_classes, image_size, batch_norm, dropout)


def vgg16(in_channels=3, num_classes=1000, image_size=224, batch_norm=False, dropout=0.5) -> nn.Module:
    return _vgg("vgg16", in_channels, num_classes, image_size, batch_norm, dropout)


def vgg19(in_channels=3, num_classes=1000, image_size=224, batch_norm=False, dropout=0.5) -> nn.Module:
    return _vgg("vgg19", in_channels, num_classes, image_size, batch_norm, dropout)


def _vgg_card(name: str, params: float, macs: float | None) -> ModelCard:
    return ModelCard(
        channels=3, image_size=224, num_classes=1000, min_size=MIN_IMAGE_SIZE,
        head=("classifier.6",), classifier=("classifier",), first_conv="features.0",
        paper_params=params, paper_macs=macs,
        paper_source="Simonyan & Zisserman 2015 table 2" + ("; MACs: He et al. 2016" if macs else ""),
        imagenet_weights=lambda o: name + ("_bn" if o.get("batch_norm") else ""),
    )  # fmt: skip


MODELS = {
    "vgg11": _vgg_card("vgg11", 133e6, None),
    "vgg13": _vgg_card("vgg13", 133e6, None),
    "vgg16": _vgg_card("vgg16", 138e6, 15.3e9),
    "vgg19": _vgg_card("vgg19", 144e6, 19.6e9),
}

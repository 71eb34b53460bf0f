"""The course's first CNN (the hand-signs example): two 3x3 convolutions, one max pool, one dense layer.
At its 64x64x3 input with 6 classes (`valid` convolutions, no padding):

    layer    kernel / units        output      parameters
    conv1    32 @ 3x3, stride 1    32x62x62    (3*3*3)*32+32      =     896
    conv2    32 @ 3x3, stride 1    32x60x60    (3*3*32)*32+32     =   9,248
    pool     2x2 max, stride 2     32x30x30                               0
    dense    6                     6           (32*30*30)*6+6     = 172,806
                                                              total 182,950

The dense layer is sized from the actual feature map, (32 * ((image_size - 4) // 2)^2) inputs, so the
network works from 6x6 up (6 -> 4 -> 2 -> 1) and its size grows with the input.
"""

from torch import nn

from cnncli.models import ModelCard
from cnncli.models.common import check_dropout, check_input_size, make_activation

MIN_IMAGE_SIZE = 6  # two valid 3x3 convs take 4 pixels off, the 2x2 pool needs 2 of what is left


def simple_cnn(
    in_channels: int = 3,
    num_classes: int = 6,
    image_size: int = 64,
    activation: str = "relu",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    check_dropout(dropout)
    check_input_size("simple_cnn", image_size, MIN_IMAGE_SIZE)
    make_activation(activation)  # reject a bad name before building anything

    def conv(channels_in: int) -> list[nn.Module]:
        # with batch norm the conv bias is redundant (the norm's shift replaces it)
        layers: list[nn.Module] = [nn.Conv2d(channels_in, 32, kernel_size=3, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(32))
        return [*layers, make_activation(activation)]

    pooled = (image_size - 4) // 2
    return nn.Sequential(
        *conv(in_channels),
        *conv(32),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(32 * pooled * pooled, num_classes),
    )


MODELS = {
    "simple_cnn": ModelCard(
        channels=3, image_size=64, num_classes=6, min_size=MIN_IMAGE_SIZE,
        head=("-1",), classifier=("-2:",), first_conv="0",  # dropout and dense after the flatten
    ),
}  # fmt: skip

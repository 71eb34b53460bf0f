"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998), at its classic 32x32x1 input.

    layer   kernel / units        output     parameters
    C1      6 @ 5x5, stride 1     6x28x28    (5*5*1)*6+6     =    156
    S2      2x2 pool, stride 2    6x14x14                           0
    C3      16 @ 5x5, stride 1    16x10x10   (5*5*6)*16+16   =  2,416
    S4      2x2 pool, stride 2    16x5x5                            0
    C5      120 (5x5 -> 1x1)      120        (5*5*16)*120+120 = 48,120
    F6      84                    84         120*84+84       = 10,164
    output  10                    10         84*10+10        =    850
                                                         total 61,706

variant `modern` (the course's lab): ReLU and max pooling. variant `classic`: tanh and average pooling,
as in the 1998 table. C5 is a dense layer over the S4 maps, so other input sizes work from 14x14 up.
"""

from torch import nn

from cnncli.errors import check_choice
from cnncli.models.common import check_dropout, check_input_size

VARIANTS = {"modern": (nn.ReLU, nn.MaxPool2d), "classic": (nn.Tanh, nn.AvgPool2d)}


def lenet5(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 32,
    variant: str = "modern",
    dropout: float = 0.0,
) -> nn.Sequential:
    check_choice("variant", variant, VARIANTS)
    check_dropout(dropout)
    check_input_size("lenet5", image_size, minimum=14)
    Activation, Pool = VARIANTS[variant]
    s4_size = ((image_size - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=5),  # C1
        Activation(),
        Pool(2),  # S2
        nn.Conv2d(6, 16, kernel_size=5),  # C3
        Activation(),
        Pool(2),  # S4
        nn.Flatten(),
        nn.Linear(16 * s4_size * s4_size, 120),  # C5
        Activation(),
        nn.Dropout(dropout),
        nn.Linear(120, 84),  # F6
        Activation(),
        nn.Dropout(dropout),
        nn.Linear(84, num_classes),  # output
    )

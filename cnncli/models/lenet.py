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
as in the 1998 table. C5 is a dense layer over the S4 maps, so other input sizes work from 16x16 up
(16 -> 12 -> 6 -> 2 -> 1; at 14 or 15 S4 would be empty).

variant `paper`: the network of the 1998 paper itself, 60,000 trainable parameters:

    layer   kernel / units                     output     parameters
    C1      6 @ 5x5                            6x28x28    (5*5*1)*6+6                  =    156
    S2      2x2 sum * coefficient + bias       6x14x14    6*2                          =     12
    C3      16 @ 5x5, sparse (paper table 1)   16x10x10   (6*3+9*4+1*6)*5*5+16         =  1,516
    S4      2x2 sum * coefficient + bias       16x5x5     16*2                         =     32
    C5      120 (5x5 -> 1x1)                   120        (5*5*16)*120+120             = 48,120
    F6      84                                 84         120*84+84                    = 10,164
    output  10 RBF units, fixed +-1 codes      10         0 trainable (84*10 buffer)
                                                                                 total 60,000

Every layer up to F6 is squashed by the paper's f(a) = 1.7159 tanh(2a/3) (appendix A), trainable weights
start uniform in +-2.4/fan_in (appendix A). The output units are Euclidean RBFs, y_i = sum_j (x_j - w_ij)^2,
with fixed parameter vectors of -1/+1; the logits are -y_i, so cross-entropy on them is the paper's
discriminative criterion (section II-C) without its constant `j` class. The paper drew each class's code as
a 7x12 bitmap of the character; those bitmaps are not reproduced here: the codes are a fixed pseudo-random
+-1 pattern (seed 0, the same for every model), which keeps them far apart for any number of classes.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnncli.errors import check_choice
from cnncli.models import ModelCard
from cnncli.models.common import check_dropout, check_input_size

VARIANTS = {"modern": (nn.ReLU, nn.MaxPool2d), "classic": (nn.Tanh, nn.AvgPool2d), "paper": None}
MIN_IMAGE_SIZE = 16  # C1, S2, C3, S4 leave ((size - 4) // 2 - 4) // 2 pixels: 1 at 16, 0 at 15

# Which S2 maps feed each C3 map (LeCun et al. 1998, table 1): six maps see 3 neighbours, nine see 4,
# one sees all 6. Breaking the symmetry makes the maps learn different features, and it costs fewer weights.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


def lenet5(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 32,
    variant: str = "modern",
    dropout: float = 0.0,
) -> nn.Sequential:
    check_choice("variant", variant, VARIANTS)
    check_dropout(dropout)
    check_input_size("lenet5", image_size, minimum=MIN_IMAGE_SIZE)
    s4_size = ((image_size - 4) // 2 - 4) // 2
    if variant == "paper":
        return _lenet5_paper(in_channels, num_classes, s4_size, dropout)
    Activation, Pool = VARIANTS[variant]
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


def _lenet5_paper(in_channels: int, num_classes: int, s4_size: int, dropout: float) -> nn.Sequential:
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=5),  # C1
        ScaledTanh(),
        Subsampling(6),  # S2
        ScaledTanh(),
        SparseConv2d(C3_TABLE, in_maps=6, kernel_size=5),  # C3
        ScaledTanh(),
        Subsampling(16),  # S4
        ScaledTanh(),
        nn.Flatten(),
        nn.Linear(16 * s4_size * s4_size, 120),  # C5
        ScaledTanh(),
        nn.Dropout(dropout),
        nn.Linear(120, 84),  # F6
        ScaledTanh(),
        nn.Dropout(dropout),
        RBFOutput(84, num_classes),  # output
    )
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = math.prod(module.weight.shape[1:])
            _uniform_(module.weight, 2.4 / fan_in)
            _uniform_(module.bias, 2.4 / fan_in)
    return model


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a) with A = 1.7159, S = 2/3: f(1) = 1 and f(-1) = -1, and the gain is largest
    around the +-1 targets the network is trained towards (appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2 / 3))


class Subsampling(nn.Module):
    """S2/S4: the four inputs of each 2x2 block are added, multiplied by one trainable coefficient per map
    and shifted by one trainable bias per map (2 parameters per map)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels))
        _uniform_(self.weight, 2.4 / 4)  # fan-in 4: the 2x2 block
        _uniform_(self.bias, 2.4 / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summed = F.avg_pool2d(x, 2) * 4
        return summed * self.weight[:, None, None] + self.bias[:, None, None]


class SparseConv2d(nn.Module):
    """A convolution where output map i sees only the input maps table[i]. Only the connected kernels are
    parameters (so they, not a masked dense kernel, are what the parameter count sees); the dense kernel is
    assembled from them, zeros elsewhere, in each forward."""

    def __init__(self, table: tuple[tuple[int, ...], ...], in_maps: int, kernel_size: int):
        super().__init__()
        self.in_maps, self.out_maps, self.kernel_size = in_maps, len(table), kernel_size
        slots = [out * in_maps + source for out, sources in enumerate(table) for source in sources]
        self.weight = nn.Parameter(torch.empty(len(slots), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_maps))
        self.register_buffer("slots", torch.tensor(slots), persistent=False)
        # each map's own fan-in (75, 100 or 150: 3, 4 or 6 maps of 5x5) sets its initial range
        start = 0
        for out, sources in enumerate(table):
            fan_in = len(sources) * kernel_size * kernel_size
            _uniform_(self.weight[start : start + len(sources)], 2.4 / fan_in)
            _uniform_(self.bias[out : out + 1], 2.4 / fan_in)
            start += len(sources)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_maps * self.in_maps, k, k).index_copy(0, self.slots, self.weight)
        return F.conv2d(x, dense.view(self.out_maps, self.in_maps, k, k), self.bias)


class RBFOutput(nn.Module):
    """Euclidean RBF units with fixed -1/+1 parameter vectors (a buffer, not trained); returns -distance^2
    as the logits."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        # made on the CPU so the seed gives the same codes on every device, then moved to the default one
        generator = torch.Generator().manual_seed(0)
        codes = torch.randint(0, 2, (num_classes, in_features), generator=generator, device="cpu")
        self.register_buffer("codes", (codes * 2 - 1).float().to(torch.get_default_device()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x[:, None, :] - self.codes).pow(2).sum(-1)


@torch.no_grad()
def _uniform_(tensor: torch.Tensor, bound: float) -> None:
    """The paper's initialization: uniform in +-2.4/F, F the unit's fan-in, small enough to keep the
    squashing functions off their flat ends."""
    tensor.uniform_(-bound, bound)


# The facts of the zoo's models (cnncli/models/__init__.py); in a Sequential, "-1" is the last layer.
MODELS = {
    "lenet5": ModelCard(
        channels=1, image_size=32, num_classes=10, min_size=MIN_IMAGE_SIZE,
        head=("-1",), classifier=("-7:",), first_conv="0",  # C5, F6 and the output, in every variant
        paper_params=60_000, paper_source="LeCun et al. 1998",
    ),
}  # fmt: skip

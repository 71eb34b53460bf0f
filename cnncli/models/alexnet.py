"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) and ZFNet (Zeiler & Fergus, 2013).

AlexNet, default variant `single_tower`: the 2012 layer sizes on one device, at its 227x227x3 input:

    layer   kernel / units                    output      parameters
    conv1   96 @ 11x11, stride 4; LRN         55x55x96    (11*11*3)*96+96      =     34,944
    pool1   3x3 max, stride 2                 27x27x96                                    0
    conv2   256 @ 5x5, pad 2; LRN             27x27x256   (5*5*96)*256+256     =    614,656
    pool2   3x3 max, stride 2                 13x13x256                                   0
    conv3   384 @ 3x3, pad 1                  13x13x384   (3*3*256)*384+384    =    885,120
    conv4   384 @ 3x3, pad 1                  13x13x384   (3*3*384)*384+384    =  1,327,488
    conv5   256 @ 3x3, pad 1                  13x13x256   (3*3*384)*256+256    =    884,992
    pool5   3x3 max, stride 2                 6x6x256                                     0
    fc6     4096, dropout                     4096        (6*6*256)*4096+4096  = 37,752,832
    fc7     4096, dropout                     4096        4096*4096+4096       = 16,781,312
    fc8     1000                              1000        4096*1000+1000       =  4,097,000
                                                                         total 62,378,344

variant `two_tower`: the paper's two-GPU network. conv2, conv4 and conv5 only see the maps of their own
tower (groups=2), which halves their weights: (5*5*48)*256+256 = 307,456, (3*3*192)*384+384 = 663,936,
(3*3*192)*256+256 = 442,624; total 60,965,224. Response normalization also runs per tower.
`batch_norm=true` (the course's lab, not the paper): BatchNorm2d after each of the five convs instead of the
response normalization, 2 * (96+256+384+384+256) = 2,752 more parameters.
variant `torchvision`: torchvision's layout (64-192-384-256-256, no LRN), 61,100,840.

ZFNet (`zfnet`): AlexNet with a 7x7 stride-2 conv1 and a stride-2 conv2, at 224x224x3; pools round up
(as in the Caffe-era code) so the maps are the paper's 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 6:

    layer   kernel / units                   output      parameters
    conv1   96 @ 7x7, stride 2, pad 1        110x110x96  (7*7*3)*96+96        =     14,208
    pool1   3x3 max, stride 2; LRN           55x55x96                                    0
    conv2   256 @ 5x5, stride 2              26x26x256   (5*5*96)*256+256     =    614,656
    pool2   3x3 max, stride 2; LRN           13x13x256                                   0
    conv3-5 384, 384, 256 @ 3x3, pad 1       13x13x256   as AlexNet           =  3,097,600
    pool5   3x3 max, stride 2                6x6x256                                     0
    fc6-8   4096, 4096, 1000                 1000        as AlexNet           = 58,631,144
                                                                        total 62,357,608

Other input sizes: an adaptive average pool before fc6 brings the last maps to the native 6x6 (as
torchvision does), so the fully connected layers, and the parameter count, are the same at every size
(at the native size the pool does nothing). Inputs must still survive the strided convs and pools:
AlexNet needs at least 67x67 (torchvision's padded variant 63x63), ZFNet 47x47; smaller sizes stop with
a ConfigError before training.
"""

import torch
import torchvision
from torch import nn

from cnncli.errors import ConfigError, check_choice
from cnncli.models import ModelCard
from cnncli.models.common import check_dropout, check_flag, check_input_size, with_in_channels

VARIANTS = ("single_tower", "two_tower", "torchvision")
# the smallest inputs the convs and pools leave a map of at least 1x1 for (searched on the meta device)
MIN_IMAGE_SIZE = {"single_tower": 67, "two_tower": 67, "torchvision": 63, "zfnet": 47}


def alexnet(
    in_channels: int = 3,
    num_classes: int = 1000,
    image_size: int = 227,
    variant: str = "single_tower",
    dropout: float = 0.5,
    batch_norm: bool = False,
) -> nn.Module:
    check_choice("variant", variant, VARIANTS)
    check_dropout(dropout)
    check_flag("batch_norm", batch_norm)
    check_input_size(f"alexnet ({variant})", image_size, MIN_IMAGE_SIZE[variant])
    if variant == "torchvision" and batch_norm:
        raise ConfigError("batch_norm", "true only for the variants single_tower and two_tower")
    if variant == "torchvision":
        model = torchvision.models.alexnet(weights=None, num_classes=num_classes, dropout=dropout)
        model.features[0] = with_in_channels(model.features[0], in_channels)
        return model
    towers = 2 if variant == "two_tower" else 1

    def conv(in_maps: int, out_maps: int, **options) -> list[nn.Module]:
        """conv, BatchNorm when batch_norm=true, ReLU"""
        norm = [nn.BatchNorm2d(out_maps)] if batch_norm else []
        return [nn.Conv2d(in_maps, out_maps, **options), *norm, nn.ReLU(inplace=True)]

    def lrn() -> list[nn.Module]:
        """batch_norm=true (the course's lab): BatchNorm after every conv, in place of the response normalization"""
        return [] if batch_norm else [TowerLRN(towers)]

    features = nn.Sequential(
        *conv(in_channels, 96, kernel_size=11, stride=4),  # conv1: each tower sees all input channels
        *lrn(),
        nn.MaxPool2d(3, stride=2),  # overlapping pooling (3 > 2): the paper's choice, it overfits less
        *conv(96, 256, kernel_size=5, padding=2, groups=towers),  # conv2
        *lrn(),
        nn.MaxPool2d(3, stride=2),
        *conv(256, 384, kernel_size=3, padding=1),  # conv3: the one conv that crosses the towers
        *conv(384, 384, kernel_size=3, padding=1, groups=towers),  # conv4
        *conv(384, 256, kernel_size=3, padding=1, groups=towers),  # conv5
        nn.MaxPool2d(3, stride=2),
    )
    model = AlexNetLike(features, num_classes, dropout)
    # The paper's initialization: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fully
    # connected layers (so the ReLUs start with positive inputs), 0 elsewhere.
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    _init_normal(model, std=0.01, bias_one=[convs[1], convs[3], convs[4], *model.classifier[1:5:3]])
    return model


def zfnet(
    in_channels: int = 3,
    num_classes: int = 1000,
    image_size: int = 224,
    dropout: float = 0.5,
) -> nn.Module:
    check_dropout(dropout)
    check_input_size("zfnet", image_size, MIN_IMAGE_SIZE["zfnet"])
    features = nn.Sequential(
        # 7x7 stride 2 instead of 11x11 stride 4: the paper's visualizations showed conv1 aliasing and dead
        # filters with the larger stride and kernel
        nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        TowerLRN(1),  # "contrast normalized across feature maps", after the pool in this paper
        nn.Conv2d(96, 256, kernel_size=5, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        TowerLRN(1),
        nn.Conv2d(256, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
    )
    model = AlexNetLike(features, num_classes, dropout)
    _init_normal(model, std=0.01, bias_one=[])  # the paper: weights 1e-2, biases 0
    return model


class AlexNetLike(nn.Module):
    """Conv features, then an adaptive pool to the native 6x6x256 and the 4096-4096-classes head."""

    def __init__(self, features: nn.Sequential, num_classes: int, dropout: float):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),  # the paper's dropout on fc6 and fc7: its answer to overfitting
            nn.Linear(256 * 6 * 6, 4096),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),  # fc7
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),  # fc8
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class TowerLRN(nn.Module):
    """The 2012 paper's local response normalization, b = a / (k + alpha * sum a^2)^beta over n = 5
    neighbouring maps, k = 2, alpha = 1e-4, beta = 0.75. PyTorch's layer divides alpha by n, hence alpha * n
    here. With two towers each tower normalizes over its own maps, as on the paper's two GPUs."""

    def __init__(self, towers: int):
        super().__init__()
        self.towers = towers
        self.norm = nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.towers == 1:
            return self.norm(x)
        return torch.cat([self.norm(part) for part in x.chunk(self.towers, dim=1)], dim=1)


@torch.no_grad()
def _init_normal(model: nn.Module, std: float, bias_one: list[nn.Module]) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.normal_(0, std)
            module.bias.fill_(1.0 if any(module is m for m in bias_one) else 0.0)


def _alexnet_card(name: str, image_size: int, min_size, **facts) -> ModelCard:
    return ModelCard(
        channels=3, image_size=image_size, num_classes=1000, min_size=min_size,
        head=("classifier.6",), classifier=("classifier",), first_conv="features.0", **facts,
    )  # fmt: skip


MODELS = {
    "alexnet": _alexnet_card(
        "alexnet", 227, lambda o: MIN_IMAGE_SIZE[o.get("variant", "single_tower")],
        paper_params=60e6, paper_source="Krizhevsky et al. 2012",
        imagenet_weights=lambda o: "alexnet" if o.get("variant") == "torchvision" else None,
    ),
    "zfnet": _alexnet_card("zfnet", 224, MIN_IMAGE_SIZE["zfnet"]),
}  # fmt: skip

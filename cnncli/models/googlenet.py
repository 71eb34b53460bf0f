"""GoogLeNet, Inception v1 (Szegedy et al., 2014), at 224x224x3. Default variant `paper`: the paper's table 1.

    layer           kernel / units                             output       parameters
    conv1           64 @ 7x7, stride 2; 3x3 max pool s2; LRN    56x56x64     (7*7*3)*64+64          =      9,472
    conv2           64 @ 1x1, 192 @ 3x3; LRN; 3x3 max pool s2   28x28x192    64*64+64 +
                                                                             (3*3*64)*192+192       =    114,944
    inception 3a    64 | 96>128 | 16>32 | pool>32               28x28x256                              =    163,696
    inception 3b    128 | 128>192 | 32>96 | pool>64             28x28x480                              =    388,736
    max pool        3x3, stride 2                               14x14x480
    inception 4a    192 | 96>208 | 16>48 | pool>64              14x14x512                              =    376,176
    inception 4b    160 | 112>224 | 24>64 | pool>64             14x14x512                              =    449,160
    inception 4c    128 | 128>256 | 24>64 | pool>64             14x14x512                              =    510,104
    inception 4d    112 | 144>288 | 32>64 | pool>64             14x14x528                              =    605,376
    inception 4e    256 | 160>320 | 32>128 | pool>128           14x14x832                              =    868,352
    max pool        3x3, stride 2                               7x7x832
    inception 5a    256 | 160>320 | 32>128 | pool>128           7x7x832                                =  1,043,456
    inception 5b    384 | 192>384 | 48>128 | pool>128           7x7x1024                               =  1,444,080
    avg pool        7x7 (global); dropout 40%                   1024
    linear          1000                                        1000         1024*1000+1000            =  1,025,000
                                                                                                 total 6,998,552

An inception module with input c and columns `a | b>B | d>D | pool>p` is four parallel branches concatenated:
1x1 a; 1x1 b then 3x3 B; 1x1 d then 5x5 D; 3x3 max pool (stride 1) then 1x1 p. Parameters
c*a+a + c*b+b + 9*b*B+B + c*d+d + 25*d*D+D + c*p+p: the 1x1 reductions are what make the 3x3 and 5x5
affordable. Every conv has a bias and a ReLU; pools round up (as in the Caffe model) to give 112 -> 56 -> 28
-> 14 -> 7.

`aux_logits: true` adds the two train-time auxiliary classifiers on 4a and 4d: 5x5 average pool stride 3
(14 -> 4), 128 @ 1x1, fc 1024, dropout 70%, fc classes; 128*c+128 + 2048*1024+1024 + 1024*1000+1000 =
3,188,840 on 4a (c = 512) and 3,190,888 on 4d (c = 528): 13,378,280 in all. In training the model then
returns (logits, aux1, aux2) and the classifier adds 0.3 x their losses (the paper's weight); in eval mode,
the logits only. On maps smaller than 5x5 the 5x5 pool is skipped; an adaptive average pool to 4x4 (a no-op
at the native size) keeps the aux fc at 2048 inputs at any size.

variant `torchvision`: torchvision's GoogLeNet, 6,624,904 (13,004,888 with aux): BatchNorm after every conv
(no conv bias), no LRN, and a 3x3 conv where the paper's 5x5 branch is.

Other input sizes: the global average pool makes the head size-independent; the strided layers need an
input of at least 31x31 (torchvision's, with a 2x2 last pool: 15x15), searched on the meta device.
The paper gives no initialization; PyTorch's default is kept.
"""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnncli.errors import check_choice
from cnncli.models import ModelCard
from cnncli.models.common import check_dropout, check_flag, check_input_size, with_in_channels

MIN_IMAGE_SIZE = {"paper": 31, "torchvision": 15}  # five 3x3 stride-2 stages must leave 1x1

# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet(
    in_channels: int = 3,
    num_classes: int = 1000,
    image_size: int = 224,
    variant: str = "paper",
    aux_logits: bool = False,
    dropout: float = 0.4,
) -> nn.Module:
    check_choice("variant", variant, MIN_IMAGE_SIZE)
    check_flag("aux_logits", aux_logits)
    check_dropout(dropout)
    check_input_size(f"googlenet ({variant})", image_size, MIN_IMAGE_SIZE[variant])
    if variant == "paper":
        return GoogLeNet(in_channels, num_classes, aux_logits, dropout)
    model = torchvision.models.googlenet(
        weights=None, num_classes=num_classes, aux_logits=aux_logits, init_weights=True, dropout=dropout
    )

    def trunc_normal(weight):  # how torchvision initializes GoogLeNet's convs
        nn.init.trunc_normal_(weight, std=0.01, a=-2, b=2)

    model.conv1.conv = with_in_channels(model.conv1.conv, in_channels, init_weight=trunc_normal)
    return model


def conv_relu(channels_in: int, channels_out: int, kernel_size: int, **kwargs) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel_size, **kwargs), nn.ReLU(inplace=True))


def lrn() -> nn.LocalResponseNorm:
    # the paper gives no constants; these are its reference Caffe model's (size 5, alpha 1e-4, beta 0.75)
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


def max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


class Inception(nn.Module):
    def __init__(self, channels_in: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, pool_proj: int):
        super().__init__()
        self.branch1 = conv_relu(channels_in, c1, 1)
        self.branch3 = nn.Sequential(conv_relu(channels_in, c3_reduce, 1), conv_relu(c3_reduce, c3, 3, padding=1))
        self.branch5 = nn.Sequential(conv_relu(channels_in, c5_reduce, 1), conv_relu(c5_reduce, c5, 5, padding=2))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_relu(channels_in, pool_proj, 1))
        self.channels_out = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


class AuxClassifier(nn.Module):
    """A side head on an intermediate module: extra gradient for the lower layers during training."""

    def __init__(self, channels_in: int, num_classes: int):
        super().__init__()
        self.conv = conv_relu(channels_in, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, 5, stride=3)  # the paper's pool: 14x14 -> 4x4
        x = self.conv(F.adaptive_avg_pool2d(x, 4))  # no-op at the native size
        x = self.dropout(F.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


class GoogLeNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, aux_logits: bool, dropout: float):
        super().__init__()
        self.stem = nn.Sequential(
            conv_relu(in_channels, 64, 7, stride=2, padding=3),
            max_pool(),
            lrn(),
            conv_relu(64, 64, 1),
            conv_relu(64, 192, 3, padding=1),
            lrn(),
            max_pool(),
        )
        blocks, width = {}, 192
        for name, columns in INCEPTION.items():
            blocks[name] = Inception(width, *columns)
            width = blocks[name].channels_out
        self.inception3 = nn.Sequential(blocks["3a"], blocks["3b"], max_pool())
        self.inception4a = blocks["4a"]
        self.inception4bcd = nn.Sequential(blocks["4b"], blocks["4c"], blocks["4d"])
        self.inception4e = nn.Sequential(blocks["4e"], max_pool())
        self.inception5 = nn.Sequential(blocks["5a"], blocks["5b"])
        self.aux1 = AuxClassifier(blocks["4a"].channels_out, num_classes) if aux_logits else None
        self.aux2 = AuxClassifier(blocks["4d"].channels_out, num_classes) if aux_logits else None
        # global average pool instead of fully connected layers (from Network in Network): fewer weights
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(1024, num_classes)
        )

    def forward(self, x: torch.Tensor):
        x = self.inception4a(self.inception3(self.stem(x)))
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4bcd(x)
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        logits = self.head(self.inception5(self.inception4e(x)))
        # the auxiliary heads only train: at inference they are discarded, as in the paper
        return (logits, aux1, aux2) if aux1 is not None else logits


def _torchvision(o: dict) -> bool:
    return o.get("variant") == "torchvision"


MODELS = {
    "googlenet": ModelCard(
        channels=3, image_size=224, num_classes=1000, min_size=lambda o: MIN_IMAGE_SIZE[o.get("variant", "paper")],
        head=lambda o: ("fc" if _torchvision(o) else "head.3", "aux1.fc2", "aux2.fc2"),
        classifier=lambda o: ("fc" if _torchvision(o) else "head", "aux1", "aux2"),
        first_conv=lambda o: "conv1.conv" if _torchvision(o) else "stem.0.0",
        paper_macs=1.5e9, paper_source="Szegedy et al. 2015 (its 1.5G budget)",
        imagenet_weights=lambda o: "googlenet" if _torchvision(o) else None,
    ),
}  # fmt: skip

"""ConvNeXt (Liu et al., 2022): torchvision's convnext_tiny, convnext_small and convnext_base builders.

A ResNet modernized step by step towards a vision transformer, at 224x224x3:

    stage   kernel / units                                   output      tiny / small / base blocks
    stem    96 @ 4x4, stride 4 ("patchify"); LayerNorm        56x56x96    (base: 128 wide)
    1       blocks: 7x7 depthwise, LN, 1x1 x4 (GELU), 1x1      56x56x96    3 / 3 / 3
    2       LN + 2x2 stride-2 conv, then blocks                28x28x192   3 / 3 / 3
    3       same                                              14x14x384   9 / 27 / 27
    4       same                                              7x7x768     3 / 3 / 3    (base: 1024)
    head    global average pool, LayerNorm, 1000              1000        768*1000+1000

A block of width c: 7*7*c+c (depthwise) + 2c (LN) + c*4c+4c + 4c*c+c (inverted bottleneck) + c (layer
scale). Totals 28,589,128 / 50,223,688 / 88,591,464 (base: widths 128, 256, 512, 1024). The global average
pool makes the head independent of the input size; the 4x4 stem and three 2x2 downsamplings need an input
of at least 32x32 (one pixel left in stage 4).
"""

import torchvision
from torch import nn

from cnncli.models import ModelCard, PaperSpeed
from cnncli.models.common import check_input_size, check_stochastic_depth, trunc_normal, with_in_channels

MIN_IMAGE_SIZE = 32  # 4 * 2 * 2 * 2


def _convnext(name: str, in_channels: int, num_classes: int, image_size: int, stochastic_depth_prob: float):
    check_stochastic_depth(stochastic_depth_prob)
    check_input_size(name, image_size, MIN_IMAGE_SIZE)
    model = getattr(torchvision.models, name)(
        weights=None, num_classes=num_classes, stochastic_depth_prob=stochastic_depth_prob
    )
    model.features[0][0] = with_in_channels(model.features[0][0], in_channels, init_weight=trunc_normal)
    return model


def convnext_tiny(
    in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, stochastic_depth_prob: float = 0.1
) -> nn.Module:
    return _convnext("convnext_tiny", in_channels, num_classes, image_size, stochastic_depth_prob)


def convnext_small(
    in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, stochastic_depth_prob: float = 0.4
) -> nn.Module:
    return _convnext("convnext_small", in_channels, num_classes, image_size, stochastic_depth_prob)


def convnext_base(
    in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, stochastic_depth_prob: float = 0.5
) -> nn.Module:
    return _convnext("convnext_base", in_channels, num_classes, image_size, stochastic_depth_prob)


def a100(images_per_second: float, top1: float) -> PaperSpeed:
    """A row of the ConvNeXt paper's A100 comparison of ConvNeXt with Swin (the course's annex slide)."""
    return PaperSpeed(images_per_second, top1, "A100, TF32, channels last, 224x224", "Liu et al. 2022, A100 table")


def _convnext_card(name: str, params: float, macs: float, speed: PaperSpeed) -> ModelCard:
    return ModelCard(
        channels=3, image_size=224, num_classes=1000, min_size=MIN_IMAGE_SIZE,
        head=("classifier.2",), classifier=("classifier",), first_conv="features.0.0",
        paper_params=params, paper_macs=macs, paper_source="Liu et al. 2022, table", imagenet_weights=name,
        paper_speed=speed,
    )  # fmt: skip


MODELS = {
    "convnext_tiny": _convnext_card("convnext_tiny", 28e6, 4.5e9, a100(1943.5, 82.1)),
    "convnext_small": _convnext_card("convnext_small", 50e6, 8.7e9, a100(1275.3, 83.1)),
    "convnext_base": _convnext_card("convnext_base", 89e6, 15.4e9, a100(969.0, 83.8)),
}

"""Swin Transformers (Liu et al., 2021): torchvision's swin_t, swin_s and swin_b builders.

A vision transformer built like a CNN: attention only inside 7x7 windows of tokens (so its cost grows with
the image's area, not its square), the windows shifted by half a window every other block so that
information crosses their borders, and stages that merge 2x2 neighbouring tokens to halve the resolution
and double the width, like a ResNet's stages. Swin-T at 224x224x3:

    stage   units                                                         output      T / S / B blocks
    stem    96 @ 4x4, stride 4 (patch embedding); LayerNorm               56x56x96    (B: 128 wide)
    1       blocks: LN, window attention (3 heads; q, k, v, out proj.,   56x56x96    2 / 2 / 2
            a relative position bias per head), LN, MLP 96 -> 384 -> 96
    2       patch merging: 2x2 tokens concatenated (4c), LN, 4c -> 2c     28x28x192   2 / 2 / 2
    3       same (12 heads in T)                                         14x14x384   6 / 18 / 18
    4       same                                                         7x7x768     2 / 2 / 2
    head    LN, global average pool, 1000                                1000        768*1000+1000

Heads are 32 wide (3, 6, 12, 24 in T and S; 4, 8, 16, 32 in B). A block of width c holds the attention's
4c^2 + 4c, a 13*13 table of relative position biases per head, the MLP's 8c^2 + 5c and two LNs of 2c.
Totals: 28,288,354 / 49,606,258 / 87,768,224. Window attention of an h x w map costs 4hwc^2 + 2 * 7^2 * hwc
multiply-accumulates (the paper's eq. 2), against 4hwc^2 + 2(hw)^2c for global attention. Any input from
4x4 up runs: the stages pad odd sides and windows larger than the map are padded.
"""

from torch import nn
from torchvision.models.swin_transformer import SwinTransformer

from cnncli.models import ModelCard
from cnncli.models.common import check_input_size, check_stochastic_depth, trunc_normal, with_in_channels
from cnncli.models.convnext import a100

MIN_IMAGE_SIZE = 4  # the 4x4 patch embedding; the stages pad the rest


# the paper's table: width of stage 1 (doubled at each stage), blocks per stage, heads per stage
VARIANTS = {
    "swin_t": (96, [2, 2, 6, 2], [3, 6, 12, 24]),
    "swin_s": (96, [2, 2, 18, 2], [3, 6, 12, 24]),
    "swin_b": (128, [2, 2, 18, 2], [4, 8, 16, 32]),
}


def _swin(name: str, in_channels: int, num_classes: int, image_size: int, stochastic_depth_prob: float):
    check_stochastic_depth(stochastic_depth_prob)
    check_input_size(name, image_size, MIN_IMAGE_SIZE)
    width, depths, heads = VARIANTS[name]
    model = SwinTransformer(
        patch_size=[4, 4], embed_dim=width, depths=depths, num_heads=heads, window_size=[7, 7],
        stochastic_depth_prob=stochastic_depth_prob, num_classes=num_classes,
    )  # fmt: skip
    model.features[0][0] = with_in_channels(model.features[0][0], in_channels, init_weight=trunc_normal)
    return model


def swin_t(
    in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, stochastic_depth_prob: float = 0.2
) -> nn.Module:
    return _swin("swin_t", in_channels, num_classes, image_size, stochastic_depth_prob)


def swin_s(
    in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, stochastic_depth_prob: float = 0.3
) -> nn.Module:
    return _swin("swin_s", in_channels, num_classes, image_size, stochastic_depth_prob)


def swin_b(
    in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, stochastic_depth_prob: float = 0.5
) -> nn.Module:
    return _swin("swin_b", in_channels, num_classes, image_size, stochastic_depth_prob)


def _swin_card(name: str, params: float, macs: float, images_per_second: float, top1: float) -> ModelCard:
    return ModelCard(
        channels=3, image_size=224, num_classes=1000, min_size=MIN_IMAGE_SIZE, head=("head",),
        classifier=("norm", "head"), first_conv="features.0.0", paper_params=params, paper_macs=macs,
        paper_source="Liu et al. 2021, table 1", imagenet_weights=name, paper_speed=a100(images_per_second, top1),
    )  # fmt: skip


MODELS = {
    "swin_t": _swin_card("swin_t", 28e6, 4.5e9, 1325.6, 81.3),
    "swin_s": _swin_card("swin_s", 50e6, 8.7e9, 857.3, 83.0),
    "swin_b": _swin_card("swin_b", 88e6, 15.4e9, 662.8, 83.5),
}

"""Vision Transformers (Dosovitskiy et al., 2021): torchvision's vit_b_16 and vit_b_32, and vit_tiny for 32x32.

The image is cut into P x P patches; each patch, flattened, is mapped to a d-wide token (one linear map for
all patches: a P x P convolution of stride P), a learned class token is prepended, a learned position
embedding is added, and a stack of transformer encoder blocks lets every token attend to every other. The
class token's final state is the image's representation. ViT-B/16 at 224x224x3 (the paper's table 1:
Base, 12 layers, d = 768, MLP 3072, 12 heads):

    layer              units                                                 output     parameters
    patch embedding    768 @ 16x16, stride 16, then flattened: 196 tokens     196x768    (16*16*3)*768+768
    class token        one learned token, prepended                          197x768    768
    position embedding one learned vector per token, added                   197x768    197*768
    encoder block x12  LN; multi-head self-attention: q, k, v projections    197x768    3*(768*768+768)
                       (12 heads of 64), softmax(q k^T / 8) v, output proj.             768*768+768
                       LN; MLP 768 -> 3072 (GELU) -> 768                                 768*3072+3072
                       (residual connections around both halves)                         +3072*768+768, 2*(2*768)
    final LN           on every token                                        197x768    2*768
    head               the class token -> 1000                               1000       768*1000+1000

Multi-head attention holds 4d^2 + 4d parameters (the four d x d projections and their biases), the MLP
2dm + m + d; a block 7,087,872 at d = 768. Totals: ViT-B/16 86,567,656; ViT-B/32 (32x32 patches, 49
tokens) 88,224,232. Its cost grows with the square of the token count: (H/P * W/P + 1)^2 * d multiply-
accumulates for q k^T and as many for the weighted sum of the values, in each block.

The position embedding fixes the token grid: the network takes exactly `image_size` x `image_size`
inputs, a multiple of the patch size (one patch at least). ImageNet weights (`pretrained`) were trained at
224x224; at another size their position embeddings are interpolated to the new grid (bicubic, as
torchvision does for fine-tuning at another resolution).

`vit_tiny`: a ViT small enough to train from scratch on 32x32 images (CIFAR-10, the digits) on a CPU:
patch 4 (an 8x8 grid of 64 tokens: 4x4 patches keep a digit's strokes, 16x16 ones would leave 4 tokens),
7 layers, d = 256, 4 heads of 64, MLP 512: the ViT-Lite-7/4 of Hassani et al. 2021 ("Escaping the Big
Data Paradigm with Compact Transformers", 3.7M parameters, 91.4% on CIFAR-10 trained from scratch), the
smallest plain ViT published with a CIFAR-10 result from scratch. ViT-B/16 at 32x32 sees 4 tokens and
85M parameters for 50,000 images: it does not train from scratch on such data.
"""

from dataclasses import replace

from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from cnncli.errors import ConfigError
from cnncli.models import ModelCard
from cnncli.models.common import check_dropout, check_input_size, with_in_channels


def check_patches(name: str, image_size: int, patch_size: int) -> None:
    """A ViT cuts its input into whole patches: at least one, and no pixel left over."""
    check_input_size(name, image_size, patch_size)
    if image_size % patch_size:
        below, above = image_size // patch_size * patch_size, (image_size // patch_size + 1) * patch_size
        raise ConfigError(
            "image_size",
            f"{name} cuts its input into {patch_size}x{patch_size} patches: the side must be a multiple of "
            f"{patch_size}, got {image_size}; set data.image_size={below} or {above}",
        )


def _check_positive(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(key, f"must be an integer >= 1, got {value!r}")


def _vit(name: str, in_channels: int, num_classes: int, image_size: int, patch_size: int, num_layers: int,
         num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float, attention_dropout: float):  # fmt: skip
    for key, value in (("patch_size", patch_size), ("num_layers", num_layers), ("num_heads", num_heads),
                       ("hidden_dim", hidden_dim), ("mlp_dim", mlp_dim)):  # fmt: skip
        _check_positive(key, value)
    if hidden_dim % num_heads:
        raise ConfigError("num_heads", f"must divide hidden_dim={hidden_dim} (each head gets an equal share)")
    check_dropout(dropout)
    check_dropout(attention_dropout)
    check_patches(name, image_size, patch_size)
    model = VisionTransformer(
        image_size=image_size, patch_size=patch_size, num_layers=num_layers, num_heads=num_heads,
        hidden_dim=hidden_dim, mlp_dim=mlp_dim, dropout=dropout, attention_dropout=attention_dropout,
        num_classes=num_classes,
    )  # fmt: skip

    def lecun_normal(weight):  # how torchvision initializes the patch embedding: fan-in of a patch
        nn.init.trunc_normal_(weight, std=(1 / weight[0].numel()) ** 0.5)

    model.conv_proj = with_in_channels(model.conv_proj, in_channels, init_weight=lecun_normal)
    return model


def vit_b_16(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, dropout: float = 0.0,
             attention_dropout: float = 0.0) -> nn.Module:  # fmt: skip
    return _vit("vit_b_16", in_channels, num_classes, image_size, 16, 12, 12, 768, 3072, dropout, attention_dropout)


def vit_b_32(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, dropout: float = 0.0,
             attention_dropout: float = 0.0) -> nn.Module:  # fmt: skip
    return _vit("vit_b_32", in_channels, num_classes, image_size, 32, 12, 12, 768, 3072, dropout, attention_dropout)


def vit_tiny(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, patch_size: int = 4,
             num_layers: int = 7, num_heads: int = 4, hidden_dim: int = 256, mlp_dim: int = 512,
             dropout: float = 0.0, attention_dropout: float = 0.0) -> nn.Module:  # fmt: skip
    return _vit("vit_tiny", in_channels, num_classes, image_size, patch_size, num_layers, num_heads, hidden_dim,
                mlp_dim, dropout, attention_dropout)  # fmt: skip


def fit_position_embedding(state: dict, model: nn.Module) -> dict:
    """Starting weights made at another input size (ImageNet's 224x224) fitted to this network's token
    grid: their position embeddings interpolated (bicubic), as torchvision fine-tunes at other sizes."""
    key = "encoder.pos_embedding"
    if key not in state or state[key].shape == model.encoder.pos_embedding.shape:
        return state
    from torchvision.models.vision_transformer import interpolate_embeddings

    return interpolate_embeddings(model.image_size, model.patch_size, state)


def _card(min_size, **facts) -> ModelCard:
    return ModelCard(
        channels=3, image_size=224, num_classes=1000, min_size=min_size, head=("heads.head",),
        classifier=("encoder.ln", "heads"), first_conv="conv_proj", fit_weights=fit_position_embedding, **facts,
    )  # fmt: skip


MODELS = {
    "vit_b_16": _card(16, paper_params=86e6, paper_source="Dosovitskiy et al. 2021, table 1",
                      imagenet_weights="vit_b_16"),
    "vit_b_32": _card(32, imagenet_weights="vit_b_32"),
    # its native input is CIFAR-10's; the smallest is one patch
    "vit_tiny": replace(_card(lambda options: options.get("patch_size", 4), paper_params=3.7e6,
                              paper_source="Hassani et al. 2021, ViT-Lite-7/4"), image_size=32, num_classes=10),
}  # fmt: skip

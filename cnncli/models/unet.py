"""U-Net (Ronneberger, Fischer and Brox, 2015): semantic segmentation, one score map per class.

The paper's network (`variant: paper`, base_channels 64, depth 4), at its 572x572x1 input with 2 classes:

    contracting path                     output        expanding path                        output
    2 x (3x3 conv, ReLU)  64             568x568x64    2x2 up-conv 512, crop 64->56, concat   56x56x1024
    2x2 max pool, 2 x conv 128           280x280x128   2 x conv 512                          52x52x512
    2x2 max pool, 2 x conv 256           136x136x256   2x2 up-conv 256, crop 136->104, concat 104x104x512
    2x2 max pool, 2 x conv 512           64x64x512     2 x conv 256, up-conv 128, crop 280->200  ...
    2x2 max pool, 2 x conv 1024 (bottom) 28x28x1024    ... 2 x conv 64                       388x388x64
                                                       1x1 conv, one map per class           388x388x2

Valid (unpadded) 3x3 convolutions take 2 pixels off each side; a 2x2 up-convolution (a transposed
convolution, kernel 2, stride 2: out = (in - 1) x stride - 2 x pad + kernel = 2 x in) doubles the side;
the skip connection's map, larger, is cropped to its centre before the concatenation. So the output is
smaller than the input (572 -> 388) and every pooled side must be even: the paper variant takes inputs of
188 + 16k pixels at depth 4 (in general: the sides `valid_sizes` lists). The task crops the true mask to
the output's centre (cnncli/tasks/segmentation.py): the overlap-tile layout of the paper's Fig. 2.

`variant: same` pads the convolutions (output side = input side, no crop; the side must be a multiple of
2^depth), and `batch_norm: true` puts BatchNorm after each convolution (not in the paper; it trains the
small U-Nets of the course's labs several times faster). Parameters per 3x3 conv: 9 x in x out + out; per
up-conv: 4 x in x out + out. Total of the paper's network: 31,030,658 (1 input channel, 2 classes).
"""

import torch
from torch import nn

from cnncli.errors import ConfigError, check_choice
from cnncli.models import ModelCard
from cnncli.models.common import check_input_size

VARIANTS = ("paper", "same")


def double_conv(channels_in: int, channels_out: int, padding: int, batch_norm: bool) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by a ReLU (and BatchNorm before it with batch_norm)."""
    layers: list[nn.Module] = []
    for c_in in (channels_in, channels_out):
        layers.append(nn.Conv2d(c_in, channels_out, kernel_size=3, padding=padding, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels_out))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def center_crop(skip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre `height` x `width` of a skip connection's map (the paper's 'cropping')."""
    top, left = (skip.shape[-2] - height) // 2, (skip.shape[-1] - width) // 2
    return skip[..., top : top + height, left : left + width]


class Crop(nn.Module):
    """The centre of the skip connection's map, as large as the up-convolution's output (a module, so that
    `cnncli params` shows its sizes)."""

    def forward(self, skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return center_crop(skip, like.shape[-2], like.shape[-1])

    def size_note(self, input_shape: list[int], output_shape: list[int]) -> str:
        return f"crop {input_shape[-1]}->{output_shape[-1]}" if input_shape[-1] != output_shape[-1] else ""


class Down(nn.Sequential):
    """A step of the contracting path: 2x2 max pool, stride 2, then two 3x3 convolutions."""

    def __init__(self, channels_in: int, channels_out: int, padding: int, batch_norm: bool):
        super().__init__(nn.MaxPool2d(2), double_conv(channels_in, channels_out, padding, batch_norm))


class Up(nn.Module):
    """A step of the expanding path: a 2x2 up-convolution that halves the channels, the cropped map of the
    contracting path's level concatenated to it, then two 3x3 convolutions."""

    def __init__(self, channels_in: int, channels_out: int, padding: int, batch_norm: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(channels_in, channels_out, kernel_size=2, stride=2)
        self.crop = Crop()
        self.conv = double_conv(2 * channels_out, channels_out, padding, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.conv(torch.cat([self.crop(skip, x), x], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, base_channels: int, depth: int, padding: int, batch_norm):
        super().__init__()
        widths = [base_channels * 2**level for level in range(depth + 1)]  # 64, 128, 256, 512, 1024
        self.stem = double_conv(in_channels, widths[0], padding, batch_norm)
        self.down = nn.ModuleList(Down(widths[i], widths[i + 1], padding, batch_norm) for i in range(depth))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], padding, batch_norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)  # one score map per class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()  # the bottom of the U
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)


def output_size(size: int, depth: int, variant: str) -> int | None:
    """The output side for an input side, or None when a pooled side would be odd (or nothing is left)."""
    if variant == "same":
        return size if size % 2**depth == 0 else None
    for _ in range(depth):  # contracting: two valid convs (-4), then the pool halves an even side
        size -= 4
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= 4  # the bottom's two convs
    if size < 1:
        return None
    for _ in range(depth):  # expanding: up-conv doubles, two valid convs take 4 off
        size = 2 * size - 4
    return size if size >= 1 else None


def valid_sizes(depth: int, variant: str, up_to: int = 1024) -> list[int]:
    return [s for s in range(1, up_to + 1) if output_size(s, depth, variant) is not None]


def unet(
    in_channels: int = 1,
    num_classes: int = 2,
    image_size: int = 572,
    variant: str = "paper",
    base_channels: int = 64,
    depth: int = 4,
    batch_norm: bool = False,
) -> UNet:
    check_choice("variant", variant, VARIANTS)
    for key, value, low in (("base_channels", base_channels, 1), ("depth", depth, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")
    check_choice("batch_norm", batch_norm, (True, False))
    if output_size(image_size, depth, variant) is None:
        sizes = valid_sizes(depth, variant)
        if image_size < sizes[0]:
            check_input_size(f"unet (variant {variant}, depth {depth})", image_size, sizes[0])
        examples = ", ".join(str(s) for s in sizes[:4]) + (f", ... {sizes[-1]}" if len(sizes) > 4 else "")
        rule = f"a multiple of {2**depth}" if variant == "same" else f"one of {examples} ({sizes[1] - sizes[0]}k apart)"
        raise ConfigError(
            "image_size",
            f"unet variant={variant} depth={depth} takes an input side that is {rule}; got {image_size} "
            "(set data.image_size)",
        )
    padding = 1 if variant == "same" else 0
    return UNet(in_channels, num_classes, base_channels, depth, padding, batch_norm)


def _min_size(options: dict) -> int:
    return valid_sizes(options.get("depth", 4), options.get("variant", "paper"))[0]


MODELS = {
    "unet": ModelCard(
        channels=1, image_size=572, num_classes=2, min_size=_min_size, task="segmentation",
        head=("head",), classifier=("up", "head"), first_conv="stem.0",
        # the paper states no parameter count (31,030,658 is counted from its Fig. 1: tests/test_unet.py)
        paper_options={"variant": "paper", "base_channels": 64, "depth": 4, "batch_norm": False},
    ),
}  # fmt: skip

"""Pieces shared by the model builders."""

from collections.abc import Callable

from torch import nn

from cnncli.errors import ConfigError, check_choice

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def check_dropout(p: float) -> None:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < 1:
        raise ConfigError("dropout", f"must be a number in [0, 1), got {p!r}")


def check_stochastic_depth(p: float) -> None:
    """The chance a residual block is skipped in training (ConvNeXt, Swin)."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < 1:
        raise ConfigError("stochastic_depth_prob", f"must be a number in [0, 1), got {p!r}")


def trunc_normal(weight) -> None:
    """How torchvision initializes ConvNeXt's and Swin's layers: a truncated normal of std 0.02."""
    nn.init.trunc_normal_(weight, std=0.02)


def check_input_size(model_name: str, image_size: int, minimum: int) -> None:
    """Stop before training when the network would shrink the input to nothing."""
    if image_size < minimum:
        raise ConfigError(
            "image_size",
            f"{model_name} needs inputs of at least {minimum}x{minimum}, got {image_size}x{image_size}; "
            f"raise data.image_size (the images are resized to it)",
        )


def with_in_channels(conv: nn.Conv2d, in_channels: int, init_weight: Callable | None = None) -> nn.Conv2d:
    """The first convolution of a torchvision builder (made for RGB) redone for `in_channels`: same kernel,
    stride, padding and bias, fresh weights, initialized by `init_weight` as the builder initializes its
    convs (zero bias), or PyTorch's default when None. Returned unchanged for 3 channels, so the network
    stays exactly the torchvision one."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    if init_weight is not None:
        init_weight(new.weight)
        if new.bias is not None:
            nn.init.zeros_(new.bias)
    return new


def check_flag(key: str, value) -> None:
    """A yes/no option (batch_norm, aux_logits): a YAML true/false, not a string such as "no" (which is truthy)."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")


def kaiming_fan_out(weight) -> None:
    """How torchvision initializes the convs of VGG and ResNet (He et al. 2015: variance kept for ReLUs)."""
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")

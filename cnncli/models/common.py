"""Pieces shared by the model builders."""

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


def check_input_size(model_name: str, image_size: int, minimum: int) -> None:
    """Stop before training when the network would shrink the input to nothing."""
    if image_size < minimum:
        raise ConfigError(
            "image_size",
            f"{model_name} needs inputs of at least {minimum}x{minimum}, got {image_size}x{image_size}; "
            f"raise data.image_size (the images are resized to it)",
        )

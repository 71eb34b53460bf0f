"""The multilayer perceptron the CNNs are compared against (course example: 784-256-128-10 on Fashion-MNIST)."""

from torch import nn

from cnncli.errors import ConfigError
from cnncli.models import ModelCard
from cnncli.models.common import check_dropout, make_activation


def mlp(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    hidden: tuple[int, ...] = (256, 128),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """Flatten the image, then fully connected layers: (C*H*W) -> hidden... -> num_classes."""
    check_dropout(dropout)
    if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
        raise ConfigError("hidden", f"must be a list of positive layer widths, got {hidden!r}")
    widths = [in_channels * image_size * image_size, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Linear(width_in, width_out), make_activation(activation)]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


MODELS = {
    "mlp": ModelCard(channels=1, image_size=28, num_classes=10, min_size=1, head=("-1",), classifier=("1:",)),
}

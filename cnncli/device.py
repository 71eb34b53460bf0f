"""The device a command runs a network on (`device=auto|cpu|cuda|cuda:N|mps`), or one line saying why not."""

from cnncli.errors import ConfigError

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str, key: str = "device"):
    """`auto`: a CUDA GPU, else Apple's mps, else the CPU. A device torch cannot see is a ConfigError."""
    import torch

    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(key, f"{name!r} is not a device: {DEVICES}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(key, f"{name!r} is not a device: {DEVICES}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, f"{name}: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(key, f"{name}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(key, "mps: torch sees no Apple GPU here")
    return device

"""One image file -> the pixels a network sees, with PIL and numpy only: image folders (cnncli/data/folder.py),
`cnncli predict` from a checkpoint or an exported ONNX file (which must not need torch) and `cnncli viz`
all read images here, so a deployed model is fed exactly what training fed it.

PIL open -> (16-bit grayscale scaled to 8 bits) -> "L" (channels 1) or "RGB" (channels 3) -> resize to
size x size (`stretch`, or `center_crop`: shorter side to size, centre square; bilinear with antialiasing,
as torchvision's Resize on a PIL image) -> float32 [C, H, W] in [0, 1]. Normalization follows, as each caller needs it.
"""

import numpy as np
from PIL import Image

from cnncli.errors import UserError

# torchvision's IMG_EXTENSIONS (tests/test_data_folder.py checks they are the same), here so that listing image
# files does not import torchvision
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RESIZE = ("stretch", "center_crop")
MODES = {1: "L", 3: "RGB"}
# PIL's modes of 16-bit grayscale files (PNG, TIFF, PGM); "I" (32-bit) is how older Pillows open them
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UnreadableImage(UserError):
    """An image file PIL cannot read: one line naming the file, exit 1.

    Raised in a DataLoader worker, torch re-raises it in the main process as `UnreadableImage(text)` where
    text is "Caught UnreadableImage in DataLoader worker process 0. Original Traceback ..."; the constructor
    keeps only the original one-line message from that text."""

    def __init__(self, message: str):
        marker = f"{type(self).__module__}.{type(self).__qualname__}: "
        if "Original Traceback" in message:
            lines = [line for line in message.splitlines() if line.startswith(marker)]
            if lines:
                message = lines[-1][len(marker) :]
        super().__init__(message)


def load_image(path: str, mode: str, size: int) -> Image.Image:
    """The file as a PIL image in `mode`; a JPEG is decoded at the smallest scale that still covers size x size."""
    try:
        with Image.open(path) as image:
            image.draft(mode, (size, size))
            if image.mode in SIXTEEN_BIT:
                image = eight_bit(image)
            return image.convert(mode)
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError, ... by format)
        raise UnreadableImage(f"unreadable image file {path}: {_reason(e, path)}") from None


def eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image as 8-bit "L", its full range kept: round(value * 255 / 65535). (PIL's own
    convert("L") clips the values to 0-255, which turns a 16-bit picture nearly all white.)"""
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.rint(values * (255 / 65535)).astype(np.uint8), "L")


def check_header(path: str) -> None:
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as e:  # noqa: BLE001 (as above: PIL's errors depend on the format)
        raise UnreadableImage(f"unreadable image file {path}: {_reason(e, path)}") from None


def _reason(e: Exception, path: str) -> str:
    """PIL's message on one line, without the path it sometimes repeats."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text.replace(f" '{path}'", "").replace(f" {path}", "")


def fit(image: Image.Image, size: int, resize: str) -> Image.Image:
    """`image` resized to size x size: stretched, or its shorter side to `size` then the centre square
    (torchvision's Resize(size) + CenterCrop(size) arithmetic)."""
    if resize == "stretch":
        return image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR)
    width, height = image.size
    short, long = min(width, height), max(width, height)
    scaled = (size, int(size * long / short)) if width <= height else (int(size * long / short), size)
    if scaled != image.size:
        image = image.resize(scaled, Image.BILINEAR)
    left, top = int(round((image.width - size) / 2.0)), int(round((image.height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def pixels(image: Image.Image) -> np.ndarray:
    """float32 [C, H, W] in [0, 1] (as torchvision's PILToTensor + ToDtype(float32, scale=True))."""
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array).astype(np.float32) * np.float32(1 / 255)


def read(path: str, channels: int, size: int, resize: str) -> np.ndarray:
    """The pixels of one file as the network sees them before normalization."""
    return pixels(fit(load_image(path, MODES[channels], size), size, resize))

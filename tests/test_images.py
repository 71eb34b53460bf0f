"""cnncli/data/images.py: one image file -> the pixels a network sees, for image folders, predict and viz."""

import numpy as np
import pytest
from conftest import cnncli_here
from PIL import Image
from sklearn.datasets import load_digits

from cnncli.data import images


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> list[tuple]:
    """Digits of each class as 8-bit PNGs and the same pictures as 16-bit grayscale PNGs (value x 257,
    which PIL opens in mode I;16): the file pairs and the 16-bit values."""
    folder = tmp_path_factory.mktemp("sixteen")
    data = load_digits()
    pairs = []
    for n in range(10):
        pixels = np.kron((data.images[n] * 255 / 16).round().astype(np.uint8), np.ones((4, 4), np.uint8))
        eight, sixteen = folder / f"{n}-8bit.png", folder / f"{n}-16bit.png"
        Image.fromarray(pixels).save(eight)
        Image.fromarray(pixels.astype(np.uint16) * 257).save(sixteen)
        pairs.append((eight, sixteen))
    return pairs


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(digit_files):
    eight, sixteen = digit_files[2]
    assert Image.open(sixteen).mode == "I;16"
    for channels in (1, 3):
        for resize in images.RESIZE:
            expected = images.read(str(eight), channels, 32, resize)
            assert np.array_equal(images.read(str(sixteen), channels, 32, resize), expected), (channels, resize)
    # between the 8-bit levels: value * 255 / 65535, rounded
    odd = sixteen.with_name("levels.png")
    Image.fromarray(np.array([[0, 128, 129, 32767, 32896, 65278, 65535]], np.uint16)).save(odd)
    assert (images.read(str(odd), 1, 7, "stretch")[0, 0] * 255).round().tolist() == [0, 0, 1, 127, 128, 254, 255]


def test_predict_gives_a_16_bit_file_what_it_gives_the_8_bit_one(short_run, digit_files, tmp_path):
    """As it was found: three '2' digits saved as I;16 were all predicted '8' (clipped to a white square)."""
    ckpt = short_run / "checkpoints" / "best.ckpt"

    def predictions(files) -> list[str]:
        output = tmp_path / "preds.csv"
        inputs = ",".join(map(str, files))
        result = cnncli_here("predict", f"ckpt_path={ckpt}", f"inputs=[{inputs}]", f"output={output}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return [line.split(",", 1)[1] for line in output.read_text().splitlines()[1:]]  # rank, class, probability

    assert predictions(s for _, s in digit_files) == predictions(e for e, _ in digit_files)

"""U-Net (cnncli/models/unet.py) and the course's transposed-convolution exercises, worked by nn.ConvTranspose2d."""

import pytest
import torch
from torch import nn

from cnncli.errors import ConfigError
from cnncli.models.unet import output_size, unet, valid_sizes


def transposed(x: list[list[float]], kernel: list[list[float]], stride: int) -> list[list[float]]:
    conv = nn.ConvTranspose2d(1, 1, kernel_size=len(kernel), stride=stride, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(kernel, dtype=torch.float32)[None, None])
        return conv(torch.tensor(x, dtype=torch.float32)[None, None])[0, 0].tolist()


def test_exercise_1_a_2x2_kernel_of_ones_at_stride_2_copies_each_pixel_to_a_2x2_block():
    assert transposed([[0, 1], [2, 3]], [[1, 1], [1, 1]], stride=2) == [
        [0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3],
    ]  # fmt: skip


def test_exercise_2_each_input_pixel_adds_the_kernel_scaled_by_it():
    kernel = [[1, 4, 1], [1, 4, 3], [3, 3, 1]]
    expected = [[2, 9, 6, 1], [6, 29, 30, 7], [10, 29, 33, 13], [12, 24, 16, 4]]
    assert transposed([[2, 1], [4, 4]], kernel, stride=1) == expected
    # the hand method: the output is the sum over input pixels of pixel x kernel, placed at the pixel
    by_hand = torch.zeros(4, 4)
    for (i, j), value in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [2, 1, 4, 4]):
        by_hand[i : i + 3, j : j + 3] += value * torch.tensor(kernel, dtype=torch.float32)
    assert by_hand.tolist() == expected
    # ConvTranspose2d places the kernel as it is, unflipped, as the hand method does: flipped, it differs
    assert transposed([[2, 1], [4, 4]], torch.tensor(kernel).flip(0, 1).tolist(), stride=1) != expected


def test_output_side_is_in_minus_1_times_stride_minus_2_pad_plus_kernel():
    for side, stride, pad, kernel in ((28, 2, 0, 2), (5, 3, 1, 4), (7, 1, 0, 3)):
        conv = nn.ConvTranspose2d(1, 1, kernel, stride=stride, padding=pad)
        assert conv(torch.zeros(1, 1, side, side)).shape[-1] == (side - 1) * stride - 2 * pad + kernel


def test_the_papers_network_maps_572_to_388_with_its_31_million_parameters():
    with torch.device("meta"):
        model = unet()  # the builder's defaults are the paper's: 1 channel, 2 classes, valid convolutions
        assert model(torch.empty(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    assert sum(p.numel() for p in model.parameters()) == 31_030_658
    assert output_size(572, 4, "paper") == 388
    small = unet(base_channels=2)  # the output size does not depend on the width: run it for real
    assert small(torch.zeros(1, 1, 188, 188)).shape == (1, 2, 4, 4)


def test_the_same_variant_keeps_the_size_and_both_refuse_sizes_they_cannot_take():
    model = unet(in_channels=3, num_classes=4, image_size=48, variant="same", base_channels=4, depth=3)
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 4, 48, 48)
    assert valid_sizes(4, "paper")[:3] == [188, 204, 220]
    with pytest.raises(ConfigError, match="a multiple of 8; got 50"):
        unet(image_size=50, variant="same", depth=3)
    with pytest.raises(ConfigError, match="one of 188, 204, 220, 236, ... .*got 200"):
        unet(image_size=200)
    with pytest.raises(ConfigError, match="needs inputs of at least 188x188"):
        unet(image_size=64)
    with pytest.raises(ConfigError, match="variant"):
        unet(variant="valid")
    with pytest.raises(ConfigError, match="depth"):
        unet(depth=0)


def test_cnncli_train_refuses_a_size_the_unet_cannot_take_in_one_line(tmp_path):
    from conftest import cnncli_here

    for options, message in (
        (["data.image_size=50"], "unet variant=same depth=3 takes an input side that is a multiple of 8; got 50"),
        (["model.variant=paper", "data.image_size=200"], "unet variant=paper depth=3 takes an input side that is "
         "one of 92, 100, 108, 116, ... 1020 (8k apart); got 200"),
    ):  # fmt: skip
        result = cnncli_here("train", "model=unet", *options, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr == f"error: model.image_size: {message} (set data.image_size)\n"
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_batch_norm_replaces_the_convolutions_bias():
    plain, normed = (
        unet(variant="same", image_size=64, base_channels=4),
        unet(variant="same", image_size=64, base_channels=4, batch_norm=True),
    )
    assert any(isinstance(m, nn.BatchNorm2d) for m in normed.modules())
    assert all(m.bias is None for m in normed.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


def test_the_paper_variant_trains_on_the_centre_of_its_masks():
    """Its output (4x4 for a 188x188 input) is smaller than the mask: the loss and the metrics score the
    mask's centre, cropped to the output (the overlap-tile layout)."""
    from cnncli.optim import Optimization
    from cnncli.tasks.segmentation import SegmentationModule

    torch.manual_seed(0)
    model = unet(in_channels=1, num_classes=2, image_size=188, base_channels=2)
    module = SegmentationModule(model, 2, Optimization(lambda params: torch.optim.Adam(params), None))
    masks = torch.zeros(2, 188, 188, dtype=torch.long)
    masks[:, 92:94, 92:94] = 1  # in the centre, which the 4x4 output covers
    loss = module._step((torch.randn(2, 1, 188, 188), masks), "train")
    loss.backward()
    assert torch.isfinite(loss) and model.head.weight.grad.abs().sum() > 0
    totals = module.totals["train"]
    totals.flush()
    confusion = totals.sums[:4].view(2, 2)
    assert confusion.sum() == 2 * 4 * 4 and confusion[1].sum() == 2 * 2 * 2  # the centre 4x4 pixels of each mask

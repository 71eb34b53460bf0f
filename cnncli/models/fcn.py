"""FCN and DeepLabV3 (torchvision's `fcn_resnet50`, `deeplabv3_resnet50`): the strong baselines beside U-Net.

Both put a segmentation head on a ResNet-50 whose last two stages are dilated instead of strided (output
stride 8: a 520x520 input gives 65x65 feature maps), then upsample the class scores bilinearly to the input:

    part         FCN (Long et al. 2015, on a ResNet-50)        DeepLabV3 (Chen et al. 2017)
    backbone     ResNet-50, stages 3-4 dilated 2 and 4         the same
    head         3x3 conv 512, BN, ReLU, dropout, 1x1 conv K    ASPP (1x1 conv, 3x3 convs at dilation 12,
                                                               24, 36, image pooling), 3x3 conv 256, 1x1 conv K
    output       bilinear upsampling of the K score maps to the input size

Totals at 21 classes: 32,957,013 (FCN) and 39,638,869 (DeepLabV3), without torchvision's auxiliary head
(cnncli trains the main one only). `pretrained: true` loads torchvision's COCO weights trained on the 20 VOC
classes (COCO_WITH_VOC_LABELS_V1) into every layer but the final 1x1 conv, made afresh for the data's
classes: the decoder transfers too, which ImageNet backbone weights alone would not give. A 1-channel input
gets the first convolution's RGB filters summed (cnncli/models/transfer.py).
"""

import torch.nn.functional as F
import torchvision
from torch import nn

from cnncli.models import ModelCard
from cnncli.models.common import check_input_size, with_in_channels

MIN_IMAGE_SIZE = 32  # output stride 8, and DeepLab's image pooling: a few feature pixels at least


class SegmentationNet(nn.Module):
    """torchvision's FCN / DeepLabV3 with its module names (its weights load as they are), the `out` score
    maps as one tensor [N, K, H, W] at the input's size, as cnncli's segmentation task takes them (torchvision's
    own forward returns a dict)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.classifier = model.backbone, model.classifier
        self.aux_classifier = None  # torchvision's auxiliary head: not built (its weights are skipped on load)

    def forward(self, x):
        scores = self.classifier(self.backbone(x)["out"])
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _build(name: str, in_channels: int, num_classes: int, image_size: int) -> SegmentationNet:
    check_input_size(name, image_size, MIN_IMAGE_SIZE)
    model = getattr(torchvision.models.segmentation, name)(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
    )
    model.backbone.conv1 = with_in_channels(model.backbone.conv1, in_channels)
    return SegmentationNet(model)


def fcn_resnet50(in_channels: int = 3, num_classes: int = 21, image_size: int = 520) -> SegmentationNet:
    return _build("fcn_resnet50", in_channels, num_classes, image_size)


def deeplabv3_resnet50(in_channels: int = 3, num_classes: int = 21, image_size: int = 520) -> SegmentationNet:
    return _build("deeplabv3_resnet50", in_channels, num_classes, image_size)


def _card(name: str) -> ModelCard:
    return ModelCard(
        channels=3, image_size=520, num_classes=21, min_size=MIN_IMAGE_SIZE, task="segmentation",
        head=("classifier.4",), classifier=("classifier",), first_conv="backbone.conv1", imagenet_weights=name,
    )  # fmt: skip


MODELS = {"fcn_resnet50": _card("fcn_resnet50"), "deeplabv3_resnet50": _card("deeplabv3_resnet50")}

"""The public segmentation data sets, through torchvision's classes, loaded whole into memory at the run's
image size (cnncli/data/masks.py): `pets` (OxfordIIITPet, target_types="segmentation") and `voc`
(VOCSegmentation 2012). Files in place are used as they are; missing ones are downloaded by torchvision when
`data.download=true`, and offline the run stops with one line naming the folder and the URLs.

pets: the trimaps mark each pixel 1 pet, 2 background, 3 border (the uncertain rim of the pet); here the
classes are 0 background, 1 pet, and the border is ignore_index (255): no loss, no metric, as the trimap
means it. The trainval list is the training split (val carved from it, at random by split_seed), test the test.
voc: the 21 classes of PASCAL VOC 2012 (background + 20 objects), 255 void as the masks store it; train is the
training split (val carved from it), VOC's val (the last split with public masks) the test.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnncli.data.common import check_fraction
from cnncli.data.images import MODES, fit
from cnncli.data.masks import InMemorySegmentationData
from cnncli.data.torchvision_data import DOWNLOAD_ERRORS, READ_ERRORS, _reason
from cnncli.errors import UserError

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


class TorchvisionSegmentation(InMemorySegmentationData):
    """A torchvision segmentation set: a subclass names its `title`, `folder()`, the files torchvision reads
    there (`expected`), `source` (for the offline message), how to make torchvision's data set of a split
    (`dataset`) and maps a mask's values (`ids`)."""

    title = ""
    source = ""
    expected: tuple[str, ...] = ()  # relative to folder()
    split_names = {"train": "", "test": ""}  # cnncli's split -> torchvision's

    def __init__(self, root: str = "data", download: bool = True, val_fraction: float = 0.1, split_seed: int = 0,
                 class_names: list[str] | None = None, **common):  # fmt: skip
        super().__init__(class_names=class_names or self.default_names, **common)
        self.root, self.download = Path(root).expanduser(), bool(download)
        self.val_fraction, self.split_seed = check_fraction("val_fraction", val_fraction), split_seed

    def folder(self) -> Path:
        raise NotImplementedError

    def dataset(self, split: str, download: bool):
        raise NotImplementedError

    def ids(self, mask: np.ndarray) -> np.ndarray:
        return mask

    def missing(self) -> list[str]:
        """The files and folders of `expected` not in `folder()`."""
        return [name for name in self.expected if not (self.folder() / name).exists()]

    def not_found(self, missing: list[str], why: str) -> str:
        return (
            f"{self.title} files not found in {self.folder().resolve()}: {', '.join(missing)} ({why}). "
            f"{self.source}; or set data.root to the folder that holds them"
        )

    def ensure_files(self) -> None:
        """As TorchvisionData.ensure_files: files in place are used; missing ones downloaded, or one line."""
        missing = self.missing()
        if not missing:
            return
        if not self.download:
            raise UserError(self.not_found(missing, "data.download=false"))
        try:
            self.dataset(self.split_names["train"], download=True)  # the archives hold every split
        except DOWNLOAD_ERRORS as e:
            raise UserError(self.not_found(missing, f"download failed: {_reason(e)}")) from None
        if self.missing():
            raise UserError(self.not_found(self.missing(), "still missing after the download"))

    def _open(self, split: str):
        try:
            return self.dataset(split, download=False)
        except READ_ERRORS as e:  # a damaged split list
            raise UserError(f"{self.folder().resolve()}: cannot read the {self.title} {split} list: {e}") from None

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        self.ensure_files()
        loaded = {split: self._read(self._open(theirs), split) for split, theirs in self.split_names.items()}
        images, masks = loaded["train"]
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        size = max(1, round(self.val_fraction * len(images)))
        val, train = order[:size].sort().values, order[size:].sort().values
        return {"train": (images[train], masks[train]), "val": (images[val], masks[val]), "test": loaded["test"]}

    def _read(self, dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        size, mode = self.image_size, MODES[self.channels]
        images = np.empty((len(dataset), self.channels, size, size), np.uint8)
        masks = np.empty((len(dataset), size, size), np.uint8)
        for i in range(len(dataset)):
            try:
                image, mask = dataset[i]
            except READ_ERRORS as e:
                raise UserError(f"{self.folder().resolve()}: cannot read {self.title} {split} item {i}: {e}") from None
            array = np.asarray(fit(image.convert(mode), size, "stretch"), np.uint8)
            images[i] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            resized = mask.resize((size, size), Image.NEAREST)
            masks[i] = self.ids(np.asarray(resized, np.uint8))
        return torch.from_numpy(images), torch.from_numpy(masks)


class PetsData(TorchvisionSegmentation):
    title = "Oxford-IIIT Pet"
    default_names = ["background", "pet"]
    split_names = {"train": "trainval", "test": "test"}
    expected = ("images", "annotations/trimaps", "annotations/trainval.txt", "annotations/test.txt")
    source = (
        "Fetch https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz and annotations.tar.gz (the "
        "URLs torchvision downloads) and unpack both into <root>/oxford-iiit-pet/"
    )

    def folder(self) -> Path:
        return self.root / "oxford-iiit-pet"

    def dataset(self, split: str, download: bool):
        from torchvision.datasets import OxfordIIITPet

        return OxfordIIITPet(str(self.root), split=split, target_types="segmentation", download=download)

    def ids(self, trimap: np.ndarray) -> np.ndarray:
        """Trimap 1 pet, 2 background, 3 border -> 1 pet, 0 background, ignore_index."""
        return np.select([trimap == 1, trimap == 2], [1, 0], default=self.ignore_index).astype(np.uint8)


class VOCData(TorchvisionSegmentation):
    title = "PASCAL VOC 2012"
    default_names = VOC_CLASSES
    split_names = {"train": "train", "test": "val"}
    expected = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt")
    source = (
        "Fetch https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar (the URL torchvision "
        "downloads) and unpack it into <root>/ (it makes VOCdevkit/VOC2012/)"
    )

    def folder(self) -> Path:
        return self.root / "VOCdevkit" / "VOC2012"

    def dataset(self, split: str, download: bool):
        from torchvision.datasets import VOCSegmentation

        return VOCSegmentation(str(self.root), year="2012", image_set=split, download=download)

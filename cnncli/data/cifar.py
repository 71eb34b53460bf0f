"""CIFAR-10 and CIFAR-100 (32x32x3; 10 and 100 classes; Krizhevsky 2009) through torchvision's data set
classes, held in memory as one uint8 tensor.

Files, in torchvision's own layout under `data.root`: `<root>/cifar-10-batches-py/` with `data_batch_1` ..
`data_batch_5`, `test_batch`, `batches.meta`; `<root>/cifar-100-python/` with `train`, `test`, `meta` (the
100 fine labels are used). The archive itself (`<root>/cifar-10-python.tar.gz`, `cifar-100-python.tar.gz`)
is unpacked in place when the folder is missing.

torchvision checks the md5 of every CIFAR file before it reads it, and calls a file whose sum differs
"corrupted" (it would then download the set again). Here files already in place are used as they are; md5
is verified by torchvision's download only: the files are read by torchvision's own CIFAR10/CIFAR100 code,
through a subclass whose md5 sums are blank (`files_in_place`). Downloads and the offline message:
cnncli/data/mnist.py (TorchvisionData).
"""

from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.utils import extract_archive

from cnncli.data.torchvision_data import TorchvisionData, files_in_place


def _without_md5(cls: type) -> type:
    return files_in_place(
        cls,
        train_list=[[name, None] for name, _ in cls.train_list],
        test_list=[[name, None] for name, _ in cls.test_list],
        meta={**cls.meta, "md5": None},
    )


class CIFARData(TorchvisionData):
    """The CIFAR layout: pickled batches in `<root>/<base_folder>/`. A subclass names `dataset_class`
    (torchvision's class: file names, URL, download) and `in_place_class` (the same, reading files in place
    as they are)."""

    def folder(self) -> Path:
        return self.root / self.dataset_class.base_folder

    def expected(self) -> list[str]:
        names = [name for name, _ in self.dataset_class.train_list + self.dataset_class.test_list]
        return names + [self.dataset_class.meta["filename"]]

    def source(self) -> str:
        return (
            f"Fetch {self.dataset_class.url} and unpack it in {self.root.resolve()} (or put the archive there "
            f"as {self.dataset_class.filename}: it is unpacked in place)"
        )

    def unpack(self) -> None:
        archive = self.root / self.dataset_class.filename
        if self.missing() and archive.is_file():
            extract_archive(str(archive), str(self.root))

    def fetch(self) -> None:
        # torchvision's download verifies the archive's md5; it then loads the train split (discarded here)
        self.dataset_class(str(self.root), train=True, download=True)

    def read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        data = self.in_place_class(str(self.root), train=train, download=False)
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()  # torchvision's HWC -> CHW
        return images, torch.as_tensor(data.targets, dtype=torch.long), list(data.classes)


class CIFAR10Data(CIFARData):
    """CIFAR-10: 50,000 train and 10,000 test images, 10 classes (airplane .. truck)."""

    dataset_class, title = datasets.CIFAR10, "CIFAR-10"
    in_place_class = _without_md5(datasets.CIFAR10)


class CIFAR100Data(CIFARData):
    """CIFAR-100: 50,000 train and 10,000 test images, 100 fine classes (apple .. worm)."""

    dataset_class, title = datasets.CIFAR100, "CIFAR-100"
    in_place_class = _without_md5(datasets.CIFAR100)

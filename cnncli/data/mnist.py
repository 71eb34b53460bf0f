"""MNIST, Fashion-MNIST and Kuzushiji-MNIST (28x28x1, 10 classes) through torchvision's data set classes,
held in memory as one uint8 tensor (cnncli/data/torchvision_data.py: what every torchvision-backed set shares).

Files, in torchvision's own layout under `data.root` (default `data`, relative to the working directory):
`<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte` (each gzipped, `.gz`, or not; a `.gz` alone
is unpacked beside itself, as torchvision's download does), and the same under `<root>/FashionMNIST/raw/`,
`<root>/KMNIST/raw/`.

These sets have a train and a test split: a stratified `val_fraction` of train (fixed by `split_seed`) is
carved out as the validation split.
"""

from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.utils import extract_archive

from cnncli.data.torchvision_data import TorchvisionData


class MNISTFamilyData(TorchvisionData):
    """The MNIST layout: four IDX files (gzipped or not) under `<root>/<class name>/raw/`."""

    dataset_class = datasets.MNIST

    def folder(self) -> Path:
        return self.root / self.dataset_class.__name__ / "raw"  # torchvision's MNIST.raw_folder

    def expected(self) -> list[str]:
        return [filename.removesuffix(".gz") for filename, _ in self.dataset_class.resources]

    def source(self) -> str:
        files = ", ".join(filename for filename, _ in self.dataset_class.resources)
        mirror = self.dataset_class.mirrors[0]
        return (
            f"Fetch {files} from {mirror} (e.g. {mirror}{self.dataset_class.resources[0][0]}) "
            f"and put them, gzipped or not, in {self.folder().resolve()}"
        )

    def unpack(self) -> None:
        for name in self.missing():
            archive = self.folder() / f"{name}.gz"
            if archive.is_file():
                extract_archive(str(archive))  # writes `name` beside it, as torchvision's download does

    def fetch(self) -> None:
        self.dataset_class(str(self.root), train=True, download=True)  # downloads both splits' files

    def read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        # torchvision checks only that the unpacked files exist: files in place are read as they are
        data = self.dataset_class(str(self.root), train=train, download=False)
        return data.data.unsqueeze(1).contiguous(), data.targets.long(), self.class_names_of(data)

    def class_names_of(self, data) -> list[str]:
        return list(data.classes)


class MNISTData(MNISTFamilyData):
    """MNIST (LeCun et al. 1998): handwritten digits, 60,000 train and 10,000 test images."""

    dataset_class, title = datasets.MNIST, "MNIST"

    def class_names_of(self, data) -> list[str]:
        return [name.split(" - ")[0] for name in data.classes]  # "0 - zero" -> "0"


class FashionMNISTData(MNISTFamilyData):
    """Fashion-MNIST (Xiao et al. 2017): Zalando article images, 60,000 train and 10,000 test."""

    dataset_class, title = datasets.FashionMNIST, "Fashion-MNIST"


class KMNISTData(MNISTFamilyData):
    """Kuzushiji-MNIST (Clanuwat et al. 2018): cursive hiragana, 60,000 train and 10,000 test."""

    dataset_class, title = datasets.KMNIST, "Kuzushiji-MNIST"

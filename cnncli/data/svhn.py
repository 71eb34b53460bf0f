"""SVHN, the Street View House Numbers (Netzer et al. 2011; 32x32x3, 10 classes; 73,257 train and 26,032
test images; the `extra` set is not used) through torchvision's SVHN class, held in memory as one uint8 tensor.

Files, in torchvision's own layout: `<root>/train_32x32.mat` and `<root>/test_32x32.mat` (MATLAB files,
read with scipy). The original files label the digit 0 as 10; torchvision's loader maps it to 0, so the
classes are "0" .. "9" in order.

torchvision checks the md5 of the .mat file before it reads it; here files already in place are used as
they are, md5 is verified by torchvision's download only (a subclass with blank md5 sums reads them through
torchvision's own code). Downloads and the offline message: cnncli/data/mnist.py (TorchvisionData).
"""

import torch
from torchvision import datasets

from cnncli.data.torchvision_data import TorchvisionData, files_in_place

SPLITS = {"train": True, "test": False}

InPlaceSVHN = files_in_place(
    datasets.SVHN, split_list={split: [url, name, None] for split, (url, name, _) in datasets.SVHN.split_list.items()}
)


class SVHNData(TorchvisionData):
    title = "SVHN"

    def expected(self) -> list[str]:
        return [datasets.SVHN.split_list[split][1] for split in SPLITS]

    def source(self) -> str:
        urls = " and ".join(datasets.SVHN.split_list[split][0] for split in SPLITS)
        return f"Fetch {urls} and put them in {self.root.resolve()}"

    def fetch(self) -> None:
        for split in SPLITS:
            if not (self.root / datasets.SVHN.split_list[split][1]).is_file():
                datasets.SVHN(str(self.root), split=split, download=True)  # verifies the md5 of what it fetched

    def read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        data = InPlaceSVHN(str(self.root), split="train" if train else "test", download=False)
        images = torch.from_numpy(data.data).contiguous()  # torchvision already made it [N, 3, 32, 32]
        return images, torch.from_numpy(data.labels).long(), [str(digit) for digit in range(10)]

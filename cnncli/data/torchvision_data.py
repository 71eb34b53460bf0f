"""What every data set read through torchvision's data set classes shares (MNIST family: mnist.py; CIFAR:
cifar.py; SVHN: svhn.py): files in place or downloaded, one-line errors, the whole set in memory.

Downloads: when files are missing and `data.download=true`, torchvision's own download fetches them (it
verifies their md5). When that fails (offline) or `data.download=false`, the run stops with one line naming
the files, the folder they belong in and the URL to fetch them from. Files already in place are used as
they are, never downloaded again; their md5 is verified by torchvision's download only.
"""

import http.client
from pathlib import Path

import torch

from cnncli.data.common import check_fraction, check_labels, stratified_split
from cnncli.data.memory import InMemoryImageData
from cnncli.errors import UserError

Split = tuple[torch.Tensor, torch.Tensor]

# What a failed download raises: urllib's URLError and socket errors are OSErrors; torchvision raises
# RuntimeError for a bad checksum or after every mirror failed.
DOWNLOAD_ERRORS = (OSError, RuntimeError, http.client.HTTPException)
# What parsing a damaged or foreign file raises inside torchvision's loaders.
READ_ERRORS = (AssertionError, ValueError, TypeError, KeyError, IndexError, EOFError, OSError, RuntimeError)


def files_in_place(cls: type, **attributes) -> type:
    """`cls` with its md5 sums blanked (`attributes`): torchvision then accepts files already in place as
    they are, and its own loading code reads them. Same class name, so folder names derived from it hold."""
    doc = "Files already in place are used as they are; md5 is verified by torchvision's download only."
    return type(cls.__name__, (cls,), {"__doc__": doc, "__module__": __name__, **attributes})


def _reason(error: Exception) -> str:
    """The last line of a (possibly multi-line, per-mirror) download error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class TorchvisionData(InMemoryImageData):
    """A torchvision data set with train and test splits, loaded whole into memory. A subclass names its
    `title`, the files it needs (`expected`), where they come from (`source`), and reads one split (`read`).
    `class_names: null` in the config takes the data set's own names (e.g. CIFAR's meta file)."""

    title = ""  # e.g. "MNIST", for messages

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        class_names: list[str] | None = None,
        **common,
    ):
        super().__init__(class_names=class_names or [], **common)
        self.root = Path(root).expanduser()
        self.download = bool(download)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.split_seed = split_seed

    # -- what a subclass provides ------------------------------------------------------------------------
    def folder(self) -> Path:
        """Where the files live."""
        return self.root

    def expected(self) -> list[str]:
        """File names the data set needs in `folder()`."""
        raise NotImplementedError

    def source(self) -> str:
        """What to fetch and where to put it, for the not-found message."""
        raise NotImplementedError

    def unpack(self) -> None:
        """Unpack archives already in place (no download)."""

    def fetch(self) -> None:
        """torchvision's own download."""
        raise NotImplementedError

    def read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """uint8 images [N, C, H, W], int64 labels [N] and the data set's class names, through torchvision."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------
    def missing(self) -> list[str]:
        return [name for name in self.expected() if not (self.folder() / name).is_file()]

    def not_found(self, missing: list[str], why: str) -> str:
        return (
            f"{self.title} files not found in {self.folder().resolve()}: {', '.join(missing)} ({why}). "
            f"{self.source()}; or set data.root to the folder that holds them"
        )

    def ensure_files(self) -> None:
        try:
            self.unpack()
        except (OSError, RuntimeError) as e:
            where = self.folder().resolve()
            raise UserError(f"{where}: cannot unpack the {self.title} archive in place: {e}") from None
        missing = self.missing()
        if not missing:
            return
        if not self.download:
            raise UserError(self.not_found(missing, "data.download=false"))
        try:
            self.fetch()
        except DOWNLOAD_ERRORS as e:
            raise UserError(self.not_found(missing, f"download failed: {_reason(e)}")) from None
        if self.missing():
            raise UserError(self.not_found(self.missing(), "still missing after the download"))

    def load(self) -> dict[str, Split]:
        self.ensure_files()
        splits = {}
        for split, train in (("train", True), ("test", False)):
            try:
                images, labels, classes = self.read(train)
            except READ_ERRORS as e:
                raise UserError(f"{self.folder().resolve()}: cannot read the {self.title} {split} files: {e}") from None
            where = f"{self.folder().resolve()} ({self.title} {split} split)"
            check_labels(labels, self.num_classes, where)
            splits[split] = images, labels
        if not self.class_names:  # class_names: null in the config: the data set's own
            self.class_names = [str(name) for name in classes]
        (images, labels) = splits["train"]
        kept, val = stratified_split(labels, self.val_fraction, self.split_seed)
        return {"train": (images[kept], labels[kept]), "val": (images[val], labels[val]), "test": splits["test"]}

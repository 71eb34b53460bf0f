"""The in-memory data sets: MNIST family, CIFAR-10/100, SVHN (through torchvision's classes), HDF5, fake.

Tests write tiny files in each set's real format (IDX, gzipped or not; CIFAR's pickled batches; SVHN's .mat;
the course's .h5) under tmp_path, in torchvision's layout, and load them through the real code path. The
network is blocked in every test: in-process by replacing urllib.request.urlopen, in CLI subprocesses by
pointing the proxy variables at a closed local port. Files in place must be used without any download.
"""

import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import QUIET, cnncli, train
from formats import write_cifar, write_idx, write_mnist, write_signs, write_svhn
from omegaconf import OmegaConf
from torchvision import datasets

from cnncli import config_dir
from cnncli.checkpoint import load_file as load_checkpoint
from cnncli.data.cifar import CIFAR10Data, CIFAR100Data
from cnncli.data.fake import FakeData
from cnncli.data.hdf5 import HDF5Data
from cnncli.data.mnist import FashionMNISTData, KMNISTData, MNISTData
from cnncli.data.svhn import SVHNData
from cnncli.errors import ConfigError, UserError

CONFIGS = ["mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn", "hdf5", "fake"]
# Every request goes to a closed local port: a download attempt fails at once instead of reaching out.
OFFLINE = {key: "http://127.0.0.1:9" for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
OFFLINE |= {"no_proxy": "", "NO_PROXY": ""}


@pytest.fixture
def no_network(monkeypatch):
    """urllib.request.urlopen fails like an offline machine, and every attempt is counted."""
    calls = []

    def urlopen(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("network blocked by the test")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def common(config: str, **overrides) -> dict:
    """The options a data config passes to its module, with overrides."""
    options = OmegaConf.to_container(OmegaConf.load(config_dir() / "data" / f"{config}.yaml"))
    options.pop("_target_")
    return options | overrides


# -- torchvision sets, in process -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "module, config, folder, gz",
    [
        (MNISTData, "mnist", "MNIST", True),
        (FashionMNISTData, "fashion_mnist", "FashionMNIST", False),
        (KMNISTData, "kmnist", "KMNIST", True),
    ],
)
def test_mnist_family_reads_idx_files_in_place_without_network(tmp_path, no_network, module, config, folder, gz):
    arrays = write_mnist(tmp_path, folder, gz)
    data = module(**common(config, root=str(tmp_path)))
    data.setup("fit")
    assert no_network == []
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (90, 10, 20)  # stratified 10% of 100: one per class
    assert train.images.shape == (90, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.dtype == torch.int64 and sorted(val.labels.tolist()) == list(range(10))
    assert torch.equal(test.images[:, 0], torch.from_numpy(arrays["test"][0]))  # pixels as written
    assert torch.equal(test.labels, torch.from_numpy(arrays["test"][1]))
    assert sorted(train.labels.tolist() + val.labels.tolist()) == sorted(arrays["train"][1].tolist())
    assert data.class_names == list(getattr(datasets, folder).classes if folder != "MNIST" else map(str, range(10)))
    if gz:  # unpacked beside the archives, as torchvision's own download leaves them
        assert (tmp_path / folder / "raw" / "train-images-idx3-ubyte").is_file()


@pytest.mark.parametrize("module, config, hundred", [(CIFAR10Data, "cifar10", False), (CIFAR100Data, "cifar100", True)])
def test_cifar_files_in_place_are_used_although_their_md5_differs(tmp_path, no_network, module, config, hundred):
    arrays = write_cifar(tmp_path, hundred)
    data = module(**common(config, root=str(tmp_path), download=True))
    data.setup("fit")
    assert no_network == []  # torchvision's own class would call them corrupted and download again
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    n, n_test = (1000, 100) if hundred else (100, 20)
    assert (len(train) + len(val), len(val), len(test)) == (n, n // 10, n_test)
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(test.images, torch.from_numpy(arrays["test"][0]))  # CHW planes as stored
    assert torch.equal(test.labels, torch.from_numpy(arrays["test"][1]))
    assert len(val.labels.unique()) == (100 if hundred else 10)
    assert len(data.class_names) == data.num_classes and data.class_names[0] == ("apple" if hundred else "airplane")


def test_cifar_class_names_null_takes_the_files_meta_and_an_archive_in_place_is_unpacked(tmp_path, no_network):
    write_cifar(tmp_path / "src")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = CIFAR10Data(**common("cifar10", root=str(tmp_path), class_names=None))
    data.setup("fit")
    assert no_network == [] and (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()
    assert data.class_names == [f"k{i}" for i in range(10)]


def test_svhn_reads_mat_files_and_maps_label_10_to_digit_0(tmp_path, no_network):
    arrays = write_svhn(tmp_path)
    data = SVHNData(**common("svhn", root=str(tmp_path)))
    data.setup("fit")
    assert no_network == []
    test = data.splits["test"]
    assert test.images.shape == (20, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.equal(test.images, torch.from_numpy(arrays["test"][0]))
    assert torch.equal(test.labels, torch.from_numpy(arrays["test"][1])) and 0 in test.labels.tolist()
    assert len(data.splits["train"]) == 90 and data.class_names == [str(d) for d in range(10)]


@pytest.mark.parametrize(
    "module, config, files, url",
    [
        (MNISTData, "mnist", "train-images-idx3-ubyte", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        (FashionMNISTData, "fashion_mnist", "t10k-labels-idx1-ubyte", "http://fashion-mnist.s3-website"),
        (KMNISTData, "kmnist", "train-labels-idx1-ubyte", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
        (CIFAR10Data, "cifar10", "data_batch_1", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
        (CIFAR100Data, "cifar100", "meta", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
        (SVHNData, "svhn", "test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"),
    ],
)
@pytest.mark.parametrize("download", [True, False])
def test_missing_files_offline_give_one_line_with_files_folder_and_url(
    tmp_path, no_network, module, config, files, url, download
):
    data = module(**common(config, root=str(tmp_path / "data"), download=download))
    with pytest.raises(UserError) as error:
        data.setup("fit")
    message = str(error.value)
    assert "\n" not in message and files in message and url in message
    assert str(data.folder().resolve()) in message
    if download:
        assert no_network and "download failed" in message and "network blocked by the test" in message
    else:
        assert no_network == [] and "data.download=false" in message


def test_damaged_files_and_one_class_splits_name_the_folder(tmp_path, no_network):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03")  # sizes missing
    with pytest.raises(UserError, match=r"MNIST/raw: cannot read the MNIST test files"):
        MNISTData(**common("mnist", root=str(tmp_path))).setup("fit")
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte", np.zeros((20, 28, 28), np.uint8), gz=False)
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.full(20, 3, np.uint8), gz=False)
    with pytest.raises(UserError, match=r"MNIST/raw \(MNIST test split\): every image has label 3"):
        MNISTData(**common("mnist", root=str(tmp_path))).setup("fit")
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.arange(20, dtype=np.uint8), gz=False)
    with pytest.raises(UserError, match=r"MNIST/raw \(MNIST test split\): labels span 0..19, outside 0..9"):
        MNISTData(**common("mnist", root=str(tmp_path))).setup("fit")


# -- HDF5 ---------------------------------------------------------------------------------------------------
def test_hdf5_reads_the_course_layout(tmp_path):
    arrays = write_signs(tmp_path)
    data = HDF5Data(**common("hdf5", root=str(tmp_path)))
    data.setup("fit")
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (54, 6, 20) and sorted(val.labels.tolist()) == list(range(6))
    assert test.images.shape == (20, 3, 64, 64) and test.images.dtype == torch.uint8
    assert torch.equal(test.images, torch.from_numpy(arrays["test"][0]).permute(0, 3, 1, 2))  # NHWC -> NCHW
    assert data.class_names == ["0", "1", "2", "3", "4", "5"]  # from list_classes


def test_hdf5_explicit_keys_float_pixels_and_grey_images(tmp_path):
    root = tmp_path / "h5"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)):
        with h5py.File(root / f"{split}.h5", "w") as f:
            f["images"] = rng.random((n, 20, 20), dtype=np.float32)
            f["labels"] = (np.arange(n) % 2)[None]  # [1, N], as the course reshapes it
    options = common(
        "hdf5",
        root=str(root),
        train_file="train.h5",
        test_file="test.h5",
        x_key="images",
        y_key="labels",
        classes_key=None,
        channels=1,
        image_size=20,
        num_classes=2,
    )
    data = HDF5Data(**options)
    data.setup("fit")
    assert data.splits["train"].images.shape == (36, 1, 20, 20) and data.class_names == ["0", "1"]


def test_hdf5_missing_file_key_and_bad_labels_are_one_line_naming_path_and_key(tmp_path):
    with pytest.raises(UserError, match=r"data.train_file: no file matches .*/train_\*\.h5"):
        HDF5Data(**common("hdf5", root=str(tmp_path))).setup("fit")
    write_signs(tmp_path)
    with pytest.raises(
        UserError,
        match=r"train_signs.h5: no data set 'train_set_X' \(data.x_key\); the file holds: "
        r"list_classes, train_set_x, train_set_y",
    ):
        HDF5Data(**common("hdf5", root=str(tmp_path), x_key="{split}_set_X")).setup("fit")
    write_signs(tmp_path, y=np.arange(50) % 6)
    with pytest.raises(
        UserError,
        match=r"train_signs.h5: train_set_y must hold one integer label per image \(60\), "
        r"got int64 of shape \[50\]",
    ):
        HDF5Data(**common("hdf5", root=str(tmp_path))).setup("fit")
    write_signs(tmp_path, y=np.arange(60) % 7)
    with pytest.raises(UserError, match=r"train_signs.h5 \(train_set_y\): labels span 0..6, outside 0..5"):
        HDF5Data(**common("hdf5", root=str(tmp_path))).setup("fit")
    write_signs(tmp_path, y=np.zeros(60, dtype=np.int64))
    with pytest.raises(UserError, match=r"train_signs.h5 \(train_set_y\): every image has label 0"):
        HDF5Data(**common("hdf5", root=str(tmp_path))).setup("fit")
    with pytest.raises(ConfigError, match="layout"):
        HDF5Data(**common("hdf5", layout="HWC"))


# -- fake ---------------------------------------------------------------------------------------------------
def test_fake_data_is_fixed_by_its_seed_balanced_and_learnable_in_shape():
    options = common("fake", train_size=60000, channels=1, image_size=28)
    first, second = FakeData(**options).load(), FakeData(**options).load()
    images, labels = first["train"]
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [6000] * 10
    assert all(torch.equal(a, b) for split in first for a, b in zip(first[split], second[split]))
    assert [len(first[s][1]) for s in ("val", "test")] == [200, 200]
    # the class signal: images of a class agree with each other more than with another class
    zeros, ones = images[labels == 0].float(), images[labels == 1].float()
    assert (zeros.mean(0) - ones.mean(0)).abs().mean() > 30
    with pytest.raises(ConfigError, match="signal"):
        FakeData(**common("fake", signal=2))


def test_every_data_config_has_the_common_keys():
    for name in CONFIGS:
        cfg = OmegaConf.load(config_dir() / "data" / f"{name}.yaml")
        for key in (
            "_target_",
            "name",
            "channels",
            "image_size",
            "num_classes",
            "class_names",
            "batch_size",
            "normalization",
            "class_weights",
        ):
            assert key in cfg, (name, key)
        assert cfg.name == name and cfg.normalization is None
        assert cfg.class_names is None or len(cfg.class_names) == cfg.num_classes


# -- the CLI, end to end ------------------------------------------------------------------------------------
def check_run(run_dir: Path, num_classes: int, channels: int, image_size: int) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and "test/acc1" in summary["test"]
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    stored = checkpoint["cnncli"]
    data = stored["config"]["data"]
    assert (data["num_classes"], data["channels"], data["image_size"]) == (num_classes, channels, image_size)
    assert len(stored["class_names"]) == num_classes and len(stored["normalization"]["mean"]) == channels
    weights = [v for k, v in checkpoint["state_dict"].items() if k.startswith("model.") and v.ndim == 2]
    assert weights[-1].shape[0] == num_classes  # the output layer


def sweep(tmp_path: Path, *overrides: str) -> Path:
    """A multirun (one CLI start for several data configs): a key only the swept configs have is set with
    ++ (Hydra checks sweep overrides against the default data config first, which has no `root`)."""
    sweep_dir = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    result = cnncli("train", "-m", sweep_dir, *QUIET, *overrides, cwd=tmp_path, env=OFFLINE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path / "sweep"


@pytest.mark.slow
def test_cli_trains_on_the_mnist_family_from_files_in_place(tmp_path):
    root = tmp_path / "files"
    write_mnist(root, "MNIST", gz=True), write_mnist(root, "FashionMNIST", gz=False), write_mnist(root, "KMNIST")
    runs = sweep(
        tmp_path, "data=mnist,fashion_mnist,kmnist", f"++data.root={root}", "model=lenet5", "trainer.max_epochs=1"
    )
    for i in range(3):
        check_run(runs / str(i), 10, 1, 28)


@pytest.mark.slow
def test_cli_trains_on_cifar_and_svhn_from_files_in_place(tmp_path):
    root = tmp_path / "files"
    write_cifar(root), write_cifar(root, hundred=True), write_svhn(root)
    runs = sweep(tmp_path, "data=cifar10,cifar100,svhn", f"++data.root={root}", "model=lenet5", "trainer.max_epochs=1")
    for i, classes in enumerate((10, 100, 10)):
        check_run(runs / str(i), classes, 3, 32)


@pytest.mark.slow
def test_cli_trains_on_hdf5_and_fake(tmp_path):
    write_signs(tmp_path / "signs")
    train(tmp_path / "h5", "data=hdf5", f"data.root={tmp_path / 'signs'}", "model=lenet5", "trainer.max_epochs=1")
    check_run(tmp_path / "h5", 6, 3, 64)
    train(
        tmp_path / "fake",
        "data=fake",
        "data.train_size=300",
        "data.channels=1",
        "data.image_size=20",
        "model=mlp",
        "trainer.max_epochs=1",
    )
    check_run(tmp_path / "fake", 10, 1, 20)


def test_cli_offline_without_files_stops_with_one_line(tmp_path):
    result = cnncli("train", *QUIET, "data=mnist", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=OFFLINE)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"MNIST files not found in {tmp_path / 'data' / 'MNIST' / 'raw'}" in line  # root: data, in the cwd
    assert "train-images-idx3-ubyte.gz" in line and "https://ossci-datasets.s3.amazonaws.com/mnist/" in line
    assert "download failed" in line

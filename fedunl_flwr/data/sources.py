"""Image datasets from npz caches, original-format files or torchvision downloads."""

from __future__ import annotations

import bz2
import functools
import gzip
import importlib
import io
import logging
import os
import pickle
import string
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from fedunl_flwr.store import atomic_write_bytes

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DATASETS",
    "DatasetNotFoundError",
    "ImageDataset",
    "data_dir_from_env",
    "load_dataset",
    "load_tinyimagenet_shared",
    "read_idx",
]

_LOG = logging.getLogger(__name__)

#: Environment variable naming the data folder (see :func:`data_dir_from_env`).
DATA_DIR_ENV = "FEDUNL_DATA_DIR"

#: Where the Debian package ``dataset-fashion-mnist`` installs the original idx ``.gz``
#: files; searched for Fashion-MNIST after the data folder (documented fallback).

DIGIT_CLASSES: tuple[str, ...] = tuple(string.digits)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

#: CIFAR-100 fine label names in the standard (label index) order.
CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_EMNIST_MERGED = set("cijklmopsuvwxyz")
_EMNIST_ALL = sorted(string.digits + string.ascii_letters)
_EMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "balanced": tuple(c for c in _EMNIST_ALL if c not in _EMNIST_MERGED),
    "bymerge": tuple(c for c in _EMNIST_ALL if c not in _EMNIST_MERGED),
    "byclass": tuple(_EMNIST_ALL),
    "digits": DIGIT_CLASSES,
    "mnist": DIGIT_CLASSES,
    "letters": tuple(string.ascii_lowercase),  # stored labels 1..26, shifted to 0..25
}

_TINY_NPZ = "tinyimagenet_subset.npz"
_SHARED_TARGETS: dict[str, tuple[str, ...]] = {
    "cifar10": CIFAR10_CLASSES,
    "cifar100": CIFAR100_CLASSES,
}


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image classification dataset held in memory.

    Arrays are read-only because loaded datasets are shared through an in-process
    cache; copy (e.g. ``x[idx]`` or ``x.astype(...)``) before changing them.

    Attributes
    ----------
    name : str
        Dataset name (one of :data:`DATASETS`, or a derived name).
    x_train, x_test : numpy.ndarray
        ``uint8`` images, ``(N, H, W)`` gray or ``(N, H, W, 3)`` RGB.
    y_train, y_test : numpy.ndarray
        ``int64`` labels in ``[0, num_classes)``.
    class_names : tuple of str
        Name of each label index.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        """Check dtypes, shapes and label range.

        Raises
        ------
        ValueError
            If the arrays do not follow the documented layout.
        """
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
                raise ValueError(f"{self.name}: x_{split} must be a uint8 array")
            rgb = x.ndim == 4 and x.shape[-1] == 3
            if x.ndim != 3 and not rgb:
                raise ValueError(
                    f"{self.name}: x_{split} must be (N,H,W) or (N,H,W,3), "
                    f"got {x.shape}"
                )
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
                raise ValueError(f"{self.name}: y_{split} must be a 1-D int64 array")
            if len(x) != len(y):
                raise ValueError(
                    f"{self.name}: {len(x)} {split} images but {len(y)} labels"
                )
            if y.size and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise ValueError(
                    f"{self.name}: {split} labels outside [0, {len(self.class_names)})"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"{self.name}: train images {self.x_train.shape[1:]} and test images "
                f"{self.x_test.shape[1:]} differ in shape"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is in neither the npz cache nor original-format files of a folder."""


class _Splits(NamedTuple):
    """Arrays read from some source, before they become an :class:`ImageDataset`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] | None = None

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray],
           class_names: tuple[str, ...] | None = None) -> _Splits:
        """The splits from the four arrays in field order (x_train, y_train, x_test, y_test)."""
        x_train, y_train, x_test, y_test = arrays
        return cls(x_train, y_train, x_test, y_test, class_names)


# ---------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------


def data_dir_from_env(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data folder to use.

    Parameters
    ----------
    explicit : str or os.PathLike or None
        A folder chosen by the caller (CLI option, run-config value); used when
        given and non-empty.

    Returns
    -------
    pathlib.Path
        ``explicit``, else ``$FEDUNL_DATA_DIR`` when set and non-empty, else
        ``~/.cache/fedunl/data``.
    """
    if explicit is not None and os.fspath(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fedunl" / "data"


_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (the MNIST / Fashion-MNIST / EMNIST format).

    Parameters
    ----------
    path : str or os.PathLike
        File to read; gzip-compressed files (``.gz`` or gzip magic) are
        decompressed.

    Returns
    -------
    numpy.ndarray
        Array with the stored shape, in native byte order.

    Raises
    ------
    ValueError
        If the file is not a well-formed idx file.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(2)
    opener: Callable[..., Any] = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"cannot read idx file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: idx header says shape {shape} but the payload has "
            f"{len(raw) - header} bytes"
        )
    data = np.frombuffer(raw, dtype, count, header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------
# npz cache
# ---------------------------------------------------------------------------

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_npz(
    path: Path, keys: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Read ``keys`` (required) and ``optional`` keys from an npz file without pickle.

    Raises
    ------
    ValueError
        If the file is unreadable, corrupt or lacks a required key.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise ValueError(f"npz file {path} lacks keys {missing}")
            wanted = list(keys) + [k for k in optional if k in npz.files]
            return {k: npz[k] for k in wanted}
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"cannot read npz file {path}: {err}") from err
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as err:
        raise ValueError(f"cannot read npz file {path}: {err}") from err


def _splits_from_npz(path: Path) -> _Splits:
    """Read the dataset arrays (and optional ``class_names``) from an npz cache."""
    arrays = _read_npz(path, _NPZ_KEYS, ("class_names",))
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise ValueError(f"npz file {path}: class_names must be a 1-D string array")
    class_names = None if names is None else tuple(str(s) for s in names.tolist())
    return _Splits.of([arrays[k] for k in _NPZ_KEYS], class_names=class_names)


def _write_npz_atomic(
    path: Path, splits: _Splits, class_names: tuple[str, ...]
) -> None:
    """Write an npz cache through a temporary file and ``os.replace``."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x_train=splits.x_train,
        y_train=splits.y_train,
        x_test=splits.x_test,
        y_test=splits.y_test,
        class_names=np.asarray(class_names, dtype=str),
    )
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------
# Original-format readers (each returns None when its files are not there)
# ---------------------------------------------------------------------------


def _search_dirs(data_dir: Path, subdirs: Sequence[str]) -> list[Path]:
    """Existing folders ``data_dir/sub`` and ``data_dir/raw/sub`` (download target)."""
    dirs = [base / sub for base in (data_dir, data_dir / "raw") for sub in subdirs]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists first."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_splits(
    dirs: Sequence[Path],
    files: tuple[str, str, str, str],
    *,
    transpose: bool = False,
    label_offset: int = 0,
) -> _Splits | None:
    """Read train/test idx image and label files that lie together in one folder.

    Parameters
    ----------
    dirs : sequence of pathlib.Path
        Folders to try in order.
    files : tuple of str
        Uncompressed names of train images, train labels, test images, test labels.
    transpose : bool
        Transpose each image (EMNIST stores images transposed).
    label_offset : int
        Subtracted from the stored labels.
    """
    for folder in dirs:
        found = [p for p in (_find_file(folder, f) for f in files) if p is not None]
        if len(found) != len(files):
            continue
        arrays = [read_idx(p) for p in found]
        out = []
        for i, arr in enumerate(arrays):
            if i % 2 == 0:  # images
                if arr.ndim != 3 or arr.dtype != np.uint8:
                    raise ValueError(f"{found[i]}: expected uint8 images (N,H,W)")
                out.append(
                    np.ascontiguousarray(arr.transpose(0, 2, 1)) if transpose else arr
                )
            else:
                out.append(arr.reshape(-1).astype(np.int64) - label_offset)
        return _Splits.of(out)
    return None


_MNIST_IDX = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _raw_mnist(data_dir: Path) -> _Splits | None:
    """MNIST idx files in torchvision's layout ``MNIST/raw`` (or a ``mnist`` folder)."""
    return _read_idx_splits(_search_dirs(data_dir, ("MNIST/raw", "mnist")), _MNIST_IDX)


def _raw_fashion(data_dir: Path) -> _Splits | None:
    """Fashion-MNIST idx files in the data folder (or its ``FashionMNIST/raw``,
    ``fashion-mnist``)."""
    return _read_idx_splits(_search_dirs(data_dir, ("", "FashionMNIST/raw", "fashion-mnist")),
                            _MNIST_IDX)


def _emnist_files(split: str) -> tuple[str, str, str, str]:
    """Return torchvision's EMNIST idx file names for ``split``."""
    return tuple(  # type: ignore[return-value]
        f"emnist-{split}-{part}-ubyte"
        for part in (
            "train-images-idx3",
            "train-labels-idx1",
            "test-images-idx3",
            "test-labels-idx1",
        )
    )


def _raw_emnist(split: str) -> Callable[[Path], _Splits | None]:
    """Reader of EMNIST ``split`` idx files (``EMNIST/raw`` layout), made upright."""

    def read(data_dir: Path) -> _Splits | None:
        dirs = _search_dirs(data_dir, ("EMNIST/raw", "", "emnist"))
        offset = 1 if split == "letters" else 0
        return _read_idx_splits(
            dirs, _emnist_files(split), transpose=True, label_offset=offset
        )

    return read


def _raw_svhn(data_dir: Path) -> _Splits | None:
    """SVHN ``train_32x32.mat`` / ``test_32x32.mat``.

    ``X`` is (32,32,3,N) and label 10 means digit 0.
    """
    for folder in _search_dirs(data_dir, ("", "svhn", "SVHN")):
        paths = [folder / "train_32x32.mat", folder / "test_32x32.mat"]
        if not all(p.is_file() for p in paths):
            continue
        import scipy.io

        out: list[np.ndarray] = []
        for p in paths:
            try:
                mat = scipy.io.loadmat(p)
                x, y = mat["X"], mat["y"]
            except Exception as err:  # scipy raises several types for bad files
                raise ValueError(f"cannot read SVHN file {p}: {err}") from err
            if x.ndim != 4 or x.shape[2] != 3:
                raise ValueError(f"{p}: expected X of shape (32,32,3,N), got {x.shape}")
            labels = y.reshape(-1).astype(np.int64)
            labels[labels == 10] = 0
            out += [
                np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2)).astype(np.uint8)),
                labels,
            ]
        return _Splits.of(out)
    return None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and numpy arrays.

    CIFAR's original format is pickle; refusing every other global keeps a
    tampered file in the data folder from running code.
    """

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        """Resolve allow-listed globals only (``numpy.core`` -> ``numpy._core``)."""
        legacy = module.replace("numpy._core", "numpy.core")
        if (legacy, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        for candidate in dict.fromkeys(
            (legacy.replace("numpy.core", "numpy._core"), legacy)
        ):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


def _load_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR python-format pickle (Python 2 pickles decoded as latin1)."""
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
    ) as err:
        raise ValueError(f"cannot read CIFAR pickle {path}: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict pickle")
    return {
        k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()
    }


def _cifar_batches(
    folder: Path, names: Sequence[str], label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate CIFAR python-format batches into (N,32,32,3) images and labels."""
    xs, ys = [], []
    for name in names:
        path = folder / name
        batch = _load_pickle(path)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        except KeyError as err:
            raise ValueError(f"{path}: missing key {err}") from err
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels)
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def _class_names_from_meta(path: Path, key: str) -> tuple[str, ...]:
    """Class names stored under ``key`` in a CIFAR ``meta`` pickle."""
    names = _load_pickle(path).get(key)
    if names is None:
        raise ValueError(f"{path}: missing key {key!r}")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _raw_cifar10(data_dir: Path) -> _Splits | None:
    """CIFAR-10 python format in ``cifar-10-batches-py``.

    Files ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``.
    """
    for folder in _search_dirs(data_dir, ("cifar-10-batches-py",)):
        if not all((folder / n).is_file() for n in (*_CIFAR10_TRAIN, "test_batch")):
            continue
        x_train, y_train = _cifar_batches(folder, _CIFAR10_TRAIN, "labels")
        x_test, y_test = _cifar_batches(folder, ("test_batch",), "labels")
        meta = folder / "batches.meta"
        names = _class_names_from_meta(meta, "label_names") if meta.is_file() else None
        return _Splits(x_train, y_train, x_test, y_test, names)
    return None


def _raw_cifar100(data_dir: Path) -> _Splits | None:
    """CIFAR-100 python format ``cifar-100-python/{train,test,meta}``, fine labels."""
    for folder in _search_dirs(data_dir, ("cifar-100-python",)):
        if not all((folder / n).is_file() for n in ("train", "test")):
            continue
        x_train, y_train = _cifar_batches(folder, ("train",), "fine_labels")
        x_test, y_test = _cifar_batches(folder, ("test",), "fine_labels")
        meta = folder / "meta"
        names = (
            _class_names_from_meta(meta, "fine_label_names") if meta.is_file() else None
        )
        return _Splits(x_train, y_train, x_test, y_test, names)
    return None


def _read_usps_bz2(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a LIBSVM-format USPS ``.bz2`` file with torchvision's conversion rule."""
    try:
        with bz2.open(path) as fh:
            rows = [line.decode().split() for line in fh if line.strip()]
        values = np.asarray(
            [[v.split(":")[-1] for v in r[1:]] for r in rows], dtype=np.float32
        )
        images = ((values.reshape(-1, 16, 16) + 1) / 2 * 255).astype(np.uint8)
        labels = np.asarray([int(float(r[0])) - 1 for r in rows], dtype=np.int64)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"cannot read USPS file {path}: {err}") from err
    return images, labels


def _raw_usps(data_dir: Path) -> _Splits | None:
    """USPS LIBSVM files ``usps.bz2`` (train) and ``usps.t.bz2`` (test)."""
    for folder in _search_dirs(data_dir, ("", "usps")):
        paths = [folder / "usps.bz2", folder / "usps.t.bz2"]
        if all(p.is_file() for p in paths):
            return _Splits(*_read_usps_bz2(paths[0]), *_read_usps_bz2(paths[1]))
    return None


def _raw_uci_digits(data_dir: Path) -> _Splits:
    """UCI optical digits from scikit-learn, stratified 75/25 split with seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * 255.0 / 16.0).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=0.25, random_state=0, stratify=labels
    )
    return _Splits(
        images[idx_train], labels[idx_train], images[idx_test], labels[idx_test]
    )


# ---------------------------------------------------------------------------
# torchvision downloads (into <data_dir>/raw; torchvision is imported lazily)
# ---------------------------------------------------------------------------


def _tv_download(cls_name: str, *kwargs_list: dict[str, Any]) -> Callable[[Path], None]:
    """Make a downloader calling ``torchvision.datasets.<cls_name>`` per kwargs."""

    def download(root: Path) -> None:
        from fedunl_flwr.torchvision_compat import torchvision

        root.mkdir(parents=True, exist_ok=True)
        cls = getattr(torchvision.datasets, cls_name)
        for kwargs in kwargs_list:
            cls(root=str(root), download=True, **kwargs)

    return download


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """How to find one dataset: npz names, original-format reader, downloader."""

    npz_names: tuple[str, ...]
    classes: tuple[str, ...] | None
    read_raw: Callable[[Path], _Splits | None] | None
    raw_hint: str
    download: Callable[[Path], None] | None = None
    write_cache: bool = True


def _emnist_spec(name: str, split: str) -> _Spec:
    files = ", ".join(_emnist_files(split))
    return _Spec(
        (f"{name}.npz",),
        _EMNIST_CLASSES[split],
        _raw_emnist(split),
        f"EMNIST/raw/{{{files}}}[.gz]",
        _tv_download("EMNIST", {"split": split, "train": True}),
    )


_SPECS: dict[str, _Spec] = {
    "mnist": _Spec(
        ("mnist.npz",),
        DIGIT_CLASSES,
        _raw_mnist,
        "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
        _tv_download("MNIST", {"train": True}),
    ),
    "usps": _Spec(
        ("usps.npz",),
        DIGIT_CLASSES,
        _raw_usps,
        "usps.bz2 and usps.t.bz2",
        _tv_download("USPS", {"train": True}, {"train": False}),
    ),
    "cifar10": _Spec(
        ("cifar10.npz",),
        CIFAR10_CLASSES,
        _raw_cifar10,
        "cifar-10-batches-py/{data_batch_1..5,test_batch}",
        _tv_download("CIFAR10", {"train": True}),
    ),
    "cifar100": _Spec(
        ("cifar100.npz",),
        CIFAR100_CLASSES,
        _raw_cifar100,
        "cifar-100-python/{train,test,meta}",
        _tv_download("CIFAR100", {"train": True}),
    ),
    "svhn": _Spec(
        ("svhn.npz",),
        DIGIT_CLASSES,
        _raw_svhn,
        "train_32x32.mat and test_32x32.mat",
        _tv_download("SVHN", {"split": "train"}, {"split": "test"}),
    ),
    "emnist": _emnist_spec("emnist", "balanced"),
    **{
        f"emnist-{split}": _emnist_spec(f"emnist-{split}", split)
        for split in ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")
    },
    "fashion-mnist": _Spec(
        ("fashion-mnist.npz",),
        FASHION_MNIST_CLASSES,
        _raw_fashion,
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (also searched: "
        "FashionMNIST/raw, fashion-mnist)",
        _tv_download("FashionMNIST", {"train": True}),
    ),
    "uci-digits": _Spec(
        ("uci-digits.npz",),
        DIGIT_CLASSES,
        _raw_uci_digits,
        "scikit-learn's load_digits()",
        write_cache=False,
    ),
    "tinyimagenet-subset": _Spec(
        (_TINY_NPZ, "tinyimagenet-subset.npz"),
        None,
        None,
        "(no original format is read)",
    ),
    # ImageNet on the classes it shares with CIFAR (seed 000's images9/65 tasks). Users
    # build these files from their ImageNet copy: images resized (e.g. 224x224 or
    # 64x64), labels in CIFAR label space; ImageNet cannot be downloaded automatically.
    **{
        f"imagenet-{target}": _Spec(
            (f"imagenet-{target}.npz",),
            classes,
            None,
            "(built from ImageNet: x_* uint8 (N,H,W,3), y_* int64 in "
            f"{target.upper()} label space)",
        )
        for target, classes in (("cifar10", CIFAR10_CLASSES), ("cifar100", CIFAR100_CLASSES))
    },
}

#: Every dataset name :func:`load_dataset` accepts.
DATASETS: tuple[str, ...] = tuple(_SPECS)


def _canonical(name: str) -> str:
    """Normalise ``name`` (case, ``_`` vs ``-``) and check it is known."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in _SPECS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        )
    return key


def _not_found(
    name: str, directory: Path, spec: _Spec, detail: str = ""
) -> DatasetNotFoundError:
    """Build the error that says where we looked and how to get the data."""
    looked = " or ".join(spec.npz_names)
    how = (
        "pass download=True (run-config download=true) to fetch it through torchvision "
        f"into {directory / 'raw'}, or copy {spec.npz_names[0]} there"
        if spec.download is not None
        else f"it cannot be downloaded automatically; copy {spec.npz_names[0]} there"
    )
    return DatasetNotFoundError(
        f"dataset {name!r} not found in folder {directory} (looked for {looked} and "
        f"{spec.raw_hint}){detail}. To get it, {how}, or point {DATA_DIR_ENV} at a "
        "folder that holds it."
    )


def _load_uncached(name: str, directory: Path) -> ImageDataset:
    """Load ``name`` from ``directory``: npz cache, then original-format files."""
    spec = _SPECS[name]
    splits: _Splits | None = None
    for npz_name in spec.npz_names:
        path = directory / npz_name
        if path.is_file():
            splits = _splits_from_npz(path)
            break
    from_raw = False
    if splits is None and spec.read_raw is not None:
        splits = spec.read_raw(directory)
        from_raw = splits is not None
    if splits is None:
        raise _not_found(name, directory, spec)

    class_names = splits.class_names or spec.classes
    if class_names is None:
        top = max(
            int(splits.y_train.max(initial=-1)), int(splits.y_test.max(initial=-1))
        )
        class_names = tuple(str(i) for i in range(top + 1))

    arrays = []
    dtypes = (np.uint8, np.int64, np.uint8, np.int64)
    for arr, dtype in zip(splits[:4], dtypes, strict=True):
        if arr.dtype != dtype:
            if dtype is np.uint8 or arr.dtype.kind not in "iu":
                raise ValueError(
                    f"dataset {name!r}: unexpected array dtype {arr.dtype}"
                )
            arr = arr.astype(dtype)
        arrays.append(arr)
    names = tuple(class_names)
    splits = _Splits.of(arrays, class_names=names)

    if from_raw and spec.write_cache:
        target = directory / spec.npz_names[0]
        try:
            _write_npz_atomic(target, splits, names)
        except OSError as err:
            _LOG.warning("could not write npz cache %s: %s", target, err)

    for arr in splits[:4]:
        arr.flags.writeable = False
    return ImageDataset(name, *splits[:4], class_names=names)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, directory: str) -> ImageDataset:
    """In-process cache keyed by (canonical name, resolved folder)."""
    return _load_uncached(name, Path(directory))


def load_dataset(
    name: str, data_dir: str | os.PathLike, download: bool = False
) -> ImageDataset:
    """Load a dataset by name.

    Looks for the npz cache ``<data_dir>/<name>.npz`` (keys ``x_train``,
    ``y_train``, ``x_test``, ``y_test``, optional ``class_names``), else for
    original-format files in ``data_dir`` (and ``data_dir/raw``), else downloads
    them through torchvision into ``data_dir/raw`` when ``download`` is true.
    Reading original-format files writes the npz cache (atomically) for next
    time. Results are cached in-process per (name, resolved folder).

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (case-insensitive, ``_`` accepted for ``-``).
    data_dir : str or os.PathLike
        Data folder, e.g. from :func:`data_dir_from_env`.
    download : bool
        Fetch missing data through torchvision.

    Returns
    -------
    ImageDataset
        The dataset; its arrays are read-only and shared between callers.

    Raises
    ------
    ValueError
        Unknown name, or a corrupt / malformed file (the message names it).
    DatasetNotFoundError
        The data is not in ``data_dir`` and was not (or could not be) downloaded.
    """
    key = _canonical(name)
    directory = Path(data_dir).expanduser().resolve()
    try:
        return _load_cached(key, str(directory))
    except DatasetNotFoundError:
        spec = _SPECS[key]
        if not download or spec.download is None:
            raise
        try:
            spec.download(directory / "raw")
        except Exception as err:
            raise _not_found(
                key, directory, spec, f"; downloading through torchvision failed: {err}"
            ) from err
    return _load_cached(key, str(directory))


def downloadable(name: str) -> bool:
    """Whether ``load_dataset(name, ..., download=True)`` can fetch a missing dataset."""
    return _SPECS[_canonical(name)].download is not None


@functools.lru_cache(maxsize=4)
def _load_shared_cached(directory: str, target: str) -> ImageDataset:
    """Build the CIFAR-relabelled Tiny-ImageNet subset (cached)."""
    base = _load_cached("tinyimagenet-subset", directory)
    spec = _SPECS["tinyimagenet-subset"]
    path = next(
        Path(directory) / n for n in spec.npz_names if (Path(directory) / n).is_file()
    )
    keys = [f"y_train_{target}", f"y_test_{target}"]
    labels = _read_npz(path, keys)
    split_arrays: list[np.ndarray] = []
    for x, y_key in ((base.x_train, keys[0]), (base.x_test, keys[1])):
        y = labels[y_key].astype(np.int64).reshape(-1)
        if len(y) != len(x):
            raise ValueError(
                f"npz file {path}: {y_key} has {len(y)} labels for {len(x)} images"
            )
        keep = y >= 0
        x_kept, y_kept = x[keep], y[keep]
        x_kept.flags.writeable = False
        y_kept.flags.writeable = False
        split_arrays += [x_kept, y_kept]
    x_train, y_train, x_test, y_test = split_arrays
    return ImageDataset(
        f"tinyimagenet-subset-{target}",
        x_train, y_train, x_test, y_test,
        class_names=_SHARED_TARGETS[target],
    )


def load_tinyimagenet_shared(data_dir: str | os.PathLike, target: str) -> ImageDataset:
    """Tiny-ImageNet subset relabelled into a CIFAR label space.

    Keeps only images whose class maps onto a ``target`` class (per-image keys
    ``y_train_<target>`` / ``y_test_<target>`` of ``tinyimagenet_subset.npz``,
    ``-1`` = no match) and labels them with CIFAR indices.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Folder holding ``tinyimagenet_subset.npz``.
    target : str
        ``"cifar10"`` or ``"cifar100"``.

    Returns
    -------
    ImageDataset
        Named ``tinyimagenet-subset-<target>``; ``class_names`` are the target's
        full class list (CIFAR-10: 10 names, CIFAR-100: 100 fine names), so only
        the shared classes occur in the labels.

    Raises
    ------
    ValueError
        Unknown ``target`` or a malformed file.
    DatasetNotFoundError
        The npz file is not in ``data_dir``.
    """
    key = str(target).strip().lower().replace("-", "")
    if key not in _SHARED_TARGETS:
        raise ValueError(
            f"unknown target {target!r}; choose one of: {', '.join(_SHARED_TARGETS)}"
        )
    directory = Path(data_dir).expanduser().resolve()
    return _load_shared_cached(str(directory), key)

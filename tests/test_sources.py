"""Tests for fedunl_flwr.data.sources: real offline data, tiny original-format files."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from fedunl_flwr.data import sources
from fedunl_flwr.data.sources import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DATASETS,
    DatasetNotFoundError,
    ImageDataset,
    data_dir_from_env,
    load_dataset,
    load_tinyimagenet_shared,
    read_idx,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Empty the in-process cache."""
    clear_dataset_caches()


@pytest.fixture(scope="module")
def real_dir() -> Path:
    """Return $FEDUNL_DATA_DIR, else <workspace>/shared/data."""
    env = os.environ.get("FEDUNL_DATA_DIR")
    folder = (
        Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    if not (folder / "mnist.npz").is_file():
        pytest.fail(
            f"offline data folder {folder} (with mnist.npz) is missing; set "
            "FEDUNL_DATA_DIR to the folder holding mnist.npz, usps.npz, cifar10.npz "
            "and tinyimagenet_subset.npz"
        )
    return folder


# ---------------------------------------------------------------------------
# Writers of original formats (independent of the code under test)
# ---------------------------------------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}


def write_idx(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` as an idx file, gzip-compressed when the name ends in .gz."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = arr.astype(">i4")
    header = bytes([0, 0, _IDX_CODES[arr.dtype], arr.ndim])
    header += np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def tiny_gray(n: int, seed: int, size: int = 28) -> np.ndarray:
    """Random uint8 gray images."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def write_mnist_like(folder: Path, x_tr, y_tr, x_te, y_te, gz: bool = True) -> None:
    """MNIST / Fashion-MNIST idx file set."""
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", x_tr)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", y_tr.astype(np.uint8))
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", x_te)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", y_te.astype(np.uint8))


def write_svhn_split(folder: Path, split: str, digits: np.ndarray) -> np.ndarray:
    """Write one SVHN .mat file: X (32,32,3,N), y (N,1) with 10 for digit 0."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(len(digits)).integers(
        0, 256, (len(digits), 32, 32, 3), dtype=np.uint8
    )
    stored = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(
        folder / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": stored}
    )
    return images


def write_svhn(folder: Path, digits_train: np.ndarray, digits_test: np.ndarray) -> dict:
    """Both SVHN .mat files; returns the upright (N,32,32,3) images per split."""
    return {
        "train": write_svhn_split(folder, "train", digits_train),
        "test": write_svhn_split(folder, "test", digits_test),
    }


def upright_glyphs(n: int) -> np.ndarray:
    """Asymmetric 28x28 images (bars in row i%28 and column 0; transposing shows)."""
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        x[i, i % 28, :] = 200  # horizontal stroke
        x[i, :, 0] = 100  # left edge
        x[i, 0, 0] = 255
        x[i, 27, 5] = 7 + i
    return x


def write_emnist(
    folder: Path, split: str, x_tr, y_tr, x_te, y_te, gz: bool = True
) -> None:
    """EMNIST idx files: images stored transposed like the NIST originals."""
    ext = ".gz" if gz else ""
    for part, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        write_idx(
            folder / f"emnist-{split}-{part}-images-idx3-ubyte{ext}",
            x.transpose(0, 2, 1).copy(),
        )
        write_idx(
            folder / f"emnist-{split}-{part}-labels-idx1-ubyte{ext}", y.astype(np.uint8)
        )


# ---------------------------------------------------------------------------
# Real offline data
# ---------------------------------------------------------------------------


def test_mnist_real(real_dir: Path) -> None:
    ds = load_dataset("mnist", real_dir)
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.num_classes == 10 and set(np.unique(ds.y_train)) == set(range(10))
    assert load_dataset("MNIST", real_dir) is load_dataset(
        "mnist", str(real_dir)
    )  # in-process cache


def test_usps_cifar10_real(real_dir: Path) -> None:
    usps = load_dataset("usps", real_dir)
    assert usps.x_train.shape == (7291, 16, 16) and usps.x_test.shape == (2007, 16, 16)
    cifar = load_dataset("cifar10", real_dir)
    assert cifar.x_train.shape[1:] == (32, 32, 3) and cifar.x_test.shape == (
        10000,
        32,
        32,
        3,
    )
    assert cifar.class_names == CIFAR10_CLASSES


def test_uci_digits(tmp_path: Path) -> None:
    ds = load_dataset("uci-digits", tmp_path)
    assert ds.x_train.shape[1:] == (8, 8) and len(ds.x_train) + len(ds.x_test) == 1797
    assert len(ds.x_test) == 450 and ds.num_classes == 10
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255
    full = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10)
    assert np.all(
        np.abs(np.bincount(ds.y_test, minlength=10) - full / 4) <= 1
    )  # stratified
    clear_dataset_caches()
    again = load_dataset("uci_digits", tmp_path)
    np.testing.assert_array_equal(again.y_train, ds.y_train)  # deterministic split
    assert not (
        tmp_path / "uci-digits.npz"
    ).exists()  # sklearn ships it; no cache written


def test_tinyimagenet_real(real_dir: Path) -> None:
    base = load_dataset("tinyimagenet-subset", real_dir)
    assert base.num_classes == 62 and base.x_train.shape[1:] == (64, 64, 3)
    c10 = load_tinyimagenet_shared(real_dir, "cifar10")
    assert set(np.unique(c10.y_train)) == {1, 2, 3, 5, 6, 8, 9}
    assert set(np.unique(c10.y_test)) == {1, 2, 3, 5, 6, 8, 9}
    assert c10.class_names == CIFAR10_CLASSES and c10.num_classes == 10
    assert 0 < len(c10.x_train) < len(base.x_train)
    c100 = load_tinyimagenet_shared(real_dir, "cifar100")
    assert c100.class_names == CIFAR100_CLASSES and c100.y_train.max() < 100
    with pytest.raises(ValueError, match="target"):
        load_tinyimagenet_shared(real_dir, "svhn")


def test_plain_loading_does_not_import_torchvision(real_dir: Path) -> None:
    code = (
        "import sys\n"
        "from fedunl_flwr.data.sources import load_dataset\n"
        f"load_dataset('usps', {str(real_dir)!r})\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)


# ---------------------------------------------------------------------------
# API basics
# ---------------------------------------------------------------------------


def test_dataset_names() -> None:
    for name in (
        "mnist",
        "usps",
        "cifar10",
        "cifar100",
        "svhn",
        "emnist",
        "emnist-letters",
        "fashion-mnist",
        "uci-digits",
        "tinyimagenet-subset",
    ):
        assert name in DATASETS


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cifar100") as err:
        load_dataset("imagenet-full", tmp_path)
    assert "imagenet-full" in str(err.value)


def test_data_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDUNL_DATA_DIR", str(tmp_path / "env"))
    assert data_dir_from_env(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_dir_from_env("") == tmp_path / "env"
    assert data_dir_from_env() == tmp_path / "env"
    monkeypatch.setenv("FEDUNL_DATA_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir_from_env(None) == tmp_path / "home" / ".cache" / "fedunl" / "data"


def test_read_idx_roundtrip(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.int64).reshape(2, 3, 4) - 5
    write_idx(tmp_path / "a.idx", arr)
    write_idx(tmp_path / "a.idx.gz", arr)
    for name in ("a.idx", "a.idx.gz"):
        out = read_idx(tmp_path / name)
        assert out.shape == (2, 3, 4) and out.dtype.isnative
        np.testing.assert_array_equal(out, arr)
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="bad"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x00")
    with pytest.raises(ValueError, match="short"):
        read_idx(tmp_path / "short")


def test_missing_dataset_message(tmp_path: Path) -> None:
    for name in ("svhn", "cifar100", "emnist", "fashion-mnist", "mnist"):
        with pytest.raises(DatasetNotFoundError) as err:
            load_dataset(name, tmp_path)
        msg = str(err.value)
        assert name in msg and str(tmp_path.resolve()) in msg and "download=True" in msg
        assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match=r"tinyimagenet_subset\.npz"):
        load_dataset("tinyimagenet-subset", tmp_path, download=True)


def test_corrupt_npz(tmp_path: Path) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match=r"mnist\.npz"):
        load_dataset("mnist", tmp_path)
    good = tmp_path / "good.npz"
    x = np.zeros((4, 8, 8), np.uint8)
    y = np.zeros(4, np.int64)
    np.savez(good, x_train=x, y_train=y, x_test=x, y_test=y)
    (tmp_path / "usps.npz").write_bytes(good.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match=r"usps\.npz"):
        load_dataset("usps", tmp_path)
    np.savez(tmp_path / "cifar10.npz", x_train=x, y_train=y)  # missing keys
    with pytest.raises(ValueError, match=r"cifar10\.npz"):
        load_dataset("cifar10", tmp_path)


def test_npz_with_class_names_and_read_only(tmp_path: Path) -> None:
    x = tiny_gray(6, 0, 8)
    y = np.array([0, 1, 2, 0, 1, 2], np.int64)
    np.savez(
        tmp_path / "svhn.npz",
        x_train=x,
        y_train=y,
        x_test=x[:2],
        y_test=y[:2],
        class_names=np.array(["zero", "one", "two"]),
    )
    ds = load_dataset("svhn", tmp_path)
    assert isinstance(ds, ImageDataset) and ds.class_names == ("zero", "one", "two")
    assert ds.num_classes == 3
    with pytest.raises(ValueError):
        ds.x_train[0, 0, 0] = 1  # shared cached arrays are read-only


# ---------------------------------------------------------------------------
# Original-format readers on tiny files
# ---------------------------------------------------------------------------


def test_svhn_mat_roundtrip_and_cache(tmp_path: Path) -> None:
    digits_tr = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 3])
    digits_te = np.array([9, 0, 5])
    images = write_svhn(tmp_path, digits_tr, digits_te)
    ds = load_dataset("svhn", tmp_path)
    assert ds.x_train.shape == (12, 32, 32, 3) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train, images["train"])
    np.testing.assert_array_equal(ds.x_test, images["test"])
    np.testing.assert_array_equal(ds.y_train, digits_tr)  # label 10 -> 0
    np.testing.assert_array_equal(ds.y_test, digits_te)
    assert ds.class_names == tuple("0123456789")
    # the npz cache is written, and used once the originals are gone
    assert (tmp_path / "svhn.npz").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "train_32x32.mat").unlink()
    (tmp_path / "test_32x32.mat").unlink()
    clear_dataset_caches()
    cached = load_dataset("svhn", tmp_path)
    np.testing.assert_array_equal(cached.x_train, images["train"])
    np.testing.assert_array_equal(cached.y_train, digits_tr)


def _write_cifar100(
    folder: Path, protocol: int
) -> tuple[np.ndarray, list[int], list[str]]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fine = [0, 99, 42, 7, 1]
    flat = images.transpose(0, 3, 1, 2).reshape(
        5, 3072
    )  # rows: R plane, G plane, B plane
    for split, sl in (("train", slice(0, 3)), ("test", slice(3, 5))):
        batch = {
            "filenames": ["a.png"] * len(fine[sl]),
            "fine_labels": fine[sl],
            "coarse_labels": [0] * len(fine[sl]),
            "data": flat[sl],
        }
        with open(folder / split, "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
    names = [f"class{i:02d}" for i in range(100)]
    with open(folder / "meta", "wb") as fh:
        pickle.dump(
            {"fine_label_names": names, "coarse_label_names": ["c"] * 20},
            fh,
            protocol=protocol,
        )
    return images, fine, names


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar100_python_roundtrip_and_cache(tmp_path: Path, protocol: int) -> None:
    images, fine, names = _write_cifar100(tmp_path / "cifar-100-python", protocol)
    ds = load_dataset("cifar100", tmp_path)
    np.testing.assert_array_equal(ds.x_train, images[:3])
    np.testing.assert_array_equal(ds.x_test, images[3:])
    assert ds.x_train[0, 0, 0, 0] == images[0, 0, 0, 0] and ds.x_train.shape[-1] == 3
    assert ds.y_train.tolist() == fine[:3] and ds.y_test.tolist() == fine[3:]
    assert ds.class_names == tuple(names) and ds.num_classes == 100
    assert (tmp_path / "cifar100.npz").is_file()
    for f in (tmp_path / "cifar-100-python").iterdir():
        f.write_bytes(b"garbage")  # if the originals were read again this would fail
    clear_dataset_caches()
    cached = load_dataset("cifar100", tmp_path)
    np.testing.assert_array_equal(cached.x_test, images[3:])
    assert cached.class_names == tuple(names)


def test_cifar_pickle_refuses_code(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    _write_cifar100(folder, 2)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "train").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(ValueError, match="train"):
        load_dataset("cifar100", tmp_path)


def test_cifar10_python_format(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = [*range(10), 3, 4]
    flat = images.transpose(0, 3, 1, 2).reshape(12, 3072)
    for i in range(5):
        with open(folder / f"data_batch_{i + 1}", "wb") as fh:
            pickle.dump(
                {"data": flat[2 * i : 2 * i + 2], "labels": labels[2 * i : 2 * i + 2]},
                fh,
                2,
            )
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"data": flat[10:], "labels": labels[10:]}, fh, 2)
    ds = load_dataset("cifar10", tmp_path)
    np.testing.assert_array_equal(ds.x_train, images[:10])
    assert ds.y_test.tolist() == [3, 4] and ds.class_names == CIFAR10_CLASSES


def test_usps_bz2_format(tmp_path: Path) -> None:
    import bz2

    values = np.linspace(-1, 1, 256).reshape(1, 256).repeat(3, 0)
    values[1] *= -1
    for name, labels in (("usps.bz2", [1, 10, 5]), ("usps.t.bz2", [2, 3, 4])):
        lines = [
            f"{lab} " + " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(row))
            for lab, row in zip(labels, values, strict=True)
        ]
        (tmp_path / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    ds = load_dataset("usps", tmp_path)
    assert ds.x_train.shape == (3, 16, 16) and ds.y_train.tolist() == [0, 9, 4]
    assert ds.x_train[0, 0, 0] == 0 and ds.x_train[0, 15, 15] == 255  # (v+1)/2*255
    assert ds.x_train[1, 0, 0] == 255


@pytest.mark.parametrize(
    ("name", "split", "offset"),
    [
        ("emnist", "balanced", 0),
        ("emnist-letters", "letters", 1),
        ("emnist-digits", "digits", 0),
    ],
)
def test_emnist_idx_orientation_and_cache(
    tmp_path: Path, name: str, split: str, offset: int
) -> None:
    x_tr, x_te = upright_glyphs(6), upright_glyphs(3)[::-1].copy()
    y_tr = np.array([0, 1, 2, 3, 4, 9]) + offset
    y_te = np.array([5, 6, 7]) + offset
    write_emnist(tmp_path / "EMNIST" / "raw", split, x_tr, y_tr, x_te, y_te)
    ds = load_dataset(name, tmp_path)
    np.testing.assert_array_equal(ds.x_train, x_tr)  # upright again
    np.testing.assert_array_equal(ds.x_test, x_te)
    assert ds.x_train[0, :, 0].tolist()[1:] == [100] * 27  # left edge stays left
    np.testing.assert_array_equal(ds.y_train, y_tr - offset)
    np.testing.assert_array_equal(ds.y_test, y_te - offset)
    expected_classes = {"balanced": 47, "letters": 26, "digits": 10}[split]
    assert ds.num_classes == expected_classes
    assert (tmp_path / f"{name}.npz").is_file()
    for f in (tmp_path / "EMNIST" / "raw").iterdir():
        f.unlink()
    clear_dataset_caches()
    np.testing.assert_array_equal(load_dataset(name, tmp_path).x_train, x_tr)


def test_fashion_idx_in_data_dir_and_cache(tmp_path: Path) -> None:
    x_tr, x_te = tiny_gray(5, 3), tiny_gray(2, 4)
    y_tr, y_te = np.array([9, 0, 0, 3, 8]), np.array([1, 2])
    write_mnist_like(tmp_path, x_tr, y_tr, x_te, y_te, gz=True)
    ds = load_dataset("fashion-mnist", tmp_path)
    np.testing.assert_array_equal(ds.x_train, x_tr)
    np.testing.assert_array_equal(ds.x_test, x_te)
    assert ds.y_train.tolist() == y_tr.tolist() and ds.class_names[0] == "T-shirt/top"
    assert (tmp_path / "fashion-mnist.npz").is_file()
    for f in tmp_path.glob("*-ubyte.gz"):
        f.unlink()
    clear_dataset_caches()
    np.testing.assert_array_equal(load_dataset("fashion_mnist", tmp_path).y_test, y_te)


def test_cache_write_failure_is_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_svhn(tmp_path, np.array([1, 2]), np.array([3]))

    def fail(*args, **kwargs):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(sources, "_write_npz_atomic", fail)
    ds = load_dataset("svhn", tmp_path)
    assert ds.y_train.tolist() == [1, 2] and not (tmp_path / "svhn.npz").exists()


# ---------------------------------------------------------------------------
# download=True through (faked) torchvision
# ---------------------------------------------------------------------------


@pytest.fixture
def tv_datasets():
    from fedunl_flwr.torchvision_compat import torchvision

    return torchvision.datasets


def test_download_svhn_fills_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tv_datasets
) -> None:
    calls: list[tuple[str, str, bool]] = []
    digits = {"train": np.array([0, 5, 9, 0]), "test": np.array([1, 0])}

    class FakeSVHN:
        def __init__(
            self, root: str, split: str = "train", download: bool = False, **kw
        ) -> None:
            calls.append((root, split, download))
            write_svhn_split(Path(root), split, digits[split])

    monkeypatch.setattr(tv_datasets, "SVHN", FakeSVHN)
    with pytest.raises(DatasetNotFoundError):
        load_dataset("svhn", tmp_path)  # download=False never calls torchvision
    assert calls == []
    ds = load_dataset("svhn", tmp_path, download=True)
    assert calls and all(root == str(tmp_path / "raw") and dl for root, _, dl in calls)
    assert {split for _, split, _ in calls} == {"train", "test"}
    assert (tmp_path / "raw" / "train_32x32.mat").is_file()
    assert (tmp_path / "svhn.npz").is_file()
    np.testing.assert_array_equal(ds.y_train, digits["train"])
    np.testing.assert_array_equal(ds.y_test, digits["test"])


def test_download_emnist_uncompressed_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tv_datasets
) -> None:
    x_tr, x_te = upright_glyphs(4), upright_glyphs(2)

    class FakeEMNIST:
        def __init__(
            self,
            root: str,
            split: str,
            train: bool = True,
            download: bool = False,
            **kw,
        ) -> None:
            assert download and split == "balanced"
            # torchvision extracts the .gz files: plain idx files in <root>/EMNIST/raw
            write_emnist(
                Path(root) / "EMNIST" / "raw",
                split,
                x_tr,
                np.array([0, 46, 3, 4]),
                x_te,
                np.array([1, 2]),
                gz=False,
            )

    monkeypatch.setattr(tv_datasets, "EMNIST", FakeEMNIST)
    ds = load_dataset("emnist", tmp_path, download=True)
    np.testing.assert_array_equal(ds.x_train, x_tr)
    assert ds.y_train.tolist() == [0, 46, 3, 4] and ds.num_classes == 47
    assert (tmp_path / "emnist.npz").is_file()


def test_download_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tv_datasets
) -> None:
    class Offline:
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError("no network here")

    monkeypatch.setattr(tv_datasets, "CIFAR100", Offline)
    with pytest.raises(DatasetNotFoundError, match="no network here") as err:
        load_dataset("cifar100", tmp_path, download=True)
    assert "cifar100" in str(err.value)


def clear_dataset_caches() -> None:
    """Forget every dataset cached in this process (between tests that rewrite files)."""
    sources._load_cached.cache_clear()
    sources._load_shared_cached.cache_clear()

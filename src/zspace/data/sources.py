"""Where data comes from: named data sets and the user's own files.

Named sets are looked for, in order, in ``$ZSPACE_DATA``, ``/usr/share/datasets``
(Debian's dataset-* packages) and the user cache (``$XDG_CACHE_HOME/zspace`` or
``~/.cache/zspace``). Fashion-MNIST and MNIST are downloaded from their official
sources into the cache, with the published MD5 checksums verified, only when no
local copy exists and the network answers.
"""
from __future__ import annotations

import array
import csv
import dataclasses
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..core.io import NPY_ERRORS, available_memory, regular_file_size
from ..core.io import load_npy as read_npy   # load_npy below is the data-set reader
from ..errors import DataError
from .dataset import ArrayData, Dataset, DataSplits
from .idx import read_idx
from .images import ImageFolder, is_zip, split_folders
from .shards import ShardStore, is_store

# Official files and MD5 checksums, as published by the data sets' authors.
_IDX_SETS = {
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "files": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror of LeCun's files
        "files": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
}
NAMED_DATASETS = ("fashion-mnist", "mnist", "digits", "shapes", "cifar10", "celeba", "frey-faces",
                  "olivetti-faces")
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
    "digits": tuple(str(i) for i in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # Debian's dataset-* packages


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "zspace"


def search_dirs(name: str) -> list[Path]:
    """Folders where the named data set may live, in search order."""
    dirs = []
    if os.environ.get("ZSPACE_DATA"):
        root = Path(os.environ["ZSPACE_DATA"])
        dirs += [root / name, root]
    dirs += [SYSTEM_DATA_DIR / name, cache_dir() / name]
    return dirs


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Downloads ``url`` to ``dest`` atomically; raises DataError unless the MD5 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
        got = _md5(Path(tmp))
        if got != md5:
            raise DataError(f"{url}: checksum mismatch (MD5 {got}, expected {md5}); file discarded")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"cannot download {url}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _find_idx_folder(name: str) -> Path | None:
    files = _IDX_SETS[name]["files"]
    for d in search_dirs(name):
        for suffix in (".gz", ""):  # accept decompressed copies too
            if all((d / f.replace(".gz", suffix)).is_file() for f in files):
                return d
    return None


def _load_idx_pair(folder: Path, prefix: str, name: str, gz: bool) -> ArrayData:
    ext = ".gz" if gz else ""
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte{ext}")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}")
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{folder}: expected (N, H, W) images and (N,) labels, "
                        f"got {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} {prefix} images but {len(labels)} labels")
    return ArrayData.from_arrays(images, labels, name=f"{name}/{prefix}")


def load_idx_dataset(name: str, *, download_missing: bool = True) -> DataSplits:
    """Fashion-MNIST or MNIST from the official IDX files (see module docstring)."""
    folder = _find_idx_folder(name)
    if folder is None and name == "mnist":
        for d in search_dirs(name):
            if (d / "mnist.npz").is_file():
                return load_npz(d / "mnist.npz", name="mnist")
    if folder is None:
        if not download_missing:
            raise DataError(_missing_message(name))
        spec = _IDX_SETS[name]
        folder = cache_dir() / name
        try:
            for fname, md5 in spec["files"].items():
                if not (folder / fname).is_file():
                    download(spec["url"] + fname, folder / fname, md5)
        except DataError as e:
            raise DataError(f"{_missing_message(name)}; download failed: {e}") from None
    gz = (folder / "t10k-images-idx3-ubyte.gz").is_file()
    return DataSplits(_load_idx_pair(folder, "train", name, gz),
                      _load_idx_pair(folder, "t10k", name, gz), name)


def _missing_message(name: str) -> str:
    where = ", ".join(str(d) for d in search_dirs(name))
    hint = " (Debian: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
    return f"{name} not found in {where}{hint}; set ZSPACE_DATA to a folder holding it"


def load_digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """scikit-learn's 8x8 digits (1,797 images, values 0-16) scaled to 8-bit, split by seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return split_holdout(ArrayData.from_arrays(x, d.target, name="digits"), test_fraction, seed)


def split_holdout(data: Dataset, test_fraction: float, seed: int) -> DataSplits:
    """Random train/test split of a single set (fixed by ``seed``): two index views, no copy."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(len(data) * test_fraction))
    if n_test < 1 or n_test >= len(data):
        raise DataError(f"{data.name}: {len(data)} examples are too few to hold out a test split")
    perm = np.random.default_rng(seed).permutation(len(data))
    return DataSplits(data.subset(np.sort(perm[n_test:])), data.subset(np.sort(perm[:n_test])),
                      data.name)


def load_npz(path: str | Path, name: str | None = None, test_fraction: float = 0.1,
             seed: int = 0) -> DataSplits:
    """An ``.npz`` in keras layout (x_train, y_train, x_test, y_test) or with x (and y)."""
    path = Path(path)
    name = name or path.stem
    if regular_file_size(path) == 0:
        raise DataError(f"{path}: empty file, not an .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            # every array is read into memory: their declared sizes (bounding what is read) must fit
            _check_fits(path, sum(i.file_size for i in z.zip.infolist()), ".npz")
            arrays = {k: z[k] for k in z.files}
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: an array's header declares more than the memory free (damaged?)") from None
    except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, *NPY_ERRORS) as e:
        # truncated or bit-flipped archives: bad zip structure, bad CRC, bad deflate stream;
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression method
        raise DataError(f"{path}: cannot read .npz, damaged or not an .npz ({e})") from None
    if "x_train" in arrays and "x_test" in arrays:
        train = ArrayData.from_arrays(arrays["x_train"], arrays.get("y_train"), f"{name}/train")
        test = ArrayData.from_arrays(arrays["x_test"], arrays.get("y_test"), f"{name}/test")
        return DataSplits(train, test, name)
    if "x" in arrays:
        data = ArrayData.from_arrays(arrays["x"], arrays.get("y"), name)
        return split_holdout(data, test_fraction, seed)
    raise DataError(f"{path}: .npz needs arrays x_train and x_test, or x; found {sorted(arrays)}")


def load_csv(path: Path, label_column: str | int | None = None) -> ArrayData:
    """A numeric CSV; a header row is detected; ``label_column`` (name or index) becomes y.

    Rows are parsed one at a time into one float64 buffer (8 bytes a value, at most four
    times the file's size), and a file whose buffer would not fit in free memory is refused."""
    size = regular_file_size(path)
    _check_fits(path, 4 * size, "CSV")
    values, header, width, rows = array.array("d"), None, None, 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for r in csv.reader(f):
                if not r:
                    continue
                try:
                    floats = [float(v) for v in r]
                except ValueError as e:
                    if rows == 0 and header is None:
                        header = r
                        continue
                    raise DataError(f"{path}: non-numeric value on row {rows + 1} ({e})") from None
                if width is None:
                    width = len(r)
                elif len(r) != width:
                    raise DataError(f"{path}: rows have different numbers of columns "
                                    f"({width} and {len(r)} on row {rows + 1})")
                values.extend(floats)
                rows += 1
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text CSV (byte {e.start}: {e.reason}); "
                        f"save it as UTF-8") from None
    except csv.Error as e:   # a field over csv.field_size_limit(), a NUL byte...
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read CSV ({e})") from None
    if rows == 0:
        raise DataError(f"{path}: CSV has a header but no data rows" if header else f"{path}: empty CSV")
    table = np.frombuffer(values, dtype=np.float64).reshape(rows, width)
    y = None
    if label_column is not None:
        if isinstance(label_column, str) and not label_column.lstrip("-").isdigit():
            if header is None or label_column not in header:
                raise DataError(f"{path}: no column named {label_column!r}")
            col = header.index(label_column)
        else:
            col = int(label_column)
            if not -table.shape[1] <= col < table.shape[1]:
                raise DataError(f"{path}: label column {col} out of range")
        y = table[:, col].copy()
        table = np.delete(table, col, axis=1)
    return ArrayData.from_arrays(table.astype(np.float32), y, name=path.stem)


def _check_fits(path: Path, nbytes: int, what: str) -> None:
    """Refuses a file whose reading needs ``nbytes`` of memory when less than that is free."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise DataError(f"{path}: reading this {what} needs about {nbytes / 2**30:.1f} GiB, more than the "
                        f"{free / 2**30:.1f} GiB of memory free; convert it to .npy (memory-mapped)")


def load_images(path: Path, *, image_size: int | None = None, channels: int | None = None,
                crop: int | None = None, skip_bad: bool = False, test_fraction: float = 0.1,
                seed: int = 0, name: str | None = None, classes=None) -> DataSplits:
    """A folder or zip of images: its train/ and test/ folders, or a held-out share of all."""
    opts = dict(image_size=image_size, channels=channels, crop=crop, skip_bad=skip_bad, classes=classes)
    splits = split_folders(path)
    name = name or path.stem
    if splits is not None:
        train = ImageFolder(path, splits[0], name=f"{name}/train", **opts)
        test = ImageFolder(path, splits[1], name=f"{name}/test", **{**opts, "classes": train.classes})
        return DataSplits(train, test, name)
    return split_holdout(ImageFolder(path, name=name, **opts), test_fraction, seed)


def load_npy(path: Path) -> ArrayData:
    """A ``.npy`` of any numeric dtype, memory-mapped: rows are read (and checked) per batch."""
    return ArrayData.from_arrays(read_npy(path), name=path.stem)


def load_file(path: str | Path, *, test_fraction: float = 0.1, seed: int = 0,
              label_column: str | int | None = None, image_size: int | None = None,
              channels: int | None = None, skip_bad: bool = False) -> DataSplits:
    """The user's own data: .npy, .npz, .csv, an IDX file (optionally .gz), a shard store,
    or a folder or zip of images."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir() and is_store(path):
        return split_holdout(ShardStore(path), test_fraction, seed)
    if path.is_dir() and is_store(path / "train") and is_store(path / "test"):   # zspace data pack
        return DataSplits(ShardStore(path / "train", f"{path.name}/train"),
                          ShardStore(path / "test", f"{path.name}/test"), path.name)
    if not path.is_dir():
        regular_file_size(path)   # a FIFO or device behind the name is refused before it is opened
    if path.is_dir() or is_zip(path):
        return load_images(path, image_size=image_size, channels=channels, skip_bad=skip_bad,
                           test_fraction=test_fraction, seed=seed)
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith(".npz"):
        return load_npz(path, test_fraction=test_fraction, seed=seed)
    if suffixes.endswith(".npy"):
        return split_holdout(load_npy(path), test_fraction, seed)
    if suffixes.endswith(".csv"):
        return split_holdout(load_csv(path, label_column), test_fraction, seed)
    if "idx" in path.name or "ubyte" in path.name:
        return split_holdout(ArrayData.from_arrays(read_idx(path), name=path.stem),
                             test_fraction, seed)
    raise DataError(f"{path}: unknown file type; use .npy, .npz, .csv, an IDX file, a shard store, "
                    f"or a folder or .zip of images")


# ---- named image sets -------------------------------------------------------------------------
# Where each is looked for inside the search folders (module docstring), first match wins.
_IMAGE_SETS = {
    "cifar10": ("cifar10-jpg.zip", "cifar10.zip", "cifar10"),
    "celeba": ("celeba-10k.zip", "celeba.zip", "img_align_celeba.zip", "img_align_celeba", "celeba"),
    "frey-faces": ("frey-faces.npz",),
    "olivetti-faces": ("olivetti-faces.npz",),
}
CELEBA_CROP = 148   # the usual central square of the 178x218 aligned faces (e.g. Larsen et al. 2016)


def find_named(name: str) -> Path:
    for d in search_dirs(name):
        for candidate in _IMAGE_SETS[name]:
            p = d / candidate
            if p.exists() and p.resolve() != d.resolve():
                return p
    where = ", ".join(str(d) for d in search_dirs(name))
    raise DataError(f"{name} not found in {where} (looked for {', '.join(_IMAGE_SETS[name])}); "
                    f"set ZSPACE_DATA to a folder holding it, or pass its path to --data")


def load_named_images(name: str, *, image_size: int | None = None, channels: int | None = None,
                      test_fraction: float = 0.1, seed: int = 0, skip_bad: bool = False) -> DataSplits:
    path = find_named(name)
    if name == "cifar10":
        return load_images(path, image_size=image_size, channels=channels, skip_bad=skip_bad,
                           name="cifar10", classes=CLASS_NAMES["cifar10"])
    if name == "celeba":     # unlabelled faces: a held-out tenth is the test split
        return load_images(path, image_size=image_size or 64, channels=channels or 3, crop=CELEBA_CROP,
                           skip_bad=skip_bad, test_fraction=test_fraction, seed=seed, name="celeba")
    if image_size is not None or channels not in (None, 1):
        raise DataError(f"{name} is 1-channel {'28x20' if name == 'frey-faces' else '64x64'} as stored; "
                        f"--image-size and --channels do not apply")
    return load_npz(path, name=name, test_fraction=test_fraction, seed=seed)


def load_dataset(source, *, test_fraction: float = 0.1, seed: int = 0, label_column=None,
                 download_missing: bool = True, image_size: int | None = None,
                 channels: int | None = None, skip_bad: bool = False) -> DataSplits:
    """A named data set (see NAMED_DATASETS), a path (file, shard store, image folder or zip),
    or DataSplits. ``image_size``/``channels``/``skip_bad`` apply to images decoded from files."""
    if isinstance(source, DataSplits):
        return source
    source = str(source)
    if source in _IDX_SETS:
        splits = load_idx_dataset(source, download_missing=download_missing)
    elif source == "digits":
        splits = load_digits_dataset(seed=seed)
    elif source == "shapes":                 # procedural, with ground-truth factors (data/shapes.py)
        from .shapes import Shapes

        splits = Shapes().dataset(test_fraction=test_fraction, seed=seed)
    elif source in _IMAGE_SETS:
        splits = load_named_images(source, image_size=image_size, channels=channels,
                                   test_fraction=test_fraction, seed=seed, skip_bad=skip_bad)
    elif os.sep in source or "." in source or Path(source).exists():
        splits = load_file(source, test_fraction=test_fraction, seed=seed, label_column=label_column,
                           image_size=image_size, channels=channels, skip_bad=skip_bad)
        source = str(Path(source).resolve())
    else:
        raise DataError(f"unknown data set {source!r}: use {', '.join(NAMED_DATASETS)} or a path")
    return dataclasses.replace(splits, source=source)

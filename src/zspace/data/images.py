"""Images decoded on the fly from a folder or a zip archive of one.

The class of an image is the name of its parent folder (``cat/0001.jpg``); a tree whose
top holds ``train/`` and ``test/`` gives the two splits. With classes, the images are listed
interleaved, each class spread evenly over the list, so that the first N (an evaluation's
``limit``) hold every class in proportion. Every format Pillow reads is
accepted. Each read opens only the files of the batch, converts them to grey or RGB,
centre-crops (``crop``: a square of that many pixels, else the largest central square
when resizing) and resizes to ``image_size`` (antialiased bilinear), and returns uint8
(B, C, H, W). JPEGs are decoded at a reduced scale when that still leaves at least the
requested size (Pillow's draft mode): same pipeline, several times faster for big photos.

A file that does not decode, an image of another size (without ``image_size``) or a grey
image in an RGB set (without ``channels``) raises one DataError naming the file, or, with
``skip_bad=True``, is left out of its batch and counted by the loader.
"""
from __future__ import annotations

import functools
import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..core.io import regular_file_size
from ..errors import DataError
from .dataset import Dataset

MAX_IMAGE_BYTES = 1 << 30   # one encoded image file; a bigger one is damage (or a zip bomb)


def image_extensions() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def _list_files(root: Path) -> list[str]:
    """Relative POSIX paths of every file under a folder or inside a zip (cached per mtime)."""
    try:
        stamp = root.stat().st_mtime_ns
    except OSError:
        stamp = None
    return list(_listing(root, stamp))


@functools.lru_cache(maxsize=16)
def _listing(root: Path, _stamp) -> tuple[str, ...]:
    return tuple(_walk(root))


def _walk(root: Path) -> list[str]:
    if is_zip(root):
        return [n for n in open_zip(root).namelist() if not n.endswith("/")]
    if not root.is_dir():
        raise DataError(f"{root}: no such folder or zip archive")
    out = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = Path(folder).relative_to(root)
        out += [(rel / f).as_posix() for f in sorted(files)]
    return out


def image_members(root: Path, prefix: str = "") -> list[str]:
    """Image files under ``prefix`` (sorted), skipping hidden files and macOS resource forks."""
    exts = image_extensions()
    head = prefix.rstrip("/") + "/" if prefix else ""
    keep = []
    for name in _list_files(root):
        if head and not name.startswith(head):
            continue
        if name.startswith((".", "__MACOSX")) or "/." in name or "__MACOSX/" in name:
            continue
        dot = name.rfind(".")
        if dot > name.rfind("/") and name[dot:].lower() in exts:
            keep.append(name)
    return sorted(keep)


_ZIPS: dict[tuple[str, int], zipfile.ZipFile] = {}


def open_zip(root: Path) -> zipfile.ZipFile:
    """One open handle per archive, version and process (handles do not survive a fork; an
    archive replaced under the same name is opened again)."""
    try:
        st = os.stat(root)
    except OSError as e:
        raise DataError(f"{root}: cannot be read ({e.strerror or e})") from None
    key = (str(root), os.getpid(), st.st_mtime_ns, st.st_size, st.st_ino)
    if key not in _ZIPS:
        for old in [k for k in _ZIPS if k[:2] == key[:2]]:
            _ZIPS.pop(old).close()
        try:
            _ZIPS[key] = zipfile.ZipFile(root)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise DataError(f"{root}: not a readable zip archive ({e})") from None
    return _ZIPS[key]


def split_folders(root: Path) -> tuple[str, str] | None:
    """('PREFIX/train', 'PREFIX/test') when the tree (below one optional top folder) has both."""
    tops = {}
    for name in _list_files(root):
        parts = PurePosixPath(name).parts
        for depth in (0, 1):
            if len(parts) > depth + 1:
                tops.setdefault("/".join(parts[:depth + 1]), True)
    for base in [""] + sorted({k.split("/")[0] for k in tops}):
        tr, te = (f"{base}/train" if base else "train"), (f"{base}/test" if base else "test")
        if tr in tops and te in tops:
            return tr, te
    return None


class ImageFolder(Dataset):
    """Images under ``prefix`` of a folder or zip, decoded per batch (see module docstring).

    ``channels``: 1 (grey) or 3 (RGB); None takes the first image's. ``image_size``: the
    side of the square output (None: the images' own size, which must then be shared).
    ``crop``: side of a central square cut before resizing (CelebA's usual 148).
    """

    def __init__(self, root: str | Path, prefix: str = "", *, image_size: int | None = None,
                 channels: int | None = None, crop: int | None = None, skip_bad: bool = False,
                 classes: tuple[str, ...] | None = None, labels: bool = True, name: str | None = None):
        self.root = Path(root)
        self.prefix, self.skip_bad, self.crop = prefix.rstrip("/"), skip_bad, crop
        if channels not in (None, 1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels!r}")
        for what, v in (("image_size", image_size), ("crop", crop)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise DataError(f"{what} must be a positive integer, got {v!r}")
        self.files = image_members(self.root, self.prefix)
        where = f"{self.root}" + (f" ({self.prefix}/)" if self.prefix else "")
        if not self.files:
            raise DataError(f"{where}: no image files (formats Pillow reads: .png, .jpg, ...)")
        self.name = name or (PurePosixPath(self.prefix).name if self.prefix else self.root.stem)
        parents = [f.rpartition("/")[0].rpartition("/")[2] for f in self.files]  # class folder names
        names = classes or tuple(sorted(set(parents)))
        self._classes = names if labels and len(names) > 1 else None
        if self._classes is not None:
            lookup = {c: i for i, c in enumerate(self._classes)}
            missing = sorted(set(parents) - set(lookup))
            if missing:
                raise DataError(f"{where}: class folder(s) {', '.join(missing[:3])} not among {list(names)}")
            self._y = np.array([lookup[p] for p in parents], np.int64)
            self._interleave_classes()
        else:
            self._y = None
        first = self._open(0)[0]                   # the first image fixes mode and size
        self.channels = channels or (1 if first.mode in ("1", "L", "I", "I;16", "F") else 3)
        self._native = image_size is None
        if image_size is None:
            w, h = first.size
            if crop is not None:
                w = h = crop
            self.size = (h, w)
        else:
            self.size = (image_size, image_size)
        self.auto_channels = channels is None

    def _interleave_classes(self) -> None:
        """Lists the files so that every prefix holds each class in proportion to its size: the
        j-th of a class's n files (in name order) sits at (j + 1/2) / n along the list. Folders
        come class by class, so in name order CIFAR-10's first 1,000 test images were all
        airplanes, and anything read from the start (an evaluation's ``limit``, "the first N
        test images") saw one class."""
        counts = np.bincount(self._y)
        rank = np.empty(len(self._y), np.int64)
        for c in np.flatnonzero(counts):
            rank[self._y == c] = np.arange(counts[c])
        order = np.lexsort((self._y, (rank + 0.5) / counts[self._y]))
        self.files = [self.files[i] for i in order]
        self._y = self._y[order]

    # ---- contract -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.files)

    @property
    def example_shape(self):
        return (self.channels, *self.size)

    @property
    def dtype(self):
        return np.dtype(np.uint8)

    @property
    def y(self):
        return self._y

    @property
    def classes(self):
        return self._classes

    def read_batch(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), *self.example_shape), np.uint8)
        kept = []
        for row, i in enumerate(idx):
            try:
                out[len(kept)] = self._decode(int(i))
                kept.append(row)
            except DataError:
                if not self.skip_bad:
                    raise
        return out[:len(kept)], np.asarray(kept, np.int64)

    def read(self, indices):
        return self.read_batch(indices)[0]  # with skip_bad the caller asked for fewer rows

    # ---- decoding -----------------------------------------------------------------------------
    def where(self, i: int) -> str:
        return f"{self.root}:{self.files[i]}" if is_zip(self.root) else str(self.root / self.files[i])

    def _bytes(self, i: int) -> bytes:
        if is_zip(self.root):
            archive = open_zip(self.root)
            try:
                size = archive.getinfo(self.files[i]).file_size   # what reading it would allocate
                if size > MAX_IMAGE_BYTES:
                    raise DataError(f"{self.where(i)}: {size} bytes uncompressed is too large for one "
                                    f"image (damaged archive?)")
                return archive.read(self.files[i])
            except (zipfile.BadZipFile, OSError, KeyError, EOFError, zlib.error, RuntimeError,
                    NotImplementedError) as e:
                # zlib.error: a damaged deflate stream; RuntimeError: an encrypted member;
                # NotImplementedError: an unknown compression method
                raise DataError(f"{self.where(i)}: cannot be read from the archive ({e})") from None
        path = self.root / self.files[i]
        size = regular_file_size(path)   # a FIFO or a link to /dev/zero is refused before it is read
        if size > MAX_IMAGE_BYTES:
            raise DataError(f"{self.where(i)}: {size} bytes is too large for one image")
        try:
            return path.read_bytes()
        except OSError as e:
            raise DataError(f"{self.where(i)}: cannot be read ({e.strerror or e})") from None

    def _open(self, i: int, scaled: bool = False):
        """(image, decoded width / stored width). With ``scaled`` a JPEG is decoded at the smallest
        scale that still gives the output size (Pillow's draft mode)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():   # Pillow warns between 89M and 179M pixels, refuses above
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(self._bytes(i)))
            w0 = img.size[0]
            if scaled and img.format == "JPEG":
                w, h = img.size
                side = min(w, h) if self.crop is None else min(self.crop, w, h)
                k = self.size[0] / side             # output pixels per source pixel
                img.draft(img.mode, (max(1, int(np.ceil(w * k))), max(1, int(np.ceil(h * k)))))
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as e:
            raise DataError(f"{self.where(i)}: not a readable image ({e})") from None
        return img, img.size[0] / w0

    def _decode(self, i: int) -> np.ndarray:
        from PIL import Image

        img, scale = self._open(i, scaled=not self._native)
        grey = img.mode in ("1", "L", "I", "I;16", "F", "LA")
        if self.auto_channels and self.channels == 3 and grey:
            raise DataError(f"{self.where(i)}: a grey image in an RGB set; pass channels=3 "
                            f"(--channels 3) to convert every image to RGB, or 1 for grey")
        if self.auto_channels and self.channels == 1 and not grey:
            raise DataError(f"{self.where(i)}: a colour image in a grey set; pass channels=3 "
                            f"(--channels 3) or 1 to convert every image")
        mode = "L" if self.channels == 1 else "RGB"
        if img.mode != mode:                 # convert copies the image even when nothing changes
            with warnings.catch_warnings():  # "palette images with transparency...": converted right
                warnings.simplefilter("ignore", UserWarning)
                img = img.convert(mode)
        w, h = img.size
        if self.crop is not None:
            c = int(round(self.crop * scale))
            if c > min(w, h):
                raise DataError(f"{self.where(i)}: {w / scale:.0f}x{h / scale:.0f} is smaller than "
                                f"the {self.crop}-pixel crop")
            left, top = (w - c) // 2, (h - c) // 2
            img = img.crop((left, top, left + c, top + c))
        elif not self._native and w != h:
            c = min(w, h)
            left, top = (w - c) // 2, (h - c) // 2
            img = img.crop((left, top, left + c, top + c))
        if self._native:
            if (img.size[1], img.size[0]) != self.size:
                raise DataError(f"{self.where(i)}: {img.size[0]}x{img.size[1]} differs from the first "
                                f"image's {self.size[1]}x{self.size[0]}; pass image_size "
                                f"(--image-size) to resize every image")
        else:
            img = img.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

"""Text corpora as documents: a file split deterministically, in file order."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..core.io import read_bytes
from ..errors import DataError

END_OF_TEXT = "<|endoftext|>"
SPLITS = ("auto", "endoftext", "blank-lines", "lines")


def split_documents(text: str, split: str = "auto") -> list[str]:
    """Documents of a text, stripped, empty ones dropped, in order.

    ``auto``: on ``<|endoftext|>`` when the text has it, else on blank lines. The TinyStories
    files in shared/data/text mark no story boundaries (stories and their paragraphs are both
    separated by one blank line), so there a document is a paragraph.
    """
    if split not in SPLITS:
        raise DataError(f"unknown corpus split {split!r}: use one of {', '.join(SPLITS)}")
    if split == "auto":
        split = "endoftext" if END_OF_TEXT in text else "blank-lines"
    if split == "endoftext":
        parts = text.split(END_OF_TEXT)
    elif split == "blank-lines":
        parts = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    else:
        parts = text.splitlines()
    return [p.strip() for p in parts if p.strip()]


def read_corpus(path: str | Path, split: str = "auto", *, max_documents: int | None = None) -> list[str]:
    """The documents of a UTF-8 text file (see :func:`split_documents`); DataError when none."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: corpus file not found")
    try:
        text = read_bytes(path, "corpus", copies=6).decode("utf-8")   # bytes, text, documents
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text corpus (byte {e.start}: {e.reason})") from None
    docs = split_documents(text, split)
    if not docs:
        raise DataError(f"{path}: the corpus holds no text")
    return docs[:max_documents] if max_documents is not None else docs


def corpus_digest(documents) -> str:
    """SHA-256 over the documents in order: a resumed harvest checks it reads the same corpus."""
    h = hashlib.sha256()
    for d in documents:
        b = d.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()

"""Content hashes of files and folders: what names a base, an expert or a released file.

A result names the weights it came from by their bytes, not by the recipe that built them: the
same recipe built with another library release, on another machine, gives other weights, and two
rows are comparable only when they name the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 23
_BIG_CHUNK = 1 << 26


def sha256_file(path: Path) -> str:
    """The hex sha256 of one file, read in chunks (what `sha256sum` prints)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_fingerprint(files: Iterable[Path]) -> str:
    """`sha256:<hex>` over the names, sizes and bytes of `files`, in name order.

    Read in large chunks into one reused buffer: a model's weights are gigabytes, and when this
    runs on a thread beside other Python work (`soupbench merge` hashes the base while it
    prepares the merge) every chunk is a hand-over of the GIL, which costs the other thread up to
    a switch interval each time."""
    digest = hashlib.sha256()
    buffer = bytearray(_BIG_CHUNK)
    view = memoryview(buffer)
    for path in sorted(files, key=lambda p: p.name):
        digest.update(f"{path.name}|{path.stat().st_size}|".encode())
        with path.open("rb", buffering=0) as handle:
            while got := handle.readinto(buffer):
                digest.update(view[:got])
    return f"sha256:{digest.hexdigest()}"


def text_digest(texts: Iterable[str]) -> str:
    """A short sha256 of a stream of texts (a corpus, a skill's examples), each one delimited."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]

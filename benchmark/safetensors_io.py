"""safetensors read and written one tensor at a time with plain file I/O (pread and pwrite).

The safetensors library reads by memory-mapping the file, so every page a merge touches stays in
the process's resident set until the file is closed (a streamed 1B merge showed the whole base in
its peak RSS), and it writes only a whole dict of tensors at once, so a writer must hold a full
shard in memory and then a serialized copy of it. A merge knows the layout of its output before it
starts (the base's tensors, names, dtypes and shapes unchanged), so here each output shard is
created with its final header and each tensor is written at its offset as soon as it is merged,
in whatever order the merge produces them; nothing waits in memory. Reading puts each tensor's
bytes straight into a tensor allocated for it, with no mapping.

The format (https://github.com/huggingface/safetensors#format): an 8-byte little-endian header
length N, N bytes of JSON ({name: {"dtype", "shape", "data_offsets": [begin, end]}} plus an
optional "__metadata__" of strings), then the tensors' bytes, contiguous, offsets relative to the
end of the header. The files written here are read back by `safetensors.safe_open` and
transformers' `from_pretrained` (tests/test_safetensors_io.py).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_IO_CHUNK = 1 << 28  # one pread/pwrite moves at most this much (Linux caps a call below 2 GiB)
_HEADER_ALIGN = 8  # safetensors pads the header with spaces so the data starts 8-byte aligned


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: its dtype string, shape and byte range in the file."""

    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute offsets in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> tuple[dict[str, Entry], dict[str, str]]:
    """The entries (in offset order) and metadata of a safetensors file; ValueError when the header
    does not describe exactly the file's bytes."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: too short for a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise ValueError(f"{path}: header length {length} exceeds the file")
        header = json.loads(handle.read(length))
    metadata = header.pop("__metadata__", None) or {}
    start, entries, position = 8 + length, {}, 0
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        if begin != position or end < begin:
            raise ValueError(f"{path}: tensor {name} is not stored contiguously after the previous one")
        entries[name] = Entry(info["dtype"], tuple(info["shape"]), start + begin, start + end)
        position = end
    if start + position != size:
        raise ValueError(f"{path}: the header covers {start + position} bytes, the file has {size}")
    return entries, metadata


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    """A writable view of a contiguous CPU tensor's bytes."""
    flat = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)
    return memoryview(flat.numpy()).cast("B")


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done : done + _IO_CHUNK]], offset + done)
        if got <= 0:
            raise OSError(f"unexpected end of file at byte {offset + done}")
        done += got


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done : done + _IO_CHUNK], offset + done)


class TensorReader:
    """Tensors of one safetensors file, each read into memory of its own when asked for."""

    def __init__(self, path: Path) -> None:
        if sys.byteorder != "little":  # the bytes are little-endian; torch would read them as native
            raise ValueError("plain-I/O safetensors reading needs a little-endian machine")
        self.path = path
        self.entries, self.metadata = read_header(path)
        self._fd = os.open(path, os.O_RDONLY)

    def tensor(self, name: str) -> torch.Tensor:
        entry = self.entries[name]
        if entry.dtype not in _TORCH_DTYPES:
            raise ValueError(f"{self.path}: tensor {name} has dtype {entry.dtype}, which this reader does not know")
        tensor = torch.empty(entry.shape, dtype=_TORCH_DTYPES[entry.dtype])
        if tensor.numel() * tensor.element_size() != entry.nbytes:
            raise ValueError(f"{self.path}: tensor {name} holds {entry.nbytes} bytes, not those of "
                             f"{entry.dtype} {list(entry.shape)}")
        _pread_into(self._fd, _as_bytes(tensor), entry.begin)
        return tensor

    def raw(self, name: str) -> bytes:
        """The stored bytes of one tensor, whatever its dtype (for copying it through unchanged)."""
        entry = self.entries[name]
        return os.pread(self._fd, entry.nbytes, entry.begin) if entry.nbytes else b""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class Slot:
    """Where one output tensor goes: its shard, its absolute offset, and the input entry whose
    dtype, shape and size it must have."""

    shard: int
    offset: int
    entry: Entry


class PlannedShardWriter:
    """Output shards whose headers are written first, then filled tensor by tensor at their offsets.

    `layout` is every output tensor in file order as (name, the input entry it replaces: same
    dtype, shape and size); consecutive tensors share a shard until it would pass `max_bytes` (a
    tensor bigger than that gets a shard of its own). Shards get temporary names (`paths`); the
    caller names them once `missing()` is empty (`benchmark.streaming.ShardWriter.finish`), so a
    failed merge never leaves a plausible checkpoint.
    """

    def __init__(self, folder: Path, layout: list[tuple[str, Entry]], max_bytes: int,
                 metadata: dict[str, str] | None = None) -> None:
        self.folder = folder
        groups: list[list[tuple[str, Entry]]] = [[]]
        filled = 0
        for name, entry in layout:
            if groups[-1] and filled + entry.nbytes > max_bytes:
                groups.append([])
                filled = 0
            groups[-1].append((name, entry))
            filled += entry.nbytes
        self.slots: dict[str, Slot] = {}
        self.shard_names: list[list[str]] = []
        self.paths: list[Path] = []
        self._fds: list[int] = []
        self.total_bytes = 0
        for index, group in enumerate(groups):
            header, offsets, position = {"__metadata__": dict(metadata or {"format": "pt"})}, {}, 0
            for name, entry in group:
                header[name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                                "data_offsets": [position, position + entry.nbytes]}
                offsets[name] = position
                position += entry.nbytes
            encoded = json.dumps(header, separators=(",", ":")).encode()
            encoded += b" " * (-len(encoded) % _HEADER_ALIGN)
            start = 8 + len(encoded)
            path = folder / f".shard-{index:05d}.safetensors"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            os.pwrite(fd, struct.pack("<Q", len(encoded)) + encoded, 0)
            os.ftruncate(fd, start + position)
            self.slots.update({name: Slot(index, start + offsets[name], entry) for name, entry in group})
            self.paths.append(path)
            self.shard_names.append([name for name, _ in group])
            self.total_bytes += position
        self._written: set[str] = set()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        slot = self.slots.get(name)
        if slot is None:
            raise ValueError(f"tensor {name} is not part of the output layout")
        if name in self._written:
            raise ValueError(f"tensor {name} written twice")
        if _DTYPE_NAMES.get(tensor.dtype) != slot.entry.dtype or tuple(tensor.shape) != slot.entry.shape:
            raise ValueError(f"tensor {name} is {tensor.dtype} {list(tensor.shape)}, the layout says "
                             f"{slot.entry.dtype} {list(slot.entry.shape)}")
        _pwrite_all(self._fds[slot.shard], _as_bytes(tensor.contiguous()), slot.offset)
        self._written.add(name)

    def write_raw(self, name: str, data: bytes) -> None:
        """Bytes already in the output's format (a tensor copied through from an input file)."""
        slot = self.slots.get(name)
        if slot is None or name in self._written or len(data) != slot.entry.nbytes:
            raise ValueError(f"tensor {name}: not in the layout, written twice, or {len(data)} bytes "
                             f"instead of {slot.entry.nbytes if slot else '?'}")
        _pwrite_all(self._fds[slot.shard], memoryview(data), slot.offset)
        self._written.add(name)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def missing(self) -> list[str]:
        return [name for name in self.slots if name not in self._written]


_DTYPE_NAMES = {dtype: name for name, dtype in _TORCH_DTYPES.items()}

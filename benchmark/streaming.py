"""A merge streamed from safetensors files to safetensors shards, with no copy of the model in memory.

`soupbench merge` on a 7B model needs a second 14-28 GB copy of the base when it loads the model,
merges in place and saves. Here the base is read one tensor at a time, each into memory of its
own (`benchmark.safetensors_io`: plain reads, not the library's memory map, whose touched pages
would all count in the resident set), the output shards are laid out from the base's header
before the merge starts, and each merged module is written at its place in its shard as soon as
it is ready: memory holds the modules in flight, never a shard and never the model. Tensors no
delta touches are copied through byte for byte. The output is the hub's layout (`model.safetensors`, or `model-0000i-of-0000N.safetensors`
with `model.safetensors.index.json`), and its tensors are bit for bit those the in-memory path
(`benchmark.apply.apply_deltas` then `save_pretrained`) writes: both use `merged_weight`.

Which modules exist, their kind (Linear, GPT-2's transposed Conv1D) and their shapes come from the
model built on the meta device from the base's config, which costs no memory for weights.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers.pytorch_utils import Conv1D

from benchmark.adapters import target_layer
from benchmark.apply import DeltaStats, check_delta, dense_delta, merged_weight
from benchmark.method import Delta
from benchmark.safetensors_io import Entry, PlannedShardWriter, TensorReader

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 2 * 2**30  # small enough to stay far below the model, large enough to be few files
_WRITES_IN_FLIGHT = 2  # merged tensors waiting for the writer thread: memory of two modules at most


class BaseCheckpoint:
    """A local model folder's safetensors weights (one file or a sharded index), read lazily."""

    def __init__(self, folder: Path, files: dict[str, Path]) -> None:
        self.folder = folder
        self._file_of = files  # tensor name -> file, in the checkpoint's order
        self._readers: dict[Path, TensorReader] = {}

    @classmethod
    def find(cls, folder: str | Path) -> "BaseCheckpoint | None":
        """The checkpoint in `folder`, or None where it is not safetensors on disk (a hub id, .bin)."""
        folder = Path(folder)
        if (folder / INDEX_FILE).is_file():
            index = json.loads((folder / INDEX_FILE).read_text())
            return cls(folder, {name: folder / file for name, file in index["weight_map"].items()})
        if (folder / SINGLE_FILE).is_file():
            with safe_open(str(folder / SINGLE_FILE), framework="pt") as handle:
                return cls(folder, {name: folder / SINGLE_FILE for name in handle.keys()})
        return None

    def names(self) -> list[str]:
        return list(self._file_of)

    def _reader(self, name: str) -> TensorReader:
        file = self._file_of[name]
        if file not in self._readers:
            with safe_open(str(file), framework="pt"):  # the library's own check of the header first
                pass
            self._readers[file] = TensorReader(file)
        return self._readers[file]

    def entry(self, name: str) -> Entry:
        return self._reader(name).entries[name]

    def dtype_of(self, name: str) -> str:
        return self.entry(name).dtype

    def tensor(self, name: str) -> torch.Tensor:
        """A fresh tensor of its own (read, not mapped): the caller may overwrite it."""
        return self._reader(name).tensor(name)

    def raw(self, name: str) -> bytes:
        return self._reader(name).raw(name)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def streaming_obstacle(checkpoint: BaseCheckpoint | None, model: nn.Module, modules: Iterable[str]) -> str | None:
    """Why this base cannot be streamed for these modules (the in-memory path then runs), or None.

    A merged module must be a weight stored under its own name and shared with no other module
    (a tied weight changes in two places in memory), and every floating tensor must already be
    in the dtype transformers loads the model in (the config's `dtype`, else that of the first
    floating tensor), so that copying a tensor through is what loading and saving it would do.
    """
    if checkpoint is None:
        return "the base is not a local folder of safetensors files"
    names = set(checkpoint.names())
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[id(param)] = uses.get(id(param), 0) + 1
    for module in modules:
        if f"{module}.weight" not in names:
            return f"the weight of module {module!r} is not stored under {module}.weight"
        layer = target_layer(model, module)
        if layer is not None and uses.get(id(layer.weight), 0) > 1:
            return f"the weight of module {module!r} is tied to another module's"
    stored = {name: _DTYPES.get(checkpoint.dtype_of(name)) for name in checkpoint.names()}
    floating = [dtype for dtype in stored.values() if dtype is not None]
    wanted = config_dtype(getattr(model, "config", None)) or (floating[0] if floating else None)
    for name, dtype in stored.items():
        if dtype is not None and dtype != wanted:
            return f"tensor {name} is stored as {dtype} but the model loads as {wanted}"
    return None


class ShardWriter:
    """The output shards of a streamed merge: planned from the base's tensors (the output has the
    same names, dtypes and shapes), each tensor written at its place as soon as it is ready.

    `finish` names the shards as the hub does (`model-0000i-of-0000N.safetensors`, or
    `model.safetensors` when there is one) and writes the index when there are several.
    """

    def __init__(self, folder: Path, checkpoint: BaseCheckpoint, max_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        layout = [(name, checkpoint.entry(name)) for name in checkpoint.names()]
        self._planned = PlannedShardWriter(folder, layout, max_bytes)
        self.folder = folder

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self._planned.write(name, tensor)

    def add_raw(self, name: str, data: bytes) -> None:
        self._planned.write_raw(name, data)

    def abort(self) -> None:
        self._planned.close()

    def finish(self) -> list[Path]:
        planned = self._planned
        planned.close()
        missing = planned.missing()
        if missing:
            raise ValueError(f"streamed merge: {len(missing)} tensors were never written (first: {missing[0]})")
        if len(planned.paths) == 1:
            final = self.folder / SINGLE_FILE
            planned.paths[0].rename(final)
            return [final]
        count, weight_map, files = len(planned.paths), {}, []
        for i, (path, names) in enumerate(zip(planned.paths, planned.shard_names), start=1):
            final = self.folder / f"model-{i:05d}-of-{count:05d}.safetensors"
            path.rename(final)
            files.append(final)
            weight_map.update({name: final.name for name in names})
        index = {"metadata": {"total_size": planned.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return files


def stream_merge(
    checkpoint: BaseCheckpoint,
    deltas: Iterable[tuple[str, Delta]],
    model: nn.Module,
    out: Path,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> dict[str, Any]:
    """Write base + deltas to `out` as safetensors shards, reading the base one tensor at a time.

    `model` names the modules and their kinds (a meta-device model is enough). Merged modules are
    written in the order the deltas come (the method's order: DARE's draws depend on it), then every
    other tensor in the checkpoint's order. Returns `apply_deltas`' stats.
    """
    stats = DeltaStats()
    writer = ShardWriter(out, checkpoint, max_shard_bytes)
    # Writes go through one thread of their own, a few tensors behind: a write that waits for the
    # disk (the kernel throttles a writer to the disk's speed) then overlaps reading and merging
    # the next modules instead of stalling them.
    writes = ThreadPoolExecutor(max_workers=1)
    pending: deque[Future[None]] = deque()

    def write(step: Callable[[], None]) -> None:
        pending.append(writes.submit(step))
        while len(pending) > _WRITES_IN_FLIGHT:
            pending.popleft().result()

    try:
        with torch.no_grad():
            for module, delta in deltas:
                if stats.seen(module):
                    raise ValueError(f"apply_deltas: module {module!r} appears twice in the merge result")
                layer = target_layer(model, module)
                check_delta(module, layer, delta)
                dense = dense_delta(delta, "cpu", isinstance(layer, Conv1D))
                # the weight was read for this merge alone: the sum may be formed in its memory
                merged = merged_weight(checkpoint.tensor(f"{module}.weight"), dense, in_place=True)
                write(partial(writer.add, f"{module}.weight", merged))
                stats.record(module, delta, dense)
                del dense, merged
            for name in checkpoint.names():
                if not (name.endswith(".weight") and stats.seen(name.removesuffix(".weight"))):
                    write(partial(writer.add_raw, name, checkpoint.raw(name)))
        while pending:
            pending.popleft().result()
        writer.finish()
    finally:
        writes.shutdown(wait=True, cancel_futures=True)
        writer.abort()
        checkpoint.close()
    return stats.as_dict()


def meta_model(base: str | Path) -> nn.Module:
    """The base's architecture on the meta device: names, kinds and shapes, no weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config).eval()


def config_dtype(config: Any) -> torch.dtype | None:
    """The dtype a config asks the model to load in (`dtype`, formerly `torch_dtype`), if any."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None

"""A merge streamed from safetensors files to safetensors shards, with no copy of the model in memory.

`soupbench merge` on a 7B model needs a second 14-28 GB copy of the base when it loads the model,
merges in place and saves. Here the base is read lazily, one tensor at a time (safetensors'
`safe_open`, as mergekit reads its inputs), each merged module is written into the current output
shard, and a shard is flushed to disk as soon as it is full: memory holds one shard being filled
plus the modules in flight, never the model. Tensors no delta touches are copied through as they
are. The output is the hub's layout (`model.safetensors`, or `model-0000i-of-0000N.safetensors`
with `model.safetensors.index.json`), and its tensors are bit for bit those the in-memory path
(`benchmark.apply.apply_deltas` then `save_pretrained`) writes: both use `merged_weight`.

Which modules exist, their kind (Linear, GPT-2's transposed Conv1D) and their shapes come from the
model built on the meta device from the base's config, which costs no memory for weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from benchmark.adapters import target_layer
from benchmark.apply import DeltaStats, check_delta, dense_delta, merged_weight
from benchmark.method import Delta

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 2 * 2**30  # small enough to stay far below the model, large enough to be few files


class BaseCheckpoint:
    """A local model folder's safetensors weights (one file or a sharded index), read lazily."""

    def __init__(self, folder: Path, files: dict[str, Path]) -> None:
        self.folder = folder
        self._file_of = files  # tensor name -> file, in the checkpoint's order
        self._handles: dict[Path, Any] = {}

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

    def _handle(self, name: str) -> Any:
        file = self._file_of[name]
        if file not in self._handles:
            self._handles[file] = safe_open(str(file), framework="pt")
        return self._handles[file]

    def dtype_of(self, name: str) -> str:
        return self._handle(name).get_slice(name).get_dtype()

    def tensor(self, name: str) -> torch.Tensor:
        return self._handle(name).get_tensor(name)

    def close(self) -> None:
        self._handles.clear()


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
    """Collects tensors and writes a safetensors shard whenever `max_bytes` is reached.

    Shards are written under temporary names while their count is unknown and renamed in `finish`
    to the hub's `model-0000i-of-0000N.safetensors` (or `model.safetensors` when there is one).
    """

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_bytes:
            self.flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size
        self.total_bytes += size

    def flush(self) -> None:
        if not self._pending:
            return
        path = self.folder / f".shard-{len(self._shards):05d}.safetensors"
        save_file(self._pending, str(path), metadata={"format": "pt"})
        self._shards.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def finish(self) -> list[Path]:
        """Flush, name the shards as the hub does, write the index when there are several."""
        self.flush()
        if len(self._shards) == 1:
            final = self.folder / SINGLE_FILE
            self._shards[0][0].rename(final)
            return [final]
        count, weight_map, files = len(self._shards), {}, []
        for i, (path, names) in enumerate(self._shards, start=1):
            final = self.folder / f"model-{i:05d}-of-{count:05d}.safetensors"
            path.rename(final)
            files.append(final)
            weight_map.update({name: final.name for name in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
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
    writer = ShardWriter(out, max_shard_bytes)
    with torch.no_grad():
        for module, delta in deltas:
            if stats.seen(module):
                raise ValueError(f"apply_deltas: module {module!r} appears twice in the merge result")
            layer = target_layer(model, module)
            check_delta(module, layer, delta)
            weight = checkpoint.tensor(f"{module}.weight")
            dense = dense_delta(delta, "cpu", isinstance(layer, Conv1D))
            writer.add(f"{module}.weight", merged_weight(weight, dense))
            stats.record(module, delta, dense)
            del weight, dense
        for name in checkpoint.names():
            if not (name.endswith(".weight") and stats.seen(name.removesuffix(".weight"))):
                writer.add(name, checkpoint.tensor(name))
    writer.finish()
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

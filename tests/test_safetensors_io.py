"""Plain-I/O safetensors: what the planned writer writes, safetensors itself reads back, bit for bit.

The streamed merge writes its shards with `benchmark.safetensors_io` rather than the library, so
the files must be ones the library (and transformers, in tests/test_streaming_merge.py) accept,
whatever the order the tensors arrive in, and a reader must get exactly the stored bytes without
mapping the file.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from benchmark.safetensors_io import PlannedShardWriter, TensorReader, read_header
from benchmark.tensor_files import all_finite


def sample_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(33, 7, generator=generator),
        "b.weight": torch.randn(5, 9, generator=generator).to(torch.bfloat16),
        "c.half": torch.randn(4, 4, 2, generator=generator).to(torch.float16),
        "d.count": torch.arange(11, dtype=torch.int64),
        "e.mask": torch.rand(6, generator=generator) > 0.5,
        "f.scalar": torch.tensor(3.25),
        "g.empty": torch.zeros(0, 4),
        "h.double": torch.randn(3, generator=generator).double(),
    }


def test_a_library_file_is_read_exactly_without_mapping_it(tmp_path):
    originals = sample_tensors()
    path = tmp_path / "model.safetensors"
    save_file(originals, str(path), metadata={"format": "pt"})
    reader = TensorReader(path)
    try:
        assert set(reader.entries) == set(originals)
        for name, tensor in originals.items():
            got = reader.tensor(name)
            assert got.dtype == tensor.dtype and got.shape == tensor.shape
            assert torch.equal(got, tensor), name
            assert reader.raw(name) == got.reshape(-1).view(torch.uint8).numpy().tobytes()
            if got.is_floating_point():
                got.add_(1)  # its own memory: the next read is unchanged
            assert torch.equal(reader.tensor(name), tensor)
        assert str(path) not in Path("/proc/self/maps").read_text()  # read, never mapped
        assert reader.metadata == {"format": "pt"}
    finally:
        reader.close()


@pytest.mark.parametrize("max_bytes", [10**9, 600, 1])
def test_planned_shards_written_in_any_order_are_what_safetensors_reads(tmp_path, max_bytes):
    originals = sample_tensors()
    source = tmp_path / "in.safetensors"
    save_file(originals, str(source))
    entries, _ = read_header(source)
    out = tmp_path / "out"
    out.mkdir()
    writer = PlannedShardWriter(out, list(entries.items()), max_bytes)
    order = list(originals)
    random.Random(max_bytes).shuffle(order)
    for name in order:
        if name == "d.count":
            writer.write_raw(name, TensorReader(source).raw(name))
        else:
            writer.write(name, originals[name])
    assert writer.missing() == []
    writer.close()
    # one shard when everything fits; a tensor larger than the limit gets a shard of its own
    if max_bytes == 10**9:
        assert len(writer.paths) == 1
    elif max_bytes == 1:
        assert len(writer.paths) == len(originals)
    else:
        assert 1 < len(writer.paths) < len(originals)
    found: dict[str, torch.Tensor] = {}
    for path, names in zip(writer.paths, writer.shard_names):
        assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0  # the data starts 8-byte aligned
        with safe_open(str(path), framework="pt") as handle:
            assert sorted(handle.keys()) == sorted(names)
            assert handle.metadata() == {"format": "pt"}
            found.update({name: handle.get_tensor(name) for name in handle.keys()})
    assert sorted(found) == sorted(originals)
    for name, tensor in originals.items():
        assert found[name].dtype == tensor.dtype and torch.equal(found[name], tensor), name


def test_the_writer_refuses_what_the_layout_does_not_say(tmp_path):
    originals = sample_tensors()
    source = tmp_path / "in.safetensors"
    save_file(originals, str(source))
    writer = PlannedShardWriter(tmp_path, list(read_header(source)[0].items()), 10**9)
    with pytest.raises(ValueError, match="not part of the output layout"):
        writer.write("z.weight", torch.zeros(1))
    with pytest.raises(ValueError, match="layout says F32"):
        writer.write("a.weight", originals["a.weight"].double())
    with pytest.raises(ValueError, match="layout says"):
        writer.write("a.weight", originals["a.weight"].T.contiguous())
    writer.write("a.weight", originals["a.weight"])
    with pytest.raises(ValueError, match="written twice"):
        writer.write("a.weight", originals["a.weight"])
    with pytest.raises(ValueError, match="bytes instead of"):
        writer.write_raw("d.count", b"\0" * 3)
    assert "a.weight" not in writer.missing() and "d.count" in writer.missing()
    writer.close()


def test_a_header_that_does_not_cover_the_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4, 4)}, str(path))
    data = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[:-4])
    with pytest.raises(ValueError, match="the header covers"):
        read_header(tmp_path / "short.safetensors")
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    header["w"]["data_offsets"] = [4, 68]  # a gap before the tensor
    encoded = json.dumps(header).encode()
    (tmp_path / "gap.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"\0" * 68)
    with pytest.raises(ValueError, match="not stored contiguously"):
        read_header(tmp_path / "gap.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\1\2")
    with pytest.raises(ValueError, match="too short"):
        read_header(tmp_path / "tiny.safetensors")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_agrees_with_the_entrywise_test(dtype):
    big = torch.finfo(dtype).max
    cases = {
        "finite": torch.randn(1000),
        "nan": torch.tensor([1.0, float("nan"), 2.0]),
        "inf": torch.tensor([1.0, float("inf")]),
        "-inf": torch.tensor([-float("inf"), 3.0]),
        "inf and -inf": torch.tensor([float("inf"), -float("inf")]),  # their sum is NaN
        "sum overflows": torch.tensor([big, big, big]),  # finite entries, infinite sum
        "empty": torch.zeros(0),
    }
    for label, values in cases.items():
        tensor = values.to(dtype)
        assert all_finite(tensor) == bool(torch.isfinite(tensor).all()), label

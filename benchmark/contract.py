"""Checks that a merge method kept its contract, so a broken plugin fails loudly and by name.

A method (built in or a plugin) returns a `MergeResult` whose deltas are `(module, Delta)` pairs
with Delta a dense (out, in) tensor or `LoraFactors`. A plugin that breaks this would otherwise
surface far away: a NaN delta silently turns the model's scores to zero, a transposed delta dies
inside `apply_deltas` with no hint of whose fault it is. `check_merge_result` wraps the result so
that each delta is checked as it is consumed: the deltas stay a lazy iterator and at most one
module's delta is alive at a time, as `benchmark.apply` promises.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from benchmark.adapters import dense_shape, target_layer
from benchmark.errors import UserError
from benchmark.tensor_files import all_finite
from benchmark.lora import Expert, LoraFactors
from benchmark.method import Delta, MergeMethod, MergeResult

# Where the modules and their (out, in) shapes come from: the base model (what the deltas are
# applied to), the experts (for bare-tensor use), or an explicit mapping.
Reference = nn.Module | Sequence[Expert] | Mapping[str, tuple[int, int]]


class PluginContractError(UserError, RuntimeError):
    """A merge method returned something the harness cannot use; the message names the method.

    A UserError: the method is the user's (a plugin file), and the message says what to fix in it."""


def describe_method(method: MergeMethod | str) -> str:
    """`'name' (Class in file)` for a method object, so a user knows which plugin file to open."""
    if isinstance(method, str):
        return repr(method)
    cls = type(method)
    try:
        where = inspect.getsourcefile(cls) or cls.__module__
    except TypeError:  # classes defined in odd places (exec'd strings) have no file
        where = cls.__module__
    return f"{method.display_name!r} ({cls.__qualname__} in {where})"


def _shape_lookup(reference: Reference) -> Callable[[str], tuple[int, int] | None]:
    """module -> (out, in) of the weight a delta would be added to, or None if there is none."""
    if isinstance(reference, nn.Module):
        def from_model(module: str) -> tuple[int, int] | None:
            layer = target_layer(reference, module)
            return dense_shape(layer) if isinstance(layer, (nn.Linear, Conv1D)) else None
        return from_model
    if isinstance(reference, Mapping):
        shapes = {name: tuple(shape) for name, shape in reference.items()}
    else:
        shapes = {}
        for expert in reference:
            for name, factors in expert.modules.items():
                shapes.setdefault(name, factors.shape)
    return lambda module: shapes.get(module)


def _problem(module: Any, delta: Any, expected: tuple[int, int] | None) -> str | None:
    """What is wrong with one (module, delta) pair, or None when it keeps the contract."""
    if not isinstance(module, str):
        return f"yielded a module key of type {type(module).__name__} ({module!r}); keys are module paths (str)"
    if expected is None:
        return (f"returned a delta for unknown module {module!r}: the base model has no Linear/Conv1D layer "
                "there")
    if isinstance(delta, LoraFactors):
        shape, tensors = delta.shape, {"A": delta.A, "B": delta.B}
        if not math.isfinite(float(delta.scale)):
            return f"returned LoraFactors with scale {delta.scale} at module {module!r}"
    elif isinstance(delta, torch.Tensor):
        if delta.dim() != 2:
            return f"returned a {delta.dim()}-d delta at module {module!r}; dense deltas are 2-d (out, in)"
        shape, tensors = tuple(delta.shape), {"delta": delta}
    else:
        return (f"returned a {type(delta).__name__} at module {module!r}; a delta must be a torch.Tensor "
                "(out, in) or benchmark.lora.LoraFactors")
    for label, tensor in tensors.items():
        if not tensor.is_floating_point():
            return f"returned a {tensor.dtype} {label} at module {module!r}; deltas must be floating point"
        if not all_finite(tensor):
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
            where = "" if label == "delta" else f" (in {label})"
            return f"returned a delta with {kind} values at module {module!r}{where}"
    if shape != expected:
        return (f"changed the shape of module {module!r}: its delta is (out, in) = {shape}, but the weight it "
                f"is added to is {expected}")
    return None


def _checked(name: str, items: Iterable[Any], shape_of: Callable[[str], tuple[int, int] | None]
             ) -> Iterator[tuple[str, Delta]]:
    seen: set[str] = set()
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise PluginContractError(f"method {name} broke the merge contract: its deltas yielded "
                                      f"{type(item).__name__} instead of a (module, delta) pair")
        module, delta = item
        problem = _problem(module, delta, shape_of(module) if isinstance(module, str) else None)
        if problem is None and module in seen:
            problem = f"returned module {module!r} twice"
        if problem is not None:
            raise PluginContractError(f"method {name} broke the merge contract: it {problem}")
        seen.add(module)
        yield module, delta


def check_merge_result(method: MergeMethod | str, result: Any, reference: Reference) -> MergeResult:
    """Return `result` with its deltas checked lazily, module by module, against `reference`.

    Refused with `PluginContractError` (naming the method and the problem): a return value that is
    not a `MergeResult`; deltas that are not a dict or an iterable of pairs; a delta that is neither
    a Tensor nor `LoraFactors`; NaN or inf values; a delta whose (out, in) shape differs from the
    module's weight; a module the base model does not have (or does not hold as Linear/Conv1D).
    The type checks happen here; the per-module ones when the deltas are consumed.
    """
    name = describe_method(method)
    if not isinstance(result, MergeResult):
        raise PluginContractError(
            f"method {name} broke the merge contract: merge() returned {type(result).__name__}, not "
            "benchmark.method.MergeResult"
        )
    deltas = result.deltas
    if isinstance(deltas, Mapping):
        items: Iterable[Any] = deltas.items()
    elif isinstance(deltas, Iterable) and not isinstance(deltas, (str, bytes, torch.Tensor)):
        items = deltas
    else:
        raise PluginContractError(f"method {name} broke the merge contract: MergeResult.deltas is a "
                                  f"{type(deltas).__name__}, not a dict or an iterator of (module, delta)")
    if result.output_rank is not None and (not isinstance(result.output_rank, int) or result.output_rank < 0):
        raise PluginContractError(f"method {name} broke the merge contract: output_rank is "
                                  f"{result.output_rank!r}, not a non-negative int or None")
    if not isinstance(result.info, dict):
        raise PluginContractError(f"method {name} broke the merge contract: info is a "
                                  f"{type(result.info).__name__}, not a dict")
    return MergeResult(deltas=_checked(name, items, _shape_lookup(reference)),
                       output_rank=result.output_rank, info=result.info)

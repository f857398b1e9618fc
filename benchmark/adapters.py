"""I/O between PEFT LoRA adapters (folders or live models) and `Expert`.

Adapter folders are read directly (JSON + safetensors) rather than through `PeftModel`, so loading
an expert needs no model, wraps nothing and cannot silently drop a feature: everything in the
config that would make `delta = scale * B @ A` wrong is refused with the feature named.

Orientation: PEFT stores lora_A as (r, in) and lora_B as (out, r) for Linear *and* for GPT-2's
Conv1D (`fan_in_fan_out=True` only transposes B @ A when merging into the (in, out) weight), so
the factors are already in the (out, in) Linear layout of `benchmark.lora` and are kept as they are.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from benchmark.errors import UserError
from benchmark.lora import Expert, LoraFactors, lora_scale
from benchmark.tensor_files import non_finite, read_json_object, read_safetensors, read_torch_state

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"

# `base_model.model.<module>.lora_A[.<adapter>].weight`, the layout of every PEFT LoRA checkpoint.
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.[^.]+)?\.weight$")

# Config entries that change what the adapter computes beyond scale * B @ A (or that train weights
# outside the LoRA factors). Each maps to a predicate on the value: true means "in use".
_UNSUPPORTED: dict[str, Any] = {
    "use_dora": bool,
    "lora_bias": bool,
    "use_qalora": bool,
    "modules_to_save": bool,
    "trainable_token_indices": bool,
    "target_parameters": bool,
    "layer_replication": bool,
    "alora_invocation_tokens": bool,
    "velora_config": bool,
    "monteclora_config": bool,
    "kasa_config": bool,
    "arrow_config": bool,
    "use_bdlora": bool,
    "megatron_config": bool,
    "bias": lambda value: value not in (None, "none"),
}
# Initialisations that rewrite the base weights (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA): unless the
# adapter was converted back on save, its factors are relative to a base we do not have.
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
# Fields left out of the fingerprint: they record who wrote the file, not what it computes.
_VOLATILE = {"peft_version", "inference_mode", "runtime_config", "revision", "auto_mapping"}


class AdapterMismatchError(UserError):
    """An adapter that does not fit the base model it is applied to."""


def get_pattern_key(pattern_keys: Iterable[str], module: str) -> str:
    """PEFT's rule for `rank_pattern` / `alpha_pattern` (peft.utils.other.get_pattern_key, 0.21).

    The first key (in the config's order) that matches a dotted suffix of the module path wins; a
    key is a regular expression. Without a match the module path itself is returned, which also
    makes an exact full-path key work under older PEFT rules.
    """
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


def module_rank_alpha(config: Mapping[str, Any], module: str) -> tuple[int, float]:
    """Rank and alpha of one module, honouring `rank_pattern` and `alpha_pattern` as PEFT does."""
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rank = rank_pattern.get(get_pattern_key(rank_pattern, module), config["r"])
    alpha = alpha_pattern.get(get_pattern_key(alpha_pattern, module), config["lora_alpha"])
    return int(rank), float(alpha)


def check_supported(config: Mapping[str, Any], adapter: str) -> None:
    """Refuse adapters whose effect is not `scale * B @ A` on Linear/Conv1D weights."""
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UserError(f"adapter {adapter!r}: peft_type {peft_type} is not supported (only plain LoRA is)")
    for key, in_use in _UNSUPPORTED.items():
        if in_use(config.get(key)):
            raise UserError(f"adapter {adapter!r}: LoRA feature {key}={config[key]!r} is not supported")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_BASE_REWRITING_INITS):
        raise UserError(
            f"adapter {adapter!r}: init_lora_weights={init!r} rewrites the base weights; convert the adapter "
            "to plain LoRA (save_pretrained(path_initial_model_for_weight_conversion=...)) first"
        )


def _jsonable(value: Any) -> Any:
    return sorted(value) if isinstance(value, (set, frozenset)) else str(value)


def _canonical_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as it bears on the math, in a form whose JSON is stable across processes."""
    out = {k: v for k, v in config.items() if k not in _VOLATILE}
    for key in ("target_modules", "exclude_modules"):  # PEFT keeps these as sets: order is random
        if isinstance(out.get(key), (list, tuple, set)):
            out[key] = sorted(out[key])
    return json.loads(json.dumps(out, sort_keys=True, default=_jsonable))


def fingerprint(config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the canonical config and every tensor (name, dtype, shape, bytes), sorted."""
    digest = hashlib.sha256(json.dumps(_canonical_config(config), sort_keys=True).encode())
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _factors_from_state(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], adapter: str
) -> dict[str, LoraFactors]:
    """Pair lora_A/lora_B per module and attach PEFT's per-module scale."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise UserError(f"adapter {adapter!r}: weight {key!r} is not a LoRA factor of a Linear layer "
                             "(unsupported)")
        pairs.setdefault(match["module"], {})[match["factor"]] = tensor
    modules: dict[str, LoraFactors] = {}
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise UserError(f"adapter {adapter!r}: module {module!r} lacks lora_{({'A', 'B'} - set(pair)).pop()}")
        rank, alpha = module_rank_alpha(config, module)
        if pair["A"].shape[0] != rank:
            raise UserError(
                f"adapter {adapter!r}: module {module!r} has rank {pair['A'].shape[0]} in its weights but {rank} "
                "by its config (r / rank_pattern)"
            )
        scale = lora_scale(alpha, rank, bool(config.get("use_rslora", False)))
        modules[module] = LoraFactors(A=pair["A"], B=pair["B"], scale=scale)
    return modules


def _check_config_fields(config: Mapping[str, Any], adapter: str, config_file: Path) -> None:
    """The fields `delta = scale * B @ A` is computed from, with their types (a KeyError deep in
    the scale computation would name neither the adapter nor the file)."""
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UserError(f"adapter {adapter!r}: {config_file} has {key}={value!r}; a LoRA config needs a "
                            f"positive number there")


def load_expert(path: str | Path, name: str | None = None, base_model: nn.Module | None = None) -> Expert:
    """Read a PEFT LoRA folder into an `Expert` (checked against `base_model` when given).

    Whatever is wrong with the folder is a `UserError` that names the file: no such folder, a
    config that is not JSON, a truncated weights file, factors with NaN or inf values (refused
    here, where the adapter is named, rather than found in a merge that would blame the method).
    """
    path = Path(path)
    name = name or path.name
    if not path.is_dir():
        what = "is a file, not an adapter folder" if path.exists() else "does not exist"
        raise UserError(f"adapter {name!r}: {path} {what} (an adapter is a PEFT folder with {CONFIG_NAME})")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise UserError(f"adapter {name!r}: no {CONFIG_NAME} in {path}")
    config = read_json_object(config_file, f"adapter {name!r}: config")
    _check_config_fields(config, name, config_file)
    check_supported(config, name)
    if (path / SAFETENSORS_NAME).is_file():
        weights_file = path / SAFETENSORS_NAME
        tensors = read_safetensors(weights_file, f"adapter {name!r}: weights file")
    elif (path / BIN_NAME).is_file():
        weights_file = path / BIN_NAME
        tensors = read_torch_state(weights_file, f"adapter {name!r}: weights file")
    else:
        raise UserError(f"adapter {name!r}: neither {SAFETENSORS_NAME} nor {BIN_NAME} in {path}")
    bad = non_finite(tensors)
    if bad is not None:
        raise UserError(f"adapter {name!r}: {weights_file} holds {bad[1]} values (in {bad[0]}); an adapter's "
                        "factors must be finite")
    expert = Expert(
        name=name,
        modules=_factors_from_state(config, tensors, name),
        fingerprint=fingerprint(config, tensors),
        metadata={"path": str(path), "base_model_name_or_path": config.get("base_model_name_or_path"),
                  "config": config},
    )
    if base_model is not None:
        check_compatible(expert, base_model)
    return expert


def expert_from_peft_model(peft_model: nn.Module, adapter_name: str, name: str) -> Expert:
    """Snapshot one adapter of a live PEFT model (e.g. one just trained) as an `Expert`.

    The factors are cloned so that further training does not change the expert. The fingerprint
    matches that of the same adapter saved with `save_pretrained` and read by `load_expert`.
    """
    from peft.utils import get_peft_model_state_dict

    # JSON round trip: the same plain types (enums as strings, sets as lists) as a saved config.
    config = json.loads(json.dumps(peft_model.peft_config[adapter_name].to_dict(), default=_jsonable))
    check_supported(config, name)
    state = get_peft_model_state_dict(peft_model, adapter_name=adapter_name, save_embedding_layers=False)
    tensors = {key: value.detach().cpu().clone() for key, value in state.items()}
    return Expert(
        name=name,
        modules=_factors_from_state(config, tensors, name),
        fingerprint=fingerprint(config, tensors),
        metadata={"base_model_name_or_path": config.get("base_model_name_or_path"), "config": config},
    )


def target_layer(model: nn.Module, module: str) -> nn.Module | None:
    """The Linear/Conv1D at `module`, looking through a PEFT wrapper; None if there is none."""
    try:
        layer = model.get_submodule(module)
    except AttributeError:
        return None
    if hasattr(layer, "get_base_layer"):
        layer = layer.get_base_layer()
    return layer


def dense_shape(layer: nn.Module) -> tuple[int, int]:
    """(out, in) of a Linear or Conv1D (whose weight is stored (in, out))."""
    out, inp = layer.weight.shape
    return (inp, out) if isinstance(layer, Conv1D) else (out, inp)


def check_compatible(expert: Expert, base_model: nn.Module, declared_base: str | None = None) -> None:
    """Every adapted module exists in `base_model`, is Linear or Conv1D, and has the right shape."""
    recorded = expert.metadata.get("base_model_name_or_path")
    if declared_base and recorded and str(recorded).rstrip("/") != str(declared_base).rstrip("/"):
        raise AdapterMismatchError(
            f"adapter {expert.name!r} was trained on base {recorded!r}, but the declared base is {declared_base!r}"
        )
    for module, factors in expert.modules.items():
        layer = target_layer(base_model, module)
        if layer is None:
            raise AdapterMismatchError(
                f"adapter {expert.name!r} does not fit the base: module {module!r} does not exist in the base model"
            )
        if not isinstance(layer, (nn.Linear, Conv1D)):
            raise AdapterMismatchError(
                f"adapter {expert.name!r} does not fit the base: module {module!r} is a {type(layer).__name__}, "
                "not Linear or Conv1D"
            )
        if dense_shape(layer) != factors.shape:
            raise AdapterMismatchError(
                f"adapter {expert.name!r} does not fit the base: module {module!r} has delta shape (out, in) = "
                f"{factors.shape} but the "
                f"base model's weight is {dense_shape(layer)}"
            )


def save_lora_as_peft(
    deltas: Mapping[str, LoraFactors],
    base_model: nn.Module,
    out_dir: str | Path,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write low-rank merge results as a PEFT LoRA folder that `PeftModel.from_pretrained` loads.

    Each module's scale is folded into B and alpha is set to its rank (scale 1), so per-module
    ranks need only `rank_pattern`/`alpha_pattern`, keyed by full module paths. `target_modules`
    lists exactly the written modules, so PEFT adds no untrained layers.
    """
    from peft import LoraConfig

    if not deltas:
        raise ValueError("save_lora_as_peft: no modules to write")
    out_dir = Path(out_dir)
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    conv1d = False
    for module, factors in deltas.items():
        layer = target_layer(base_model, module)
        if layer is None or dense_shape(layer) != factors.shape:
            found = "no such module" if layer is None else f"weight {dense_shape(layer)}"
            raise AdapterMismatchError(f"merged module {module!r} has shape {factors.shape}; base model: {found}")
        conv1d = conv1d or isinstance(layer, Conv1D)
        prefix = f"base_model.model.{module}"
        tensors[f"{prefix}.lora_A.weight"] = factors.A.detach().cpu().contiguous()
        B = factors.B.detach().cpu()
        tensors[f"{prefix}.lora_B.weight"] = (factors.scale * B.float()).to(B.dtype).contiguous()
        ranks[module] = factors.rank
    default_rank = max(ranks.values())
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(getattr(base_model, "config", None), "name_or_path", None) or None
    config = LoraConfig(
        r=default_rank,
        lora_alpha=default_rank,
        target_modules=sorted(ranks),
        rank_pattern={m: r for m, r in sorted(ranks.items())},
        alpha_pattern={m: r for m, r in sorted(ranks.items())},
        fan_in_fan_out=conv1d,
        base_model_name_or_path=base_model_name_or_path,
        inference_mode=True,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / SAFETENSORS_NAME), metadata={"format": "pt"})
    return out_dir

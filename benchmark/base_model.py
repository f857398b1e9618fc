"""The suite's base model: built (micro) or loaded (hub), cached, and handed out as fresh copies."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from benchmark import cache, hashing, release
from benchmark.errors import UserError
from benchmark.keys import base_build_key, base_recipe_hash, tokenizer_samples
from benchmark.micro.model import build_micro_base
from benchmark.pretrained import first_line, load_causal_lm
from benchmark.suite import HubBase, MicroBase, Suite
from benchmark.training import Checkpoint


@dataclass
class BaseModel:
    """A loaded base: its folder, its fingerprint (part of every expert's cache key) and weights."""

    path: Path
    fingerprint: str
    model: PreTrainedModel
    tokenizer: object

    def fresh(self) -> PreTrainedModel:
        """An independent copy to merge into or train on; the pristine base stays untouched."""
        return copy.deepcopy(self.model)


def warn_slow_precision(precision: str, device: str, log: Callable[[str], None]) -> None:
    """bfloat16 on a CPU without native support (no AVX512-BF16 or AMX) is emulated: measured 74 s
    a micro pretraining step against 2.5 s in float32 on a 2-core AMD EPYC (Zen 3)."""
    if precision == "bfloat16" and torch.device(device).type == "cpu" and not _cpu_has_bf16():
        log("warning: this CPU has no native bfloat16 (AVX512-BF16 / AMX): bfloat16 training is emulated here "
            "and about 30x slower than float32; use `precision: float32` in the suite for a build on this machine")


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_device() -> str:
    """`SOUPBENCH_DEVICE`, else CUDA when present, else the CPU."""
    return os.environ.get("SOUPBENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def prepare_base(suite: Suite, progress: Callable[[int, int, float], None] | None = None,
                 device: str | None = None, log: Callable[[str], None] = lambda message: None,
                 use_release: bool = True) -> BaseModel:
    """The suite's base: from the release when its recipe matches the manifest (after a sha256
    check of every file), else built once per recipe and device (cached), or a pretrained one.

    Its fingerprint is the hash of its files, so every machine that uses the release names the same
    base, and a base built here is named by what was built, not by what was asked for.
    """
    device = device or default_device()
    spec = suite.base
    if isinstance(spec, MicroBase):
        recipe_hash = base_recipe_hash(suite)
        if use_release:
            released = release.released_base(recipe_hash)  # checks every released file first
            if released is not None:
                log(f"base from the release ({released})")
                return _load(released, torch.float32, device)
        key = base_build_key(recipe_hash, device)
        folder = cache.cache_dir("base", key)
        if not cache.usable(folder, f"base {recipe_hash}", log):
            checkpoint = Checkpoint(cache.cache_dir("base-checkpoints", key) / "pretraining.pt")
            log(f"no released base for this recipe ({recipe_hash}): pretraining it here, once, then cached "
                f"(micro's size: about 90 minutes on 2 CPU cores in float32; an interrupted build resumes "
                f"from {checkpoint.path.parent})")
            warn_slow_precision(spec.precision, device, log)
            staging = cache.staging_dir(folder)
            build_micro_base(spec, staging, tokenizer_samples(suite), progress, device, checkpoint)
            cache.publish(staging, folder, facts={"fingerprint": weights_fingerprint(staging)})
            shutil.rmtree(checkpoint.path.parent, ignore_errors=True)
        else:
            log(f"base from the cache ({folder})")
        # The seal's check has just read every file: the fingerprint it recorded still holds.
        return _load(folder, torch.float32, device, cache.seal_facts(folder).get("fingerprint"))
    assert isinstance(spec, HubBase)
    model = load_causal_lm(spec.model_id, "suite base", spec.revision, getattr(torch, spec.dtype)).to(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.model_id, revision=spec.revision)
    except Exception as err:  # a model without its tokenizer files cannot be evaluated
        raise UserError(f"suite base {spec.model_id}: cannot load its tokenizer ({first_line(err)})") from err
    if tokenizer.pad_token is None:  # LLaMA's has none; padding is masked out, any id serves (alpaca-lora: unk)
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if Path(spec.model_id).is_dir():  # a local folder is named by its content, as a built base is
        fingerprint = weights_fingerprint(Path(spec.model_id))
    else:
        fingerprint = f"{spec.model_id}@{spec.revision or getattr(model.config, '_commit_hash', None) or 'main'}"
    return BaseModel(Path(spec.model_id), fingerprint, model.eval(), tokenizer)


# The files that make a micro base what it is (weights, config, tokenizer); a base's fingerprint
# hashes them, the release ships them.
BASE_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json")


def base_files(folder: Path) -> list[Path]:
    return [folder / name for name in BASE_FILES if (folder / name).is_file()]


def weights_fingerprint(folder: Path) -> str:
    """`sha256:<hex>` of a base folder's weights, config and tokenizer files."""
    return hashing.files_fingerprint(base_files(folder))


def _load(folder: Path, dtype: torch.dtype, device: str, fingerprint: str | None = None) -> BaseModel:
    fingerprint = fingerprint or weights_fingerprint(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return BaseModel(folder, fingerprint, model, tokenizer)

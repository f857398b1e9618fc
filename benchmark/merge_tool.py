"""`soupbench merge`: base + adapters + method -> a merged model (or LoRA) folder with its card.

The same method objects as the benchmark, outside any suite: only methods that need nothing but
the base and the experts (`consumes == NOTHING`) can run here; CAT, data mixing and LoraHub need
the suite's data and are run by `soupbench run`. Everything that can be refused (names, parameters,
a method that needs data, adapters that do not fit the base) is refused before a byte is written,
and the folder is written under a temporary name and renamed at the end, so a failed merge never
leaves a half-written model behind that `from_pretrained` would happily load.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark import catalog
from benchmark.adapters import AdapterMismatchError, check_compatible, load_expert, save_lora_as_peft
from benchmark.apply import apply_deltas
from benchmark.contract import check_merge_result
from benchmark.errors import UserError
from benchmark.hashing import files_fingerprint
from benchmark.lora import Expert, LoraFactors, module_union
from benchmark.method import Consumes, MergeContext, MergeMethod, ModuleWiseMethod
from benchmark.pretrained import check_model_ref, could_be_hub_id, first_line, load_causal_lm
from benchmark.streaming import DEFAULT_SHARD_BYTES, BaseCheckpoint, meta_model, stream_merge, streaming_obstacle

CARD_JSON = "soupbench_merge.json"
CARD_README = "README.md"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class MergeRefused(UserError):
    """A merge that `soupbench merge` cannot do as asked (the message says what to do instead)."""


def parse_param(text: str) -> tuple[str, Any]:
    """`KEY=VALUE`, VALUE read as JSON when it parses (numbers, lists, bools, null), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--param {text!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def parse_weights(text: str) -> list[float]:
    """`W1,W2,...` -> floats (the method's `weights` parameter, one per adapter, in order)."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--weights {text!r}: expected comma-separated numbers, e.g. 1.0,0.5") from None


def parse_adapter(text: str) -> tuple[str, str]:
    """`PATH` (named after its folder) or `NAME=PATH`; an existing path containing '=' is a path."""
    name, sep, path = text.partition("=")
    if sep and name and not Path(text).exists():
        return name, path
    return Path(text.rstrip("/")).name, text


def _normalised_ref(ref: str) -> str:
    """A model reference comparable across spellings: resolved when it is a local path."""
    text = str(ref).strip().rstrip("/")
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def check_declared_base(expert: Expert, base: str) -> None:
    """Refuse an adapter whose recorded base differs from the given one (both non-empty).

    PEFT records `base_model_name_or_path` as whatever the base was loaded from, and leaves it
    empty (or None) for a model built from a config; only two non-empty references that differ
    after resolving local paths count as a mismatch.
    """
    recorded = expert.metadata.get("base_model_name_or_path")
    if not recorded or not str(recorded).strip() or not str(base).strip():
        return
    if str(recorded).startswith("sha256:"):  # a SoupBench expert names its base by the hash of its files
        from benchmark.base_model import weights_fingerprint

        if Path(base).is_dir() and weights_fingerprint(Path(base)) != recorded:
            raise AdapterMismatchError(
                f"adapter {expert.name!r} was trained on base {recorded}, but the files of {base!r} hash to "
                f"{weights_fingerprint(Path(base))} (pass --ignore-declared-base if they are the same model)")
        return
    if _normalised_ref(str(recorded)) != _normalised_ref(base):
        raise AdapterMismatchError(
            f"adapter {expert.name!r} declares base {recorded!r}, not the given base {base!r} "
            "(pass --ignore-declared-base if they are the same model)"
        )


def base_fingerprint(base: str, model: nn.Module) -> str:
    """sha256 of a local base's config and weight files; `id@commit` for a hub model.

    Hashing the files (not the loaded tensors) makes the figure comparable with `sha256sum`-style
    checks and costs one sequential read (seconds per GB).
    """
    folder = Path(base)
    if not folder.is_dir():
        commit = getattr(getattr(model, "config", None), "_commit_hash", None)
        return f"{base}@{commit or 'unknown'}"
    return files_fingerprint(_fingerprinted_files(folder))


def _fingerprinted_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir()
            if p.is_file() and (p.name == "config.json" or p.name.endswith(_WEIGHT_SUFFIXES))]


class _BackgroundFingerprint:
    """A local base's fingerprint computed on a thread of its own while the merge is prepared.

    The hash is one sequential read of the base, which on a cold page cache is most of a streamed
    merge's reading: started before the architecture's import and the merge, it overlaps them, and
    it leaves the base in the page cache for the merge's reads. hashlib and file reads release the
    GIL. The thread is a daemon: a merge refused meanwhile does not wait for it to finish.
    """

    def __init__(self, folder: Path) -> None:
        self._result: list[str | BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(_fingerprinted_files(folder),), daemon=True)
        self._thread.start()

    def _run(self, files: list[Path]) -> None:
        try:
            self._result.append(files_fingerprint(files))
        except BaseException as err:  # said where the value is needed, not lost on a thread
            self._result.append(err)

    def value(self) -> str:
        self._thread.join()
        result = self._result[0]
        if isinstance(result, BaseException):
            raise result
        return result


def _load_adapter(name: str, ref: str) -> Expert:
    if Path(ref).exists() or not could_be_hub_id(ref):
        return load_expert(ref, name=name)  # a missing path is said as one: "does not exist"
    from huggingface_hub import snapshot_download  # a hub id: resolved from the local HF cache or the hub

    try:
        folder = snapshot_download(ref)
    except Exception as err:  # offline, unknown repo, no access: the hub library says it many ways
        raise UserError(f"adapter {name!r}: {ref} is not a folder here, nor an adapter on the hub or in its "
                        f"local cache ({first_line(err)})") from err
    return load_expert(folder, name=name)


def method_failed(method: MergeMethod, err: Exception) -> UserError:
    """A method that raised on these adapters (weights that do not match them, an SVD of values that
    overflowed): one line naming the method; the harness's own refusals pass through as they are."""
    if isinstance(err, UserError):
        return err
    message = first_line(err) if isinstance(err, torch.linalg.LinAlgError) else str(err)
    name = method.display_name
    return UserError(message if message.startswith(name) else f"method {name!r} cannot merge these adapters: {message}")


def _jsonable(info: Mapping[str, Any]) -> dict[str, Any]:
    """The method's info entries that are plain JSON (tensors and the like are left out)."""
    kept = {}
    for key, value in info.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        kept[key] = value
    return kept


def _package_version() -> str:
    try:
        return version("soupbench")
    except PackageNotFoundError:
        return "unknown"


def _readme(card: dict[str, Any]) -> str:
    library = "peft" if card["output"] == "adapter" else "transformers"
    rows = "\n".join(f"| {a['name']} | `{a['path']}` | `{a['fingerprint'][:16]}` |" for a in card["adapters"])
    return (
        f"---\nbase_model: {json.dumps(card['base']['path'])}\nlibrary_name: {library}\n"
        f"tags: [soupbench, merge, lora, {card['method']}]\n---\n\n"
        f"# Merged with SoupBench: `{card['method']}`\n\n"
        f"{card['description']}\n\n"
        f"- output: {'a PEFT LoRA adapter' if card['output'] == 'adapter' else 'a full model'}"
        f" (output rank: {card['output_rank'] if card['output_rank'] is not None else 'full (dense)'})\n"
        f"- base: `{card['base']['path']}` (`{card['base']['fingerprint']}`)\n"
        f"- seed: {card['seed']}\n- parameters: `{json.dumps(card['params'])}`\n"
        + (f"- paper: {card['paper']}\n" if card["paper"] else "")
        + f"\n| adapter | path | fingerprint (sha256) |\n| --- | --- | --- |\n{rows}\n\n"
        f"Full record: `{CARD_JSON}`.\n"
    )


def _meta_model(base: str) -> nn.Module:
    try:
        return meta_model(base)
    except Exception as err:  # an architecture transformers lacks, a config it cannot read
        raise UserError(f"--base {base}: cannot read it as a causal language model ({first_line(err)})") from err


def prepare_method(method: str, params: Mapping[str, Any], names: list[str], as_adapter: bool) -> MergeMethod:
    """Create the method and refuse what `merge` cannot do, before anything is loaded."""
    instance = catalog.create_method(method, dict(params), names)
    if instance.consumes is not Consumes.NOTHING:
        raise MergeRefused(
            f"method {method!r} consumes {instance.consumes.value} (it needs the suite's training or target "
            "data), which `soupbench merge` does not have; use `soupbench run --method "
            f"{method}` with a suite instead"
        )
    if as_adapter and isinstance(instance, ModuleWiseMethod):
        raise MergeRefused(f"--as-adapter: method {method!r} produces dense deltas, which are not a LoRA; "
                           "use a low-rank method (cat_static, svd, expert-<name>) or drop --as-adapter")
    return instance


def merge_to_folder(
    base: str,
    adapters: Sequence[str | tuple[str, str]],
    method: str,
    out: str | Path,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    as_adapter: bool = False,
    ignore_declared_base: bool = False,
    overwrite: bool = False,
    report: Callable[[str], None] = lambda message: None,
    threads: int | None = None,
    stream: bool = True,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> dict[str, Any]:
    """Merge `adapters` into `base` with `method` and write the result to `out`; return the card.

    `adapters` are paths (named after their folder) or (name, path) pairs, in the order the
    method's `weights` refer to. Raises `UserError` for anything that cannot be done as asked
    (`AdapterMismatchError` for adapters that do not fit the base, `MergeRefused`, an unreadable file,
    a method that fails on these adapters); in every case `out` is untouched.

    A method that `streams` merges a local safetensors base tensor by tensor into output shards
    of at most `max_shard_bytes` (benchmark.streaming), holding no copy of the model; any other
    method, a base that cannot be streamed (the report says why) or `stream=False` loads the base
    and merges in memory. The two write the same tensors, bit for bit. `--as-adapter` never loads
    the base's weights. `threads` (default: torch's) is how many modules are merged at once.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise MergeRefused(f"output folder {out} exists and is not empty (pass --overwrite to replace it)")
    pairs = [parse_adapter(a) if isinstance(a, str) else (a[0], str(a[1])) for a in adapters]
    names = [name for name, _ in pairs]
    if not pairs:
        raise MergeRefused("no adapters given (--adapter PATH, repeatable)")
    if len(set(names)) != len(names):
        raise MergeRefused(f"adapter names must differ, got {names}; name them with --adapter NAME=PATH")
    if threads is not None and threads < 1:
        raise MergeRefused(f"--threads must be at least 1, got {threads}")
    instance = prepare_method(method, params or {}, names, as_adapter)

    from transformers import AutoTokenizer

    experts = [_load_adapter(name, path) for name, path in pairs]  # small: read (and refused) first
    check_model_ref(base, "--base")
    background_print = _BackgroundFingerprint(Path(base)) if Path(base).is_dir() else None
    checkpoint, streaming = None, False
    if as_adapter or (stream and type(instance).streams):
        model = _meta_model(base)  # shapes and kinds only: the weights are read from the files
        if not as_adapter:
            checkpoint = BaseCheckpoint.find(base) if Path(base).is_dir() else None
            obstacle = streaming_obstacle(checkpoint, model, module_union(experts))
            streaming = obstacle is None
            if not streaming:
                report(f"cannot stream the base ({obstacle}); merging in memory")
    if as_adapter or streaming:
        report(f"reading base {base} tensor by tensor" if streaming else f"reading the shapes of base {base}")
    else:
        report(f"loading base {base}")
        model = load_causal_lm(base, "--base")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except Exception as err:  # a missing tokenizer must not cost the merge
        report(f"warning: no tokenizer in {base} ({err.__class__.__name__}); writing the model without one")
        tokenizer = None
    for expert in experts:
        check_compatible(expert, model)
        if not ignore_declared_base:
            check_declared_base(expert, base)

    report(f"merging {len(experts)} adapters with {instance.display_name}")
    torch.manual_seed(seed)
    in_memory = model
    context = MergeContext(seed=seed, skills=names, tokenizer=tokenizer, report=report,
                           load_base=(lambda: load_causal_lm(base, "--base")) if as_adapter or streaming
                           else (lambda: copy.deepcopy(in_memory)),
                           threads=threads if threads is not None else torch.get_num_threads())
    try:
        result = check_merge_result(instance, instance.merge(experts, context), model)
    except (ValueError, torch.linalg.LinAlgError) as err:
        raise method_failed(instance, err) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        if as_adapter:
            factors: dict[str, LoraFactors] = {}
            for module, delta in result.items():
                if not isinstance(delta, LoraFactors):
                    raise MergeRefused(f"--as-adapter: method {method!r} returned a dense delta at module "
                                       f"{module!r}; only low-rank results can be written as a LoRA")
                factors[module] = delta
            if not factors:
                raise MergeRefused(f"--as-adapter: method {method!r} changed no module; there is no adapter to write")
            base_ref = _normalised_ref(base)
            save_lora_as_peft(factors, model, staging, base_model_name_or_path=base_ref)
            stats = {"modules": len(factors), "lowrank_modules": len(factors), "dense_modules": 0,
                     "max_output_rank": max(f.rank for f in factors.values())}
        elif streaming:
            stats = stream_merge(checkpoint, result.items(), model, staging, max_shard_bytes)
            for name in ("config.json", "generation_config.json"):
                if (Path(base) / name).is_file():
                    shutil.copyfile(Path(base) / name, staging / name)
        else:
            stats = apply_deltas(model, result)
            model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        base_print = background_print.value() if background_print else base_fingerprint(base, model)
        card = {
            "soupbench_version": _package_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": instance.display_name,
            "method_class": f"{type(instance).__module__}.{type(instance).__qualname__}",
            "description": type(instance).description,
            "paper": type(instance).paper,
            "params": instance.params.model_dump(mode="json"),
            "seed": seed,
            "output": "adapter" if as_adapter else "model",
            "output_rank": result.output_rank if result.output_rank is not None else stats["max_output_rank"],
            "base": {"path": base, "fingerprint": base_print},
            "adapters": [{"name": e.name, "path": path, "fingerprint": e.fingerprint,
                          "declared_base": e.metadata.get("base_model_name_or_path")}
                         for e, (_, path) in zip(experts, pairs)],
            "modules": {k: stats[k] for k in ("modules", "dense_modules", "lowrank_modules")},
            "info": _jsonable(result.info),
            "streamed": streaming,
        }
        (staging / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
        (staging / CARD_README).write_text(_readme(card))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except (ValueError, torch.linalg.LinAlgError) as err:  # raised where the lazy deltas are consumed
        shutil.rmtree(staging, ignore_errors=True)
        raise method_failed(instance, err) from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report(f"wrote {'adapter' if as_adapter else 'model'} to {out}")
    return card

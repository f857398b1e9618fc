"""The evaluation bridge: a model in memory, scored on SoupBench's lm-eval tasks in-process.

Every task is an ordinary lm-eval task (`<folder>/<name>.yaml` of a registered task: `tasks/<name>/`
for a built-in one, which lm-eval's own CLI runs too); this module only feeds it. `write_task_data` writes each task's documents as JSONL from its
builder (the YAMLs' `custom_dataset` reads them back), and `evaluate_model` wraps the model in
lm-eval's HFLM and runs all tasks of one model in a single `lm_eval.evaluator.evaluate` call
(not `simple_evaluate`, which spends most of its fixed cost collecting environment information),
then turns lm-eval's results and logged samples into storage records.
"""

from __future__ import annotations

import os

# No network here, and evaluation never needs one: keep datasets and the hub from trying. Set
# before anything imports them; an explicit setting (HF_HUB_OFFLINE=0 for a hub suite) wins.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import contextlib  # noqa: E402
import copy  # noqa: E402
import io  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import tasks as tasks_package  # noqa: E402
from benchmark.storage import SampleRecord, ScoreRecord  # noqa: E402
from benchmark.suite import EvalSpec  # noqa: E402
from benchmark.taskinfo import TASKS  # noqa: E402
from tasks._common.dataset import data_file  # noqa: E402

TASKS_DIR = Path(tasks_package.__file__).parent
# Every SoupBench metric is a mean of per-document 0/1 values, for which lm-eval uses the
# closed-form standard error (sample std / sqrt(n)) whenever bootstrap_iters > 0; it bootstraps
# only metrics with no closed form (median, f1, ...), which no task here has yet.
BOOTSTRAP_ITERS = 1000


@dataclass
class TaskOutcome:
    task: str
    scores: list[ScoreRecord]
    samples: list[SampleRecord]


def write_task_data(task_names: list[str], data_dir: Path, eval_size: int, seed: int,
                    options: dict[str, dict] | None = None) -> None:
    """Write `<data_dir>/<task>.jsonl` from each task's eval builder; a file already holding exactly
    these documents is left untouched, and a changed one is replaced atomically."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in task_names:
        docs = TASKS.get(name).build_eval(eval_size, seed, **(options or {}).get(name, {}))
        text = "".join(json.dumps(doc, sort_keys=True) + "\n" for doc in docs)
        path = data_file(data_dir, name)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)


def evaluate_model(model: Any, tokenizer: Any, task_names: list[str], data_dir: Path,
                   eval_spec: EvalSpec) -> dict[str, TaskOutcome]:
    """Score a causal LM on `task_names` (greedy decoding), with per-document samples.

    The tokenizer gets pad = eos when it has no pad token (HFLM pads on the left for generation
    itself). The model is put in eval mode for the call and handed back in the mode it came in.
    Loaded tasks are cached per process and hold the requests of the call in flight, so run one
    evaluation at a time per process.
    """
    from lm_eval.evaluator import evaluate

    _quiet_lm_eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    task_dict = _load_tasks(tuple(task_names), _stamp(Path(data_dir), task_names),
                            eval_spec.max_gen_toks, eval_spec.sandbox_timeout_s, TASKS.folders())
    was_training = model.training
    try:
        with language_model(model, tokenizer, eval_spec) as lm:
            # lm-eval draws tqdm bars it offers no switch for; the runner shows its own progress.
            with contextlib.redirect_stderr(io.StringIO()):
                results = evaluate(lm=lm, task_dict=task_dict, limit=eval_spec.limit,
                                   bootstrap_iters=BOOTSTRAP_ITERS, log_samples=True,
                                   confirm_run_unsafe_code=True)  # programs run in benchmark.sandbox
    finally:
        model.train(was_training)
    return {name: _outcome(name, results) for name in task_names}


def require_backend(eval_spec: EvalSpec) -> None:
    """Refuse, in one line and before any work, a backend whose package is not installed."""
    from importlib.util import find_spec

    from benchmark.errors import UserError

    if eval_spec.backend == "vllm" and find_spec("vllm") is None:
        raise UserError("eval.backend vllm needs vLLM, which runs on a GPU: pip install 'soupbench[gpu]' "
                        "(or use eval.backend hf, the default)")


@contextlib.contextmanager
def language_model(model: Any, tokenizer: Any, eval_spec: EvalSpec, folder: Path | None = None):
    """The lm-eval model that scores `model`, by the suite's `eval.backend`.

    `hf` (the default) wraps the model in memory in lm-eval's HFLM. `vllm` hands lm-eval's vLLM
    backend a folder (vLLM loads weights itself, never from a module in memory): the merged model
    and its tokenizer are saved there (a temporary folder unless `folder` is given) and the engine
    is released when the block ends, so the next cell's model gets the GPU's memory.
    """
    max_length = getattr(model.config, "max_position_embeddings", None)
    if eval_spec.backend == "hf":
        from lm_eval.models.huggingface import HFLM

        yield HFLM(pretrained=model, tokenizer=tokenizer, batch_size=eval_spec.batch_size, max_length=max_length)
        return
    require_backend(eval_spec)
    from lm_eval.models.vllm_causallms import VLLM

    with contextlib.ExitStack() as stack:
        target = folder or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soupbench-vllm-")))
        save_for_engine(model, tokenizer, target)
        lm = VLLM(pretrained=str(target), tokenizer=str(target), dtype=str(model.dtype).removeprefix("torch."),
                  batch_size="auto", max_model_len=max_length, max_gen_toks=eval_spec.max_gen_toks,
                  **eval_spec.vllm_args)
        try:
            yield lm
        finally:
            del lm
            _release_gpu_memory()


def save_for_engine(model: Any, tokenizer: Any, folder: Path) -> Path:
    """The merged model as a hub-format folder (safetensors, config, tokenizer) that an inference
    engine loads by path: what vLLM is given; loading it back gives the same model."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _release_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class SamplesMismatchError(ValueError):
    """Stored per-sample outputs that are not what the task's documents and scoring rules give."""


def rescore(task_name: str, samples: list[SampleRecord], data_dir: Path, eval_spec: EvalSpec,
            what: str = "run") -> list[ScoreRecord]:
    """The task's scores recomputed from stored per-sample outputs, without a model.

    Each sample's prompt and target must be those of the task's document of the same index (the
    documents of `data_dir`); its generation goes through the task's own lm-eval filters (programs
    run again in the sandbox) and `process_results`, exactly as `evaluate_model` scores it, and
    the per-document values are averaged as lm-eval's `mean` does. A sample whose `correct` is not
    what its generation earns is refused, naming it. This is how an imported bundle's scores are
    shown to follow from its samples (`benchmark.bundle`). Programs that time out in one run and not
    in the other are settled by `_settle_timeout` (a time limit is not reproducible on a busy machine).
    """
    from lm_eval.api.instance import Instance

    _quiet_lm_eval()
    task = _load_tasks((task_name,), _stamp(Path(data_dir), [task_name]), eval_spec.max_gen_toks,
                       eval_spec.sandbox_timeout_s, TASKS.folders())["tasks"][task_name]
    docs = list(task.eval_docs)
    if eval_spec.limit:
        docs = docs[: int(eval_spec.limit)]
    indices = [s.doc_index for s in samples]
    if sorted(indices) != list(range(len(docs))):
        raise SamplesMismatchError(f"{what}: its samples are documents {_span(indices)}, the task's documents are "
                                   f"0..{len(docs) - 1}: each document must be scored exactly once")
    ordered = sorted(samples, key=lambda sample: sample.doc_index)
    instances = []
    for sample in ordered:
        doc = docs[sample.doc_index]
        if sample.prompt != task.doc_to_text(doc) or sample.target != str(task.doc_to_target(doc)):
            raise SamplesMismatchError(f"{what}: sample {sample.doc_index}'s prompt or target is not that of the "
                                       f"task's document {sample.doc_index}")
        instance = Instance(request_type="generate_until", doc=doc, arguments=(sample.prompt, {}), idx=0,
                            metadata=(task_name, sample.doc_index, 1))
        instance.resps = [sample.generation]
        instances.append(instance)
    task._instances = instances
    try:
        task.apply_filters()
        (filter_name,) = {name for instance in instances for name in instance.filtered_resps}
        values: dict[str, list[float]] = {}
        primary = TASKS.get(task_name).primary_metric
        for sample, instance in zip(ordered, instances):
            response = instance.filtered_resps[filter_name]
            if isinstance(response, dict) and "timed_out" in response:
                response = _settle_timeout(response, sample, eval_spec)
            metrics = task.process_results(instance.doc, [response])
            if sample.correct is not None and bool(metrics[primary]) != sample.correct:
                raise SamplesMismatchError(
                    f"{what}: sample {sample.doc_index} is stored as correct={sample.correct}, but its generation "
                    f"scores {primary}={metrics[primary]}")
            for metric, value in metrics.items():
                values.setdefault(metric, []).append(float(value))
    finally:
        task._instances = []
    n = len(ordered)
    return [ScoreRecord(metric=metric, value=sum(vals) / n, n_samples=n, primary=metric == primary,
                        stderr=(statistics.stdev(vals) / math.sqrt(n)) if n > 1 else None)
            for metric, vals in values.items()]


RETRIES_ALONE = 2  # re-runs, one program at a time, of a program that timed out only now


def _settle_timeout(response: dict, sample: SampleRecord, eval_spec: EvalSpec) -> dict:
    """A program's outcome when run again, where the two runs differ only by the clock.

    A time limit is wall-clock time, which a loaded machine stretches: a program run again may time
    out where it finished before, or finish where it timed out before. A recorded timeout is a
    failure whatever caused it, so it is kept as recorded (running it again cannot make a stored
    failure a success). A recorded success that times out now is run again alone, up to
    `RETRIES_ALONE` times: it keeps its success only by finishing in time, so a program that loops
    forever can never be passed off as one that printed the answer.
    """
    from tasks._common.filters import ExecuteProgram

    from benchmark.sandbox import run_program

    recorded_timeout = bool(sample.extra.get("timed_out"))
    if response["timed_out"] and not recorded_timeout:
        executor = ExecuteProgram(timeout_s=eval_spec.sandbox_timeout_s)
        for _ in range(RETRIES_ALONE):
            again = executor._record(response["program"], run_program(response["program"], executor.limits))
            if not again["timed_out"]:
                return again
        return response
    if recorded_timeout and not response["timed_out"]:
        return {**response, "ok": False, "timed_out": True, "value": None, "stdout": "",
                "returncode": sample.extra.get("returncode"), "error": sample.extra.get("error") or "timed out"}
    return response


def _span(indices: list[int]) -> str:
    return f"{min(indices)}..{max(indices)} ({len(indices)}, {len(set(indices))} distinct)" if indices else "none"


def _stamp(data_dir: Path, task_names: list[str]) -> tuple:
    """What the cached tasks depend on: the data folder and each data file's size and mtime."""
    data_dir = data_dir.resolve()
    stats = []
    for name in task_names:
        path = data_file(data_dir, name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: call write_task_data({task_names!r}, ...) first")
        stat = path.stat()
        stats.append((stat.st_size, stat.st_mtime_ns))
    return str(data_dir), tuple(stats)


@functools.lru_cache(maxsize=4)
def _task_manager(folders: tuple[Path, ...]):
    """lm-eval's index of the registered tasks' YAMLs: every task folder (built in or from outside,
    `TASKS.folders()`), so that `!function metric.process_results` resolves next to each YAML."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(folder) for folder in folders], include_defaults=False)


def _task_config(name: str) -> dict:
    """The task's YAML as lm-eval reads it (functions resolved), parsed once per process."""
    return _parsed_config(name, TASKS.folders())


@functools.lru_cache(maxsize=64)
def _parsed_config(name: str, folders: tuple[Path, ...]) -> dict:
    # lm-eval has no public "config of a registered task, with overrides" call; its loader is the
    # one function that reads a task YAML exactly as TaskManager does.
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = _task_manager(folders).task_index.get(name)
    if entry is None or entry.yaml_path is None:
        info = TASKS.get(name)  # an unknown name: the registry's error lists the known ones
        raise LookupError(f"lm-eval found no YAML for task {name!r} in {info.folder}")
    return load_yaml(entry.yaml_path, resolve_func=True)


@functools.lru_cache(maxsize=8)
def _load_tasks(names: tuple[str, ...], stamp: tuple, max_gen_toks: int, timeout_s: float,
                folders: tuple[Path, ...]) -> dict:
    """lm-eval tasks with the suite's EvalSpec applied, reused across models: `evaluate` rebuilds a
    task's requests on every call, so a loaded task carries nothing from one model to the next.
    `folders` (the registered tasks' folders) is part of the key: another task set, another index."""
    data_dir = stamp[0]
    specs = []
    for name in names:
        cfg = copy.deepcopy(_parsed_config(name, folders))
        cfg["generation_kwargs"] = {**cfg.get("generation_kwargs", {}), "max_gen_toks": max_gen_toks}
        for pipeline in cfg.get("filter_list", []):
            for step in pipeline["filter"]:
                if "timeout_s" in step:
                    step["timeout_s"] = timeout_s
        cfg["metadata"] = {**cfg.get("metadata", {}), "data_dir": data_dir}
        specs.append(cfg)
    return _task_manager(folders).load(specs)


def _outcome(name: str, results: dict) -> TaskOutcome:
    primary = TASKS.get(name).primary_metric
    values = results["results"][name]
    if len({key.partition(",")[2] for key in values} - {""}) != 1:
        # lm-eval logs each document once per filter pipeline; records assume exactly one.
        raise RuntimeError(f"task {name!r} must have one filter pipeline, reported {sorted(values)}")
    n_samples = int(results["n-samples"][name]["effective"])
    scores = []
    for key, value in values.items():
        metric, _, filter_name = key.partition(",")
        if not filter_name or metric.endswith("_stderr"):
            continue  # "alias", and the stderr entries read below
        stderr = values.get(f"{metric}_stderr,{filter_name}")
        scores.append(ScoreRecord(metric=metric, value=float(value),
                                  stderr=float(stderr) if isinstance(stderr, (int, float)) else None,
                                  n_samples=n_samples, primary=metric == primary))
    if not any(s.primary for s in scores):
        raise RuntimeError(f"task {name!r} reported {sorted(values)}, not its primary metric {primary!r}")
    samples = sorted((_sample(s, primary) for s in results["samples"][name]), key=lambda s: s.doc_index)
    return TaskOutcome(task=name, scores=scores, samples=samples)


def _sample(logged: dict, primary: str) -> SampleRecord:
    """One of lm-eval's logged samples as a record (one request per document, generate_until).
    A document's `category` (the kind of question, where the task gives one) goes into `extra`."""
    response = logged["filtered_resps"][0]
    executed, extra = None, {}
    if isinstance(response, dict):  # a program run by tasks/_common/filters.ExecuteProgram
        executed = response["stdout"] if response["ok"] else response["error"]
        extra = {key: response[key] for key in ("returncode", "timed_out", "value", "error")}
    category = (logged.get("doc") or {}).get("category")
    if category is not None:
        extra["category"] = str(category)
    return SampleRecord(doc_index=int(logged["doc_id"]), prompt=logged["arguments"][0][0],
                        generation=logged["resps"][0][0], target=str(logged["target"]),
                        executed=executed, correct=bool(logged[primary]), extra=extra)


class _DropKnownNoise(logging.Filter):
    """Warnings lm-eval repeats on every call that only restate how this bridge calls it."""

    NOISE = ("`pretrained` model kwarg is not of type `str`", "Passed an already-initialized model",
             "Custom kwargs can be passed to `--metadata`")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


@functools.cache
def _quiet_lm_eval() -> None:
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    # A logger's filters see only its own records, so they go on the two modules that say these.
    for module in ("lm_eval.models.huggingface", "lm_eval.api.task"):
        logging.getLogger(module).addFilter(_DropKnownNoise())

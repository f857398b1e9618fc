"""The evaluation bridge and the task metrics, checked against truth computed here independently.

- Metrics: hand-written generations (right, wrong, crashing, hanging programs; answer forms) go
  through each task's own lm-eval filters and `process_results`, and must score as written here.
- End to end: a tiny Llama (hidden 32) that memorised three documents of each task is evaluated
  in-process; its samples' flags must agree with re-running the stored generations here, its scores
  must be the flags' means, and lm-eval's own CLI on the saved model must agree sample by sample.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from benchmark import evaluation
from benchmark.evaluation import evaluate_model, write_task_data
from benchmark.micro import world
from benchmark.sandbox import SandboxLimits, parse_number, run_program
from benchmark.suite import EvalSpec
from benchmark.taskinfo import TASKS
from tasks._common.filters import ExecuteProgram

NAMES = ["math", "code", "math_code"]
PROGRAM_TASKS = ["code", "math_code"]
EVAL_SIZE, SEED, LIMIT = 20, 0, 5
SPEC = EvalSpec(limit=LIMIT, batch_size=8, max_gen_toks=24, sandbox_timeout_s=2.0)


# ---------------------------------------------------------------- fixtures


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("task_data")
    write_task_data(NAMES, path, EVAL_SIZE, SEED)
    return path


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the builders' own text; eos but deliberately no pad token."""
    texts = [d["prompt"] + d["target"] for n in NAMES for d in TASKS.get(n).build_eval(40, 1)]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def model(tokenizer) -> LlamaForCausalLM:
    """A tiny Llama that has memorised prompt -> target + eos for documents 0-2 of each task, so
    that an evaluation has right and wrong answers, programs that run and programs that crash."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    net = LlamaForCausalLM(config)
    texts = [d["prompt"] + d["target"] for n in NAMES for d in TASKS.get(n).build_eval(EVAL_SIZE, SEED)[:3]]
    encoded = [tokenizer(t).input_ids + [tokenizer.eos_token_id] for t in texts]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [tokenizer.eos_token_id] * (width - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(120):
        loss = net(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net  # left in training mode on purpose: the bridge must hand it back that way


@pytest.fixture(scope="module")
def outcomes(model, tokenizer, data_dir):
    assert tokenizer.pad_token is None and model.training
    return evaluate_model(model, tokenizer, NAMES, data_dir, SPEC)


# ---------------------------------------------------------------- metrics on hand-written answers


def score(task_name: str, data_dir: Path, cases: list[tuple[str, float]]) -> list[dict]:
    """Run (generation, answer) pairs through the task's own YAML filters and process_results."""
    tasks = evaluation._load_tasks.__wrapped__((task_name,), evaluation._stamp(data_dir, [task_name]),
                                               SPEC.max_gen_toks, 1.0, TASKS.folders())
    task = tasks["tasks"][task_name]
    task._instances = [
        Instance("generate_until", {"prompt": "", "target": "", "answer": answer}, ("", {}), 0,
                 (task_name, i, 1), resps=[generation])
        for i, (generation, answer) in enumerate(cases)]
    task.apply_filters()
    (pipeline,) = task._instances[0].filtered_resps
    return [task.process_results(inst.doc, [inst.filtered_resps[pipeline]]) for inst in task._instances]


MATH_CASES = [  # generation, answer, exact_match
    (" 3 * 8 = 24. The answer is 24.", 24, 1.0),
    (" 3 * 8 = 24. The answer is 24.\nQuestion: Ann has 5 cups.", 24, 1.0),  # cut at the stop
    (" 9 - 7 = 2. The answer is 2. Question: 7", 2, 1.0),
    (" 3 * 8 = 24. The answer is 25.", 24, 0.0),  # the last number counts, not the first
    (" The answer is 1,234.", 1234, 1.0),
    (" It is -3.", -3, 1.0),
    (" 5 / 2 = 2.5", 2.5, 1.0),
    (" 7.0004", 7, 1.0),  # within 1e-3
    (" 7.01", 7, 0.0),
    (" no number at all", 0, 0.0),
    ("", 0, 0.0),
]


def test_math_exact_match_takes_the_last_number_before_the_first_stop(data_dir):
    got = score("math", data_dir, [(g, a) for g, a, _ in MATH_CASES])
    assert [r["exact_match"] for r in got] == [expected for _, _, expected in MATH_CASES]


PROGRAM_CASES = [  # program, answer, exec_accuracy, program_ran
    ("print(251 * 93)", 23343, 1.0, 1.0),
    ("x = 251\ny = 93\nprint(x * y)", 23343, 1.0, 1.0),
    ("print(251 * 93)\n\nQuestion: Ann has 5 cups.", 23343, 1.0, 1.0),  # cut at the stop
    ("print('The answer is', 251 * 93)", 23343, 1.0, 1.0),
    ("print(23343.0004)", 23343, 1.0, 1.0),  # within 1e-3
    ("print(23343.01)", 23343, 0.0, 1.0),
    ("print(251 + 93)", 23343, 0.0, 1.0),  # wrong program
    ("x = 1", 23343, 0.0, 1.0),  # prints nothing
    ("  \n", 23343, 0.0, 0.0),  # no program at all
    ("print('x' * 50_000)\nprint(23343)", 23343, 1.0, 1.0),  # long output: all of it is read
    ("print('x' * 100_000)\nprint(23343)", 23343, 0.0, 0.0),  # over the sandbox's output cap
    ("print(251 * 93", 23343, 0.0, 0.0),  # syntax error
    ("print(1 / 0)", 23343, 0.0, 0.0),  # crash
    ("print(23343)\nraise SystemExit(3)", 23343, 0.0, 0.0),  # right number, then a crash
    ("while True:\n    pass", 23343, 0.0, 0.0),  # infinite loop: timed out
    ("print(23343, flush=True)\nwhile True:\n    pass", 23343, 0.0, 0.0),  # right, then hangs
]


@pytest.mark.parametrize("task_name", PROGRAM_TASKS)
def test_program_metrics_execute_in_the_sandbox(task_name, data_dir):
    got = score(task_name, data_dir, [(p, a) for p, a, _, _ in PROGRAM_CASES])
    assert [r["exec_accuracy"] for r in got] == [acc for _, _, acc, _ in PROGRAM_CASES]
    assert [r["program_ran"] for r in got] == [ran for _, _, _, ran in PROGRAM_CASES]


def test_execution_records_keep_long_output_short_but_read_all_of_it():
    (record,), = ExecuteProgram(timeout_s=2.0).apply([["print('x' * 50_000)\nprint(7)"]], [{}])
    assert record["ok"] and record["value"] == 7.0
    assert len(record["stdout"]) < 2 * ExecuteProgram.KEEP_CHARS + 20 and record["stdout"].endswith("7\n")


@pytest.mark.parametrize("task_name", NAMES)
def test_metrics_cut_at_the_same_strings_generation_stops_at(task_name):
    cfg = evaluation._task_config(task_name)
    cut = cfg["filter_list"][0]["filter"][0]
    assert cut["until"] == cfg["generation_kwargs"]["until"]
    assert cfg["generation_kwargs"]["do_sample"] is False


# ---------------------------------------------------------------- data files


def test_write_task_data_is_idempotent(tmp_path):
    write_task_data(["math_code"], tmp_path, 7, 3)
    path = tmp_path / "math_code.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == TASKS.get("math_code").build_eval(7, 3)
    stamp = path.stat().st_mtime_ns
    write_task_data(["math_code"], tmp_path, 7, 3)
    assert path.stat().st_mtime_ns == stamp
    write_task_data(["math_code"], tmp_path, 9, 3)
    assert len(path.read_text().splitlines()) == 9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


# ---------------------------------------------------------------- end to end


def recompute_flag(task_name: str, generation: str, answer: float) -> bool:
    """The metric, written again here: cut at the YAML's stops, then read or run the answer."""
    until = evaluation._task_config(task_name)["generation_kwargs"]["until"]
    text = generation
    for stop in until:
        text = text.split(stop)[0]
    if task_name == "math":
        numbers = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
        return bool(numbers) and abs(float(numbers[-1]) - answer) <= 1e-3
    result = run_program(text, SandboxLimits(timeout_s=SPEC.sandbox_timeout_s))
    value = parse_number(result.stdout)
    return result.ok and value is not None and abs(value - answer) <= 1e-3


def test_evaluate_model_samples_agree_with_re_execution(outcomes, data_dir):
    flags = []
    for name in NAMES:
        outcome = outcomes[name]
        docs = TASKS.get(name).build_eval(EVAL_SIZE, SEED)
        assert [s.doc_index for s in outcome.samples] == list(range(LIMIT))
        for sample in outcome.samples:
            doc = docs[sample.doc_index]
            assert sample.prompt == doc["prompt"] and sample.target == doc["target"]
            assert sample.extra["category"] == doc["category"] and doc["category"] in world.OPS
            assert sample.correct == recompute_flag(name, sample.generation, doc["answer"]), sample
            assert (sample.executed is not None) == (name in PROGRAM_TASKS)
            flags.append(sample.correct)
    assert any(flags) and not all(flags)  # the memorising model makes the check non-trivial


def test_scores_are_means_of_the_flags_with_binomial_stderr(outcomes):
    for name in NAMES:
        outcome = outcomes[name]
        scores = {s.metric: s for s in outcome.scores}
        primary = [s for s in outcome.scores if s.primary]
        assert [s.metric for s in primary] == [TASKS.get(name).primary_metric]
        assert all(s.n_samples == LIMIT for s in outcome.scores)
        per_metric = {primary[0].metric: [float(s.correct) for s in outcome.samples]}
        if name in PROGRAM_TASKS:
            per_metric["program_ran"] = [float(s.extra["error"] is None)
                                         for s in outcome.samples]
        assert set(scores) == set(per_metric)
        for metric, xs in per_metric.items():
            mean = sum(xs) / len(xs)
            assert scores[metric].value == pytest.approx(mean)
            sample_std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
            assert scores[metric].stderr == pytest.approx(sample_std / math.sqrt(len(xs)))


def test_generation_stops_on_eos_and_stop_strings(outcomes, model, tokenizer):
    # Each task's generations against that task's own stop strings: a program may hold the "\n"
    # that ends a math answer.
    for name in NAMES:
        until = evaluation._task_config(name)["generation_kwargs"]["until"]
        assert not [s.generation for s in outcomes[name].samples if any(stop in s.generation for stop in until)]
    samples = [s for name in NAMES for s in outcomes[name].samples]
    # A memorised document comes back as exactly its target: generation ended at the trained eos
    # (no stop string follows a program) instead of running on to max_gen_toks.
    assert any(s.generation == s.target for s in samples if s.executed is not None)
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"
    assert model.training  # handed back in the mode it came in


def test_eval_spec_reaches_the_cached_tasks(outcomes, model, tokenizer, data_dir):
    short = evaluate_model(model, tokenizer, ["code"], data_dir, SPEC.model_copy(update={"max_gen_toks": 2}))
    assert all(len(tokenizer(s.generation).input_ids) <= 2 for s in short["code"].samples)
    again = evaluate_model(model, tokenizer, NAMES, data_dir, SPEC)
    assert again == outcomes  # loaded tasks are reused across models without carrying state


def test_batching_pads_on_the_left(outcomes, model, tokenizer, data_dir):
    one_by_one = evaluate_model(model, tokenizer, ["math_code"], data_dir,
                                SPEC.model_copy(update={"batch_size": 1}))
    assert [s.generation for s in one_by_one["math_code"].samples] == \
        [s.generation for s in outcomes["math_code"].samples]


def test_lm_eval_cli_agrees_with_the_bridge(outcomes, model, tokenizer, data_dir, tmp_path):
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lm_eval", "--model", "hf",
               "--model_args", f"pretrained={tmp_path / 'model'},dtype=float32", "--device", "cpu",
               "--tasks", "math_code", "--include_path", str(evaluation.TASKS_DIR),
               "--metadata", json.dumps({"data_dir": str(data_dir)}), "--limit", str(LIMIT),
               "--batch_size", str(SPEC.batch_size), "--gen_kwargs", f"max_gen_toks={SPEC.max_gen_toks}",
               "--confirm_run_unsafe_code", "--log_samples", "--output_path", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    (samples_file,) = (tmp_path / "out").rglob("samples_math_code_*.jsonl")
    cli = json.loads(results_file.read_text())["results"]["math_code"]
    bridge = {s.metric: s.value for s in outcomes["math_code"].scores}
    assert cli["exec_accuracy,execute"] == pytest.approx(bridge["exec_accuracy"])
    assert cli["program_ran,execute"] == pytest.approx(bridge["program_ran"])
    cli_samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()),
                         key=lambda s: s["doc_id"])
    ours = outcomes["math_code"].samples
    assert [s["resps"][0][0] for s in cli_samples] == [s.generation for s in ours]
    assert [bool(s["exec_accuracy"]) for s in cli_samples] == [s.correct for s in ours]


# ---------------------------------------------------------------- backends


def test_the_folder_an_engine_loads_scores_as_the_model_in_memory(outcomes, model, tokenizer, data_dir, tmp_path):
    """eval.backend vllm scores the merged model from the folder `save_for_engine` writes (vLLM loads
    weights by path); that folder, loaded back, must be the same model: the same generations."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = evaluation.save_for_engine(model, tokenizer, tmp_path / "engine")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    again = evaluate_model(loaded, AutoTokenizer.from_pretrained(folder), NAMES, data_dir, SPEC)
    for name in NAMES:
        assert [(s.generation, s.correct) for s in again[name].samples] == \
            [(s.generation, s.correct) for s in outcomes[name].samples]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed: the refusal cannot happen")
def test_the_vllm_backend_without_vllm_is_refused_before_any_work(tmp_path):
    from benchmark.errors import UserError
    from benchmark.runner import prepare_plan
    from benchmark.storage import open_store
    from benchmark.suite import Suite
    from tests.conftest import TINY_SUITE

    suite = Suite.model_validate({**TINY_SUITE, "eval": {**TINY_SUITE["eval"], "backend": "vllm"}})
    with pytest.raises(UserError, match=r"needs vLLM.*pip install 'soupbench\[gpu\]'"):
        prepare_plan(suite, open_store(f"sqlite:///{tmp_path / 'r.db'}"), ["base"], ["math"], [0])

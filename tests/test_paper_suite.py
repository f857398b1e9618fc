"""The `paper` suite's code path on stand-ins: files in the real formats of MetaMathQA, CodeAlpaca and
GSM-Hard, and a tiny random Llama saved as a hub-format folder (`paper-tiny`, which differs from
`paper` only in sizes). The hub itself is never reached: without it `--suite paper` fails in one line.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark import cache
from benchmark.base_model import base_recipe_hash
from benchmark.storage import SampleRecord
from benchmark.suite import SUITES, Suite, load_suite

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The fields in which paper-tiny may differ from paper: where things are and how many of them.
SIZE_FIELDS = {
    "name", "description", "seeds", "base.model_id", "task_options.gsm_hard.data_path",
    "skills.0.data_path", "skills.0.train_size", "skills.0.eval_size",
    "skills.1.data_path", "skills.1.train_size", "skills.1.eval_size",
    "expert.epochs", "expert.batch_size", "expert.warmup_steps", "expert.fit_warmup_steps",
    "eval.batch_size", "eval.max_gen_toks",
    "method_params.cat.steps", "method_params.cat.batch_size", "method_params.cat.sample_fraction",
}


def _metamathqa_rows(n: int) -> list[dict]:
    return [{"query": f"Tim has {a} apples and buys {a + 3} more. How many apples does he have?",
             "response": f"He has {a} + {a + 3} = {2 * a + 3} apples.\nThe answer is: {2 * a + 3}",
             "type": "GSM_AnsAug", "original_question": f"Tim has {a} apples and buys {a + 3} more."}
            for a in range(1, n + 1)]


def _codealpaca_rows(n: int) -> list[dict]:
    return [{"instruction": f"Write a function that multiplies a number by {k}.",
             "input": "" if k % 2 else f"x = {k}", "output": f"def times_{k}(x):\n    return x * {k}"}
            for k in range(1, n + 1)]


def _gsm_hard_rows(n: int) -> list[dict]:
    return [{"input": f"A shop sells {1000 + k} pens a day. How many pens does it sell in {k} days?",
             "code": f"def solution():\n    pens = {1000 + k}\n    days = {k}\n    result = pens * days\n    return result",
             "target": float((1000 + k) * k)} for k in range(1, n + 1)]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    """The three data sets in their hub formats (MetaMathQA and CodeAlpaca: one JSON array; GSM-Hard:
    JSON lines, and the same rows as parquet) and a tiny random Llama with its tokenizer, saved as
    `save_pretrained` writes a hub repository."""
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchmark.micro.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("paper-stand-ins")
    math_rows, code_rows, gsm_rows = _metamathqa_rows(12), _codealpaca_rows(12), _gsm_hard_rows(6)
    (folder / "MetaMathQA-395K.json").write_text(json.dumps(math_rows, indent=1))
    (folder / "code_alpaca_20k.json").write_text(json.dumps(code_rows, indent=1))
    (folder / "gsmhardv2.jsonl").write_text("".join(json.dumps(row) + "\n" for row in gsm_rows))
    datasets.Dataset.from_list(gsm_rows).to_parquet(str(folder / "gsm_hard.parquet"))

    from tasks.gsm_hard.data import prompt
    texts = [json.dumps(r) for r in math_rows + code_rows + gsm_rows] + [prompt("x")]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    import torch
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model_dir = folder / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return {"folder": folder, "model": model_dir, "math": folder / "MetaMathQA-395K.json",
            "code": folder / "code_alpaca_20k.json", "gsm_hard": folder / "gsmhardv2.jsonl",
            "gsm_hard_parquet": folder / "gsm_hard.parquet"}


def paper_tiny(paths: dict[str, Path]) -> dict:
    """paper.yaml with its sizes shrunk and its ids pointed at the stand-ins: nothing else changes."""
    raw = yaml.safe_load(SUITES.get("paper").read_text())
    tiny = copy.deepcopy(raw)
    tiny.update(name="paper-tiny", description="paper at test sizes, on stand-ins", seeds=[0])
    tiny["base"]["model_id"] = str(paths["model"])
    for skill, data in zip(tiny["skills"], ("math", "code")):
        skill.update(data_path=str(paths[data]), train_size=8, eval_size=2)
    tiny["task_options"]["gsm_hard"]["data_path"] = str(paths["gsm_hard"])
    tiny["expert"].update(epochs=1, batch_size=4, warmup_steps=1, fit_warmup_steps=1)
    tiny["eval"].update(batch_size=2, max_gen_toks=8)
    tiny["method_params"]["cat"].update(steps=2, batch_size=2, sample_fraction=0.25)
    return tiny


def _leaves(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key in value for k, v in _leaves(value[key], f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def test_paper_tiny_differs_from_paper_only_in_sizes(stand_ins):
    paper = _leaves(load_suite("paper").model_dump(mode="json"))
    tiny = _leaves(Suite.model_validate(paper_tiny(stand_ins)).model_dump(mode="json"))
    assert paper.keys() == tiny.keys()
    differing = {key for key in paper if paper[key] != tiny[key]}
    assert differing <= SIZE_FIELDS, f"paper-tiny changes more than sizes: {sorted(differing - SIZE_FIELDS)}"
    assert {"base.model_id", "skills.0.train_size", "expert.epochs"} <= differing  # and it does shrink


def test_the_new_recipe_fields_leave_micro_hashes_as_released():
    """The micro release is found by these hashes: fields added for the paper stay out of the dump."""
    micro = load_suite("micro")
    assert cache.content_hash(micro.expert.model_dump(mode="json")) == "7c6413acf7279c14"
    assert cache.content_hash([s.model_dump(mode="json") for s in micro.skills]) == "cfec6667f438e6b6"
    assert cache.content_hash(micro.recipe()) == "5f41df9361f18410"
    assert base_recipe_hash(micro) == "d87d613b3495e3c6"
    paper = load_suite("paper").expert.model_dump(mode="json")
    assert (paper["dropout"], paper["epochs"], paper["train_on_inputs"], paper["fit_warmup_steps"]) == (0.05, 3, True, 100)


def test_paper_yaml_is_the_reference_setting():
    suite = load_suite("paper")
    recipe = suite.expert
    assert suite.base.model_id == "yahma/llama-7b-hf" and suite.base.dtype == "bfloat16"
    assert (recipe.rank, recipe.alpha, recipe.lr, recipe.batch_size, recipe.max_length) == (32, 64, 3e-4, 16, 256)
    assert set(recipe.target_modules) == {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"}
    assert recipe.steps_for(395_000) == 74_063 and recipe.steps_for(20_022) == 3_755  # 3 epochs each
    cat = suite.method_params["cat"]
    sampled = sum(round(s.train_size * cat["sample_fraction"]) for s in suite.skills)
    assert sampled == 10_000 and cat["lr"] == 1e-4 and cat["steps"] == -(-sampled // cat["batch_size"])  # 1 epoch


def test_loaders_read_the_real_formats_into_training_examples_and_documents(stand_ins):
    from benchmark.experts import skill_training_data
    from tasks.gsm_hard.data import build_eval

    suite = Suite.model_validate(paper_tiny(stand_ins))
    data = skill_training_data(suite)
    assert {k: len(v) for k, v in data.items()} == {"math": 8, "code": 8}
    math = data["math"][0]
    assert "### Instruction:" in math["prompt"] and "Tim has" in math["prompt"] and math["prompt"].endswith("### Response:\n" + " " * 16)
    assert math["completion"].endswith("The answer is: " + math["completion"].rsplit(" ", 1)[1])
    with_input = next(e for e in data["code"] if "### Input:" in e["prompt"])  # CodeAlpaca's input field
    assert "x = " in with_input["prompt"] and with_input["completion"].startswith("def times_")
    assert skill_training_data(suite) == data  # drawn with the suite's data seed

    from_jsonl = build_eval(6, 0, data_path=str(stand_ins["gsm_hard"]))
    assert from_jsonl == build_eval(6, 0, data_path=str(stand_ins["gsm_hard_parquet"]))
    assert [d["answer"] for d in from_jsonl] == [r["target"] for r in _gsm_hard_rows(6)]
    assert from_jsonl[0]["prompt"].endswith("A shop sells 1001 pens a day. How many pens does it sell in 1 days?\n\n### Response:\n")
    assert "def solution():" in from_jsonl[0]["target"]


def test_a_file_without_the_formats_fields_is_one_clear_line(stand_ins, tmp_path):
    from benchmark.errors import UserError
    from benchmark.experts import skill_training_data

    wrong = tmp_path / "math.json"
    wrong.write_text(json.dumps(_codealpaca_rows(3)))  # CodeAlpaca's fields where MetaMathQA's belong
    raw = paper_tiny(stand_ins)
    raw["skills"][0]["data_path"] = str(wrong)
    with pytest.raises(UserError, match=r"skill math's data \(metamathqa\).*no field\(s\) \['query', 'response'"):
        skill_training_data(Suite.model_validate(raw))


def test_gsm_hard_scores_a_right_solution_right_and_a_wrong_one_wrong_through_lm_eval(stand_ins, tmp_path):
    """Through the task's own lm-eval filters (solution() extracted, run in the sandbox) and metric."""
    from benchmark import sandbox
    from benchmark.evaluation import rescore, write_task_data
    from benchmark.suite import EvalSpec

    sandbox.require_isolation()
    write_task_data(["gsm_hard"], tmp_path, 3, 0, {"gsm_hard": {"data_path": str(stand_ins["gsm_hard"])}})
    docs = [json.loads(line) for line in (tmp_path / "gsm_hard.jsonl").read_text().splitlines()]
    right = "Let's solve it with Python:\n```\ndef solution():\n    return 1001 * 1\n```\n"
    wrong = "Let's solve it with Python:\n```\ndef solution():\n    return 1002 + 2\n```\n"
    no_function = "The answer is 2008."  # the right number, but no program that returns it
    samples = [SampleRecord(doc_index=i, prompt=d["prompt"], generation=g, target=d["target"], executed=None,
                            correct=c, extra={}) for i, (d, g, c) in enumerate(zip(docs, [right, wrong, no_function],
                                                                                 [True, False, False]))]
    scores = {s.metric: s.value for s in rescore("gsm_hard", samples, tmp_path, EvalSpec())}
    assert scores["exec_accuracy"] == pytest.approx(1 / 3) and scores["program_ran"] == pytest.approx(2 / 3)


def test_paper_tiny_trains_merges_and_evaluates_end_to_end(stand_ins, tmp_path):
    from benchmark.results import open_readonly
    from benchmark.runner import run_grid
    from benchmark.storage import open_store

    suite = Suite.model_validate(paper_tiny(stand_ins))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = open_store(url)
    try:
        summary = run_grid(suite, store, methods=["task_arithmetic", "cat"], seeds=[0])
    finally:
        store.close()
    assert summary.failed == [] and summary.computed == 2
    reader = open_readonly(url)
    rows = reader.runs("paper-tiny")
    assert {(r.method, r.task, r.status) for r in rows} == {("task_arithmetic", "gsm_hard", "ok"), ("cat", "gsm_hard", "ok")}
    for row in rows:
        primary = next(s for s in row.scores if s.primary)
        assert primary.metric == "exec_accuracy" and primary.n_samples == 2 and 0.0 <= primary.value <= 1.0
        assert row.expert_fingerprints.keys() == {"math", "code"} and row.base_fingerprint.startswith("sha256:")
        samples = reader.samples(row.id)
        assert len(samples) == 2 and all("### Instruction:" in s.prompt for s in samples)
    cat = next(r for r in rows if r.method == "cat")
    assert cat.output_rank == 64  # two rank-32 experts concatenated
    assert cat.provenance["method_info"]["n_train_examples"] == 4  # a quarter of each skill's 8
    reader.close()


def test_paper_without_the_hub_fails_at_once_in_one_line_naming_what_it_could_not_fetch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOUPBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}  # an empty Hugging Face cache: nothing of the paper's is in it
    db = tmp_path / "results.db"
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", "--suite", "paper", "--db", f"sqlite:///{db}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for ref in ("yahma/llama-7b-hf", "meta-math/MetaMathQA", "sahil2801/CodeAlpaca-20k", "reasoning-machines/gsm-hard"):
        assert ref in lines[0]
    assert "HF_HUB_OFFLINE" in lines[0]
    assert not db.exists() and not (tmp_path / "cache" / "experts").exists()  # refused before any work

"""`soupbench merge` end to end on a tiny saved Llama and two saved PEFT adapters.

The reference for every merged model is independent of SoupBench's merge code: PEFT's own
`merge_and_unload` deltas of each adapter, summed with the weights and added to the base by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from benchmark.adapters import load_expert
from benchmark.cli import app
from benchmark.merge_tool import CARD_JSON, parse_adapter, parse_param
from benchmark.micro.tokenizer import train_tokenizer
from tests.lora_fixtures import add_dense, save_random_peft_expert, tiny_llama

runner = CliRunner()
VOCAB = 300
TEXT = ["Twelve apples cost 3 dollars each; def total(n): return n * 3", "The manual says: press 42.\n"] * 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A saved base (with tokenizer), two saved adapters (different ranks, targets, rsLoRA)."""
    root = tmp_path_factory.mktemp("merge")
    base_dir = root / "base"
    tiny_llama(vocab_size=VOCAB).save_pretrained(base_dir)
    train_tokenizer(TEXT, VOCAB).save_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()  # so adapters record base_dir
    configs = {
        "math": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        "code": LoraConfig(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "o_proj", "down_proj"]),
    }
    dense = {}
    for seed, (name, config) in enumerate(configs.items()):
        _, dense[name] = save_random_peft_expert(base, config, root / name, seed=seed + 1)
    wide = LlamaForCausalLM(LlamaConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB))
    save_random_peft_expert(wide, LoraConfig(r=2, target_modules=["q_proj"]), root / "wide", seed=9)
    return {"root": root, "base": base_dir, "model": base, "dense": dense,
            "adapters": [str(root / "math"), str(root / "code")]}


def invoke(setup: dict, out: Path, method: str, *extra: str, adapters: list[str] | None = None):
    args = ["merge", "--base", str(setup["base"]), "--method", method, "--out", str(out)]
    for adapter in adapters or setup["adapters"]:
        args += ["--adapter", adapter]
    return runner.invoke(app, args + list(extra))


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(1, 17).view(2, 8) * 7 % VOCAB
    with torch.no_grad():
        return model(input_ids=ids).logits


def reference(setup: dict, weights: dict[str, float]) -> torch.nn.Module:
    """base + sum_i w_i dW_i with PEFT's deltas, added by hand."""
    total: dict[str, torch.Tensor] = {}
    for name, weight in weights.items():
        for module, delta in setup["dense"][name].items():
            total[module] = total.get(module, torch.zeros_like(delta)) + weight * delta
    return add_dense(setup["model"], total)


def test_task_arithmetic_model_loads_and_matches_reference(setup, tmp_path):
    out = tmp_path / "ta"
    result = invoke(setup, out, "task_arithmetic", "--weights", "1.0,0.5", "--seed", "3")
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert (out / "model.safetensors").is_file()
    expected = logits(reference(setup, {"math": 1.0, "code": 0.5}))
    torch.testing.assert_close(logits(merged), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(logits(setup["model"]), expected, atol=1e-3)  # the merge changed something
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.encode("apples 42") == AutoTokenizer.from_pretrained(setup["base"]).encode("apples 42")

    card = json.loads((out / CARD_JSON).read_text())
    assert card["method"] == "task_arithmetic" and card["params"] == {"weights": [1.0, 0.5]}
    assert card["seed"] == 3 and card["output"] == "model" and card["output_rank"] is None
    assert card["base"]["path"] == str(setup["base"]) and card["base"]["fingerprint"].startswith("sha256:")
    assert [a["name"] for a in card["adapters"]] == ["math", "code"]
    for record, path in zip(card["adapters"], setup["adapters"]):
        assert record["fingerprint"] == load_expert(path).fingerprint and record["path"] == path
    readme = (out / "README.md").read_text()
    assert "task_arithmetic" in readme and card["adapters"][0]["fingerprint"][:16] in readme
    assert not list(tmp_path.glob(".ta.partial-*"))  # the staging folder was renamed, not left


def test_params_record_resolved_defaults(setup, tmp_path):
    out = tmp_path / "ties"
    result = invoke(setup, out, "ties", "--param", "density=0.5", "--param", "weights=[1, 2]")
    assert result.exit_code == 0, result.output
    card = json.loads((out / CARD_JSON).read_text())
    assert card["params"] == {"weights": [1.0, 2.0], "density": 0.5, "majority_sign_method": "total"}
    assert parse_param("majority_sign_method=frequency") == ("majority_sign_method", "frequency")
    assert parse_param("flag=true") == ("flag", True) and parse_param("rank=8") == ("rank", 8)
    assert parse_adapter("m=/a/b") == ("m", "/a/b") and parse_adapter("/x/math/") == ("math", "/x/math/")


def test_cat_static_as_adapter_equals_full_model(setup, tmp_path):
    full, lora = tmp_path / "full", tmp_path / "lora"
    assert invoke(setup, full, "cat_static", "--weights", "0.7,1.3").exit_code == 0
    result = invoke(setup, lora, "cat_static", "--weights", "0.7,1.3", "--as-adapter")
    assert result.exit_code == 0, result.output
    assert (lora / "adapter_config.json").is_file() and not (lora / "model.safetensors").exists()
    card = json.loads((lora / CARD_JSON).read_text())
    assert card["output"] == "adapter" and card["output_rank"] == 6  # q: 4 + 2
    fresh = AutoModelForCausalLM.from_pretrained(setup["base"]).eval()
    peft_model = PeftModel.from_pretrained(fresh, lora).eval()
    merged = AutoModelForCausalLM.from_pretrained(full).eval()
    torch.testing.assert_close(logits(peft_model), logits(merged), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits(merged), logits(reference(setup, {"math": 0.7, "code": 1.3})),
                               rtol=1e-4, atol=1e-4)


def test_mismatched_adapter_exits_2_and_writes_nothing(setup, tmp_path):
    out = tmp_path / "nested" / "bad"
    result = invoke(setup, out, "task_arithmetic", adapters=[setup["adapters"][0], str(setup["root"] / "wide")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "adapter 'wide' does not fit the base" in errors[0]
    assert "q_proj" in errors[0] and "Traceback" not in result.output
    assert not out.exists() and not out.parent.exists()


def test_declared_base_mismatch_and_override(setup, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(setup["adapters"][0], moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/other-model"}))
    result = invoke(setup, tmp_path / "o1", "expert-moved", adapters=[str(moved)])
    assert result.exit_code == 2 and "org/other-model" in result.output and "--ignore-declared-base" in result.output
    assert not (tmp_path / "o1").exists()
    ok = invoke(setup, tmp_path / "o2", "expert-moved", "--ignore-declared-base", adapters=[str(moved)])
    assert ok.exit_code == 0, ok.output


def test_dense_method_as_adapter_is_refused(setup, tmp_path):
    result = invoke(setup, tmp_path / "x", "ties", "--as-adapter")
    assert result.exit_code == 2 and "dense" in result.output and "cat_static" in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("method", ["cat", "data_mix", "lorahub"])
def test_methods_that_need_data_are_refused(setup, tmp_path, method):
    result = invoke(setup, tmp_path / "x", method)
    assert result.exit_code == 2 and "soupbench run" in result.output and method in result.output
    assert not (tmp_path / "x").exists()


def test_named_adapters_and_clear_errors(setup, tmp_path):
    named = [f"alpha={setup['adapters'][0]}", f"beta={setup['adapters'][1]}"]
    result = invoke(setup, tmp_path / "s", "expert-beta", "--as-adapter", adapters=named)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / CARD_JSON).read_text())["output_rank"] == 2
    again = invoke(setup, tmp_path / "s", "expert-beta", adapters=named)  # refuses to overwrite
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = invoke(setup, tmp_path / "y", "task_arithmetic", "--weights", "1,2,3")
    assert bad.exit_code == 2 and "3 weights given for 2 experts" in bad.output


def _broken_copy(setup: dict, tmp_path: Path, source: str, change) -> str:
    """A copy of a saved adapter (or base) folder with one thing broken by `change(folder)`."""
    folder = tmp_path / f"broken-{Path(source).name}"
    shutil.copytree(source, folder)
    change(folder)
    return str(folder)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _set_factor(folder: Path, value: float) -> None:
    """Every entry of one lora_B factor set to `value` (B @ A then mixes +inf and -inf into NaN)."""
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    key = sorted(k for k in tensors if "lora_B" in k)[0]
    tensors[key] = torch.full_like(tensors[key], value)
    save_file(tensors, str(path), metadata={"format": "pt"})


# (what is broken, how, the extra arguments, what the one line must say, what it must not say)
BROKEN_INPUTS = {
    "truncated adapter weights": (
        "adapter", lambda f: _truncate(f / "adapter_model.safetensors"), [],
        ["adapter_model.safetensors", "truncated"], []),
    "missing adapter folder": (
        "adapter", lambda f: shutil.rmtree(f), [], ["does not exist"], ["Repo id"]),
    "broken adapter_config.json": (
        "adapter", lambda f: (f / "adapter_config.json").write_text('{"r": 4,'), [],
        ["adapter_config.json", "not valid JSON"], []),
    "adapter_config.json without r": (
        "adapter", lambda f: (f / "adapter_config.json").write_text('{"lora_alpha": 8}'), [],
        ["adapter_config.json", "r=None"], []),
    "inf adapter": (
        "adapter", lambda f: _set_factor(f, float("inf")), [], ["adapter_model.safetensors", "inf values"],
        ["NaN", "broke the merge contract"]),
    "NaN adapter, svd as adapter": (
        "adapter", lambda f: _set_factor(f, float("nan")), ["--method", "svd", "--as-adapter"],
        ["adapter_model.safetensors", "NaN values"], ["LinAlgError"]),
    "truncated base weights": (
        "base", lambda f: _truncate(f / "model.safetensors"), [], ["model.safetensors", "truncated"], []),
    "missing base folder": (
        "base", lambda f: shutil.rmtree(f), [], ["does not exist"], ["Repo id"]),
}


@pytest.mark.parametrize("case", list(BROKEN_INPUTS))
def test_every_broken_input_is_one_line_exit_2_and_writes_nothing(setup, tmp_path, case):
    target, change, extra, said, unsaid = BROKEN_INPUTS[case]
    adapters = list(setup["adapters"])
    base = str(setup["base"])
    if target == "adapter":
        adapters[0] = _broken_copy(setup, tmp_path, adapters[0], change)
    else:
        base = _broken_copy(setup, tmp_path, base, change)
    method = extra[1] if extra[:1] == ["--method"] else "task_arithmetic"
    args = ["merge", "--base", base, "--method", method, "--out", str(tmp_path / "out")]
    for adapter in adapters:
        args += ["--adapter", adapter]
    result = runner.invoke(app, args + extra[2:])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert all(text in errors[0] for text in said), errors[0]
    assert not any(text in errors[0] for text in unsaid), errors[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_debug_shows_the_traceback_of_a_refusal(setup, tmp_path):
    args = ["merge", "--base", str(tmp_path / "nowhere"), "--method", "task_arithmetic", "--out", str(tmp_path / "o")]
    args += ["--adapter", setup["adapters"][0]]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 2 and "error: --base" in plain.output and "Traceback" not in plain.output
    debug = runner.invoke(app, ["--debug"] + args)
    assert debug.exit_code == 1 and "does not exist" in str(debug.exception)
    assert type(debug.exception).__name__ == "UserError"

"""Suite files are validated at the boundary: a bad one is refused with a message naming the problem."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.micro.corpus import DOCUMENT_KINDS, documents
from benchmark.registry import UnknownNameError
from benchmark.suite import SuiteError, load_suite
from tests.conftest import TINY_SUITE


def write(tmp_path, content) -> str:
    path = tmp_path / "suite.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def test_the_embedded_micro_suite_loads():
    suite = load_suite("micro")
    assert suite.skill_names == ["math", "code"] and "math_code" in suite.tasks
    assert suite.fingerprint() == load_suite("micro").fingerprint()


@pytest.mark.parametrize("content, message", [
    ("name: [unclosed", "not valid YAML"),
    ("- a list", "must hold a mapping"),
    ({**TINY_SUITE, "expert": {"rank": "eight"}}, "expert.rank"),
    ({**TINY_SUITE, "base": {**TINY_SUITE["base"], "kind": "weird"}}, "base"),
    ({**TINY_SUITE, "colour": "red"}, "colour"),
    ({**TINY_SUITE, "skills": [{"name": "math"}, {"name": "math"}]}, "skill names repeat"),
    ({**TINY_SUITE, "tasks": []}, "at least one task"),
    ({**TINY_SUITE, "base": {**TINY_SUITE["base"], "corpus_mix": {"manual_entri": 0.5}}},
     r"base\.micro\.corpus_mix: .*Did you mean 'manual_entry'\?"),
])
def test_bad_suite_files_are_refused_clearly(tmp_path, content, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(write(tmp_path, content))


def test_unknown_embedded_suite_suggests_the_nearest():
    with pytest.raises(UnknownNameError, match="Did you mean 'micro'"):
        load_suite("mirco")


def test_run_with_a_bad_suite_stores_nothing(tmp_path):
    db = tmp_path / "r.db"
    result = CliRunner().invoke(app, ["run", "--suite", write(tmp_path, {**TINY_SUITE, "seeds": "x"}), "--db", str(db)])
    assert result.exit_code == 2 and "seeds" in result.output
    assert not db.exists()


def test_run_with_a_task_the_suite_lacks_is_refused(tmp_path, tiny_suite_file):
    result = CliRunner().invoke(app, ["run", "--suite", str(tiny_suite_file), "--task", "math_cod",
                                      "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 2 and "Did you mean 'math_code'" in result.output


def test_corpus_mix_weights_and_unknown_kinds():
    only_programs = {kind: 0.0 for kind in DOCUMENT_KINDS if kind != "commented_program"}
    docs = list(documents(20, 0, only_programs))
    assert all(doc.startswith("# ") and "print(" in doc for doc in docs)
    with pytest.raises(ValueError, match="unknown corpus document kinds"):
        list(documents(1, 0, {"poems": 1.0}))


def test_task_options_reach_the_builders_and_the_cache_keys(tmp_path):
    from benchmark.evaluation import write_task_data
    from benchmark.experts import skill_training_data
    from benchmark.keys import expert_key

    suite = load_suite(write(tmp_path, {**TINY_SUITE, "task_options": {"math_code": {"digits": [3, 3]},
                                                                         "math": {"digits": [2, 2]}}}))
    write_task_data(["math_code"], tmp_path / "data", 30, 0, suite.task_options)
    import json
    docs = [json.loads(line) for line in (tmp_path / "data" / "math_code.jsonl").read_text().splitlines()]
    assert len(docs) == 30
    for d in docs:  # 3-digit operands (a multiplier or divisor has 1-2 digits; a division shares 3 digits' worth)
        a, op, b = d["target"].removeprefix("print(").removesuffix(")").split()
        first = int(a) // int(b) if op == "/" else int(a)
        assert 100 <= first <= 1000 and (100 <= int(b) <= 999 or (op in "*/" and int(b) <= 99)), d
    base = "sha256:0123"
    plain = load_suite(write(tmp_path, TINY_SUITE))
    with_options, without = skill_training_data(suite), skill_training_data(plain)
    assert with_options["math"] != without["math"] and with_options["code"] == without["code"]
    assert expert_key(suite, base, "math", 0, with_options["math"]) != expert_key(plain, base, "math", 0, without["math"])
    assert expert_key(suite, base, "code", 0, with_options["code"]) == expert_key(plain, base, "code", 0, without["code"])


def test_unknown_task_options_are_refused_before_any_work(tmp_path):
    path = write(tmp_path, {**TINY_SUITE, "task_options": {"math_code": {"digit": [2, 2]}}})
    result = CliRunner().invoke(app, ["run", "--suite", path, "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 2 and "unknown builder options ['digit']" in result.output and "digits" in result.output


# (how the suite file or the command line is wrong, what the one error line must say, what it must not)
BAD_NAMES = {
    "method_params for a method that does not exist": (
        {**TINY_SUITE, "method_params": {"tiess": {"density": 0.3}}}, [],
        ["method_params names unknown method 'tiess'", "Did you mean 'ties'?"], []),
    "a misspelt parameter in method_params": (
        {**TINY_SUITE, "method_params": {"ties": {"densty": 0.3}}}, [],
        ["method_params", "'densty'", "Did you mean 'density'?"], []),
    "a misspelt skill": (
        {**TINY_SUITE, "skills": [{"name": "mathh"}, {"name": "code"}], "tasks": ["code"]}, [],
        ["unknown skill 'mathh'", "Did you mean 'math'?"], ["task"]),
    "a composite task given as a skill": (
        {**TINY_SUITE, "skills": [{"name": "math_code"}, {"name": "code"}], "tasks": ["code"]}, [],
        ["'math_code' is a composite task, not a skill"], []),
    "a misspelt expert": (
        TINY_SUITE, ["--method", "expert-mathh"], ["unknown skill 'mathh'", "Did you mean 'expert-math'?"], []),
}


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_a_bad_name_is_one_line_with_the_nearest_name_before_anything_is_written(tmp_path, case):
    content, extra, said, unsaid = BAD_NAMES[case]
    db = tmp_path / "r.db"
    result = CliRunner().invoke(app, ["run", "--suite", write(tmp_path, content), "--task", "code",
                                      "--db", str(db)] + (extra or ["--method", "base"]))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert all(text in errors[0] for text in said), errors[0]
    assert not any(text in errors[0].removeprefix("error:") for text in unsaid), errors[0]
    assert not db.exists()


def test_a_suite_file_that_is_not_text_is_named_in_one_line(tmp_path):
    path = tmp_path / "random.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    result = CliRunner().invoke(app, ["run", "--suite", str(path), "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 2 and f"error: suite file {path} is not a text file" in result.output
    yaml_error = CliRunner().invoke(app, ["run", "--suite", write(tmp_path, "name: [unclosed"),
                                          "--db", str(tmp_path / "r.db")])
    errors = [line for line in yaml_error.output.splitlines() if line.startswith("error:")]
    assert yaml_error.exit_code == 2 and len(errors) == 1 and "line 1, column" in errors[0]
    assert not (tmp_path / "r.db").exists()


def test_a_hub_base_that_is_not_there_is_one_line(tmp_path):
    content = {**TINY_SUITE, "base": {"kind": "hub", "model_id": str(tmp_path / "no-such-model")}}
    result = CliRunner().invoke(app, ["run", "--suite", write(tmp_path, content), "--method", "base",
                                      "--task", "math", "--db", str(tmp_path / "r.db")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert f"suite base {tmp_path / 'no-such-model'} does not exist" in errors[0]

"""Tasks from outside the repository: a task folder given by --task-dir (or SOUPBENCH_TASK_DIRS) or
an installed package's entry point registers exactly like a built-in one, runs in a suite end to
end, and a broken folder or a clash of names is refused in one line naming it."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import sqlite3
import sys

import pytest
import yaml
from typer.testing import CliRunner

from benchmark import cli
from benchmark.cli import app
from benchmark.evaluation import rescore
from benchmark.experts import skill_training_data
from benchmark.runner import check_names, task_data_dir
from benchmark.storage import SampleRecord
from benchmark.suite import Suite
from benchmark.task_discovery import ENTRY_POINT_GROUP
from benchmark.taskinfo import TASK_DIRS_ENV_VAR, TASKS, get_skill
from tests.conftest import TINY_SUITE
from leaderboard.queries import task_meta
from tests.external_task_fixtures import write_task

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def fresh_tasks(monkeypatch):
    """Each test builds the task registry from its own dirs, and leaves no outside task behind."""
    monkeypatch.delenv(TASK_DIRS_ENV_VAR, raising=False)
    monkeypatch.setattr(cli.out, "_width", 400)  # tables with a row per line: paths are not wrapped
    TASKS.reset()
    yield
    TASKS.reset()


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_list_tasks_shows_each_task_with_its_origin(tmp_path):
    folder = write_task(tmp_path / "outside" / "math_bare")
    result = runner.invoke(app, ["list", "tasks", "--task-dir", str(folder)])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
            for line in result.output.splitlines() if line.startswith("│")}
    assert rows["math_bare"][:5] == ["math_bare", "composite", "math", "bare_match", f"folder {folder}"]
    assert rows["math"][4] == "built in" and rows["math_code"][4] == "built in"
    info = TASKS.get("math_bare")
    assert info.folder == folder and not info.executes_programs  # its YAML has no unsafe_code
    with pytest.raises(RuntimeError, match="before task dirs"):  # built: a late dir would go unseen
        TASKS.add_dirs([tmp_path / "later"])


def test_a_folder_of_task_folders_from_the_environment_with_absolute_imports(tmp_path, monkeypatch):
    """SOUPBENCH_TASK_DIRS names a folder of task folders whose tasks import themselves as the
    built-in ones do (`from <outer>.<task>.data import ...`); a skill among them is a skill."""
    outer = tmp_path / "soup_outer_tasks"
    write_task(outer / "bare_skill", "bare_skill", data_module="soup_outer_tasks.bare_skill.data", skill=True)
    write_task(outer / "bare_code", "bare_code", unsafe_code=True)
    (outer / "_shared").mkdir()  # helpers, as tasks/_common: not a task
    monkeypatch.setenv(TASK_DIRS_ENV_VAR, str(tmp_path / "nowhere-yet") + ":" + str(outer))
    (tmp_path / "nowhere-yet").mkdir()
    write_task(tmp_path / "nowhere-yet" / "math_bare")
    assert get_skill("bare_skill").origin == f"folder {outer / 'bare_skill'}"
    assert get_skill("bare_skill").build_train(3, 0)[0]["prompt"].startswith("Story:")
    assert TASKS.get("bare_code").executes_programs  # the sandbox check reads its own YAML
    assert {"math_bare", "bare_skill", "bare_code", "math"} <= set(TASKS.names())
    assert sys.modules["soup_outer_tasks.bare_skill"].TASK is not None  # the author's name, bound
    # a suite names the outside skill (its expert's training data comes from its build_train)
    spec = {**copy.deepcopy(TINY_SUITE), "tasks": ["math", "bare_skill", "math_bare"]}
    spec["skills"] = [*spec["skills"], {"name": "bare_skill", "train_size": 8, "eval_size": 4}]
    check_names(Suite.model_validate(spec))
    assert skill_training_data(Suite.model_validate(spec))["bare_skill"][0]["completion"].strip().isdigit()


def test_entry_point_task_of_an_installed_distribution(tmp_path, monkeypatch):
    """An installed package's task: a *.dist-info with entry_points.txt on sys.path (what
    importlib.metadata reads for any installed package), its task package beside it."""
    site = tmp_path / "site"
    write_task(site / "soup_task_pkg" / "math_ep", "math_ep")
    (site / "soup_task_pkg" / "__init__.py").write_text("")
    info = site / "soup_task_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: soup-task-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmath_ep = soup_task_pkg.math_ep\n")
    monkeypatch.syspath_prepend(str(site))
    assert "math_ep" in [ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    result = runner.invoke(app, ["list", "tasks"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│ math_ep "))
    assert "entry point soup-task-pkg:math_ep" in row
    assert TASKS.get("math_ep").folder == site / "soup_task_pkg" / "math_ep"


def test_an_outside_task_runs_in_a_suite_end_to_end(tmp_path):
    """A suite names the outside task; `run` scores base and the math expert on it with lm-eval
    (its YAML, its metric.py, its data builder) and stores the rows; the stored samples rescore to
    the stored scores; the leaderboard's task metadata and `validate` know it."""
    folder = write_task(tmp_path / "outside" / "math_bare")
    spec = copy.deepcopy(TINY_SUITE)
    spec["tasks"] = [*spec["tasks"], "math_bare"]
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(spec))
    db = tmp_path / "runs.db"
    result = runner.invoke(app, ["run", "--suite", str(suite_file), "--task-dir", str(folder), "--task", "math_bare",
                                 "--method", "base", "--method", "expert-math", "--db", str(db)])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        runs = conn.execute("select id, method, task, status from runs order by method").fetchall()
        scores = conn.execute("select run_id, metric, value, n_samples, \"primary\" from scores").fetchall()
        samples = conn.execute("select run_id, doc_index, prompt, generation, target, executed, correct, extra "
                               "from samples order by run_id, doc_index").fetchall()
    assert [r[1:] for r in runs] == [("base", "math_bare", "ok"), ("expert-math", "math_bare", "ok")]
    assert sorted((s[0], s[1], s[3], s[4]) for s in scores) == [(r[0], "bare_match", 6, 1) for r in runs]
    suite = Suite.model_validate(spec)
    docs = TASKS.get("math_bare").build_eval(6, suite.data_seed)
    for run_id, *_ in runs:
        mine = [s for s in samples if s[0] == run_id]
        assert [s[2] for s in mine] == [d["prompt"] for d in docs]  # the outside builder's documents
        assert all(s[4] == d["target"] for s, d in zip(mine, docs))
        value = next(s[2] for s in scores if s[0] == run_id)
        assert value == pytest.approx(sum(bool(s[6]) for s in mine) / 6)

    records = [SampleRecord(s[1], s[2], s[3], s[4], s[5], None if s[6] is None else bool(s[6]), json.loads(s[7]))
               for s in samples if s[0] == runs[1][0]]
    (again,) = rescore("math_bare", records, task_data_dir(suite, ["math_bare"]), suite.eval)
    assert (again.metric, again.n_samples) == ("bare_match", 6)
    assert again.value == pytest.approx(next(s[2] for s in scores if s[0] == runs[1][0]))

    right = [SampleRecord(r.doc_index, r.prompt, r.target, r.target, None, None, {}) for r in records]
    (perfect,) = rescore("math_bare", right, task_data_dir(suite, ["math_bare"]), suite.eval)
    assert perfect.value == 1.0  # its own metric.py scored the reference answers right

    meta = task_meta.__wrapped__("math_bare")
    assert (meta.display_name, meta.kind, meta.primary_metric) == ("Bare-number word problems", "composite", "bare_match")

    TASKS.reset()  # a new process: validate registers the folder again
    checked = runner.invoke(app, ["validate", "--db", str(db), "--suite", str(suite_file), "--task-dir", str(folder)])
    assert checked.exit_code in (0, 1) and "math_bare (composite)" in checked.output, checked.output


BROKEN = [
    ("no_yaml", dict(yaml=False), "no no_yaml.yaml"),
    ("no_init", dict(init=False), "no __init__.py"),
    ("no_task", dict(), "its __init__.py defines no TASK"),
    ("bad_metric", dict(process_results="missing_function"), "has no function 'missing_function'"),
    ("bad_builder", dict(eval_body="raise RuntimeError('no documents today')"),
     "its data builder build_eval raised RuntimeError: no documents today"),
    ("bad_train", dict(skill=True, train_body="return [{'prompt': 'x'}, {'prompt': 'y'}]"),
     "build_train built a document without the text field(s) ['completion']"),
    ("other_name", dict(task_name="renamed"), "its TASK.name 'renamed' differs from the folder's YAML name (other_name.yaml)"),
    ("bad_import", dict(data_module=".nowhere"), "its __init__.py failed: ModuleNotFoundError"),
]


@pytest.mark.parametrize("name, broken, problem", BROKEN, ids=[case[0] for case in BROKEN])
def test_a_broken_task_folder_is_refused_in_one_line_naming_it(tmp_path, name, broken, problem):
    folder = write_task(tmp_path / "dir" / name, name, **broken)
    if name == "no_task":
        (folder / "__init__.py").write_text("from .data import build_eval\n")
    # as a task folder, and inside a folder of task folders beside a good one
    for task_dir in (folder, tmp_path / "dir"):
        if task_dir != folder:
            write_task(tmp_path / "dir" / "math_bare")
        TASKS.reset()
        line = one_line_error(runner.invoke(app, ["list", "tasks", "--task-dir", str(task_dir)]))
        assert f"error: task folder {folder}: " in line and problem in line, line
    with pytest.raises(Exception, match="task folder"):  # and the registry stays refused, not half built
        TASKS.names()


def test_names_clash_with_a_built_in_task_and_between_folders(tmp_path):
    clash = write_task(tmp_path / "mine" / "math", "math")
    line = one_line_error(runner.invoke(app, ["list", "tasks", "--task-dir", str(clash)]))
    assert "task 'math' is registered twice: built in, and folder " + str(clash) in line
    TASKS.reset()
    first = write_task(tmp_path / "a" / "math_bare")
    second = write_task(tmp_path / "b" / "math_bare")
    line = one_line_error(runner.invoke(app, ["list", "tasks", "--task-dir", str(first), "--task-dir", str(second)]))
    assert f"task 'math_bare' is registered twice: folder {first}, and folder {second}" in line
    TASKS.reset()
    line = one_line_error(runner.invoke(app, ["list", "tasks", "--task-dir", str(tmp_path / "none")]))
    assert f"task dir {tmp_path / 'none'}: no such folder" in line


def test_a_suite_naming_an_unregistered_task_is_refused_before_any_work(tmp_path):
    spec = copy.deepcopy(TINY_SUITE)
    spec["tasks"] = [*spec["tasks"], "math_bare"]
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["run", "--suite", str(suite_file), "--db", str(tmp_path / "x.db"),
                                 "--method", "base"])
    line = one_line_error(result)
    assert "unknown task 'math_bare'" in line and not (tmp_path / "x.db").exists()

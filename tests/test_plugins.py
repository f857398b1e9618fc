"""Plugins: methods from a single file or an installed entry point, and the contract checks that
make a broken plugin fail by name (in isolation and inside a grid run that carries on)."""

from __future__ import annotations

import importlib.metadata
import sqlite3
import textwrap
from pathlib import Path

import pytest
import yaml
import torch
from typer.testing import CliRunner

from benchmark import catalog
from benchmark.cli import app
from benchmark.contract import PluginContractError, check_merge_result
from benchmark.lora import LoraFactors
from benchmark.method import MergeContext, MergeResult
from benchmark.registry import Registry
from methods.cat_static import CatStatic
from methods.task_arithmetic import TaskArithmetic
from tests.conftest import TINY_SUITE
from tests.lora_fixtures import bare_experts, tiny_llama

runner = CliRunner()

# One file, several broken methods: each breaks the contract in one way. `shape` and `nan` are
# lazy, the others fail on the return value itself.
BROKEN = textwrap.dedent('''
    import torch
    from benchmark.lora import module_union
    from benchmark.method import MergeMethod, MergeResult

    def _shape(experts, module):
        return next(e.modules[module].shape for e in experts if module in e.modules)

    class NanMerge(MergeMethod):
        name = "nan_merge"
        def merge(self, experts, context):
            def walk():
                for module in module_union(experts):
                    yield module, torch.full(_shape(experts, module), float("nan"))
            return MergeResult(deltas=walk())

    class Transposed(MergeMethod):
        name = "transposed"
        def merge(self, experts, context):
            def walk():
                for module in module_union(experts):
                    yield module, torch.zeros(_shape(experts, module)).T
            return MergeResult(deltas=walk())

    class WrongType(MergeMethod):
        name = "wrong_type"
        def merge(self, experts, context):
            return {m: torch.zeros(_shape(experts, m)) for m in module_union(experts)}

    class NotADelta(MergeMethod):
        name = "not_a_delta"
        def merge(self, experts, context):
            return MergeResult(deltas={m: [0.0] for m in module_union(experts)})

    class Stray(MergeMethod):
        name = "stray"
        def merge(self, experts, context):
            return MergeResult(deltas={"layer.nowhere": torch.zeros(2, 2)})
''')

GOOD = textwrap.dedent('''
    from benchmark.method import MergeMethod, MergeResult

    class {cls}(MergeMethod):
        name = "{name}"
        description = "plugin test method"
        def merge(self, experts, context):
            return MergeResult(deltas={{}}, output_rank=0)
''')


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def global_registry(monkeypatch) -> None:
    """A private process-wide registry, so plugins loaded here never leak into other tests."""
    monkeypatch.setattr(catalog, "_registry", catalog.build_registry())


@pytest.fixture
def broken(tmp_path) -> tuple[Path, Registry]:
    path = tmp_path / "broken_methods.py"
    path.write_text(BROKEN)
    registry = catalog.build_registry(include_entry_points=False)
    catalog.load_method_file(path, into=registry)
    return path, registry


def run_broken(name: str, broken: tuple[Path, Registry], reference) -> MergeResult:
    path, registry = broken
    method = catalog.create_method(name, {}, [], into=registry)
    return check_merge_result(method, method.merge(bare_experts(), MergeContext(seed=0)), reference)


def shapes() -> dict[str, tuple[int, int]]:
    return {"layer.q": (24, 16), "layer.v": (12, 16), "layer.o": (16, 24)}


@pytest.mark.parametrize("name, problem, lazy", [
    ("wrong_type", r"merge\(\) returned dict, not benchmark.method.MergeResult", False),
    ("nan_merge", r"NaN values at module 'layer.q'", True),
    ("transposed", r"changed the shape of module 'layer.q'.*\(16, 24\).*\(24, 16\)", True),
    ("not_a_delta", r"returned a list at module 'layer.q'; a delta must be a torch.Tensor", True),
    ("stray", r"unknown module 'layer.nowhere'", True),
])
def test_contract_errors_name_the_plugin(broken, name, problem, lazy):
    path = broken[0]
    message = rf"method '{name}' \(\w+ in {path}\) broke the merge contract: .*{problem}"
    if not lazy:
        with pytest.raises(PluginContractError, match=message):
            run_broken(name, broken, shapes())
        return
    result = run_broken(name, broken, shapes())  # the check itself consumes nothing
    with pytest.raises(PluginContractError, match=message):
        list(result.items())


def test_contract_is_lazy_and_passes_builtin_methods():
    experts = bare_experts()
    consumed: list[str] = []

    def walk():
        for module, factors in experts[0].modules.items():
            consumed.append(module)
            yield module, factors
        consumed.append("bad")
        yield "layer.o", torch.full((16, 24), float("inf"))

    checked = check_merge_result("lazy", MergeResult(deltas=walk()), experts)
    assert consumed == []
    items = checked.items()
    assert next(items)[0] == "layer.q" and consumed == ["layer.q"]  # one module at a time
    with pytest.raises(PluginContractError, match=r"method 'lazy'.*inf values at module 'layer.o'"):
        list(items)
    with pytest.raises(PluginContractError, match=r"LoraFactors with scale nan"):
        bad = LoraFactors(A=torch.zeros(2, 16), B=torch.zeros(24, 2), scale=float("nan"))
        list(check_merge_result("s", MergeResult(deltas={"layer.q": bad}), experts).items())
    for method in (TaskArithmetic(), CatStatic()):  # built-ins keep the contract: nothing raised
        result = method.merge(experts, MergeContext(seed=0))
        assert len(dict(check_merge_result(method, result, shapes()).items())) == 3


def test_contract_checks_against_a_model():
    model = tiny_llama()
    good = {"model.layers.0.self_attn.q_proj": torch.zeros(32, 32)}
    assert len(list(check_merge_result("m", MergeResult(deltas=good), model).items())) == 1
    wrong = {"model.layers.0.mlp.up_proj": torch.zeros(32, 64)}  # up_proj's weight is (64, 32)
    with pytest.raises(PluginContractError, match=r"changed the shape.*\(32, 64\).*\(64, 32\)"):
        list(check_merge_result("m", MergeResult(deltas=wrong), model).items())
    norm = {"model.layers.0.input_layernorm": torch.zeros(32, 32)}  # exists, but is not Linear
    with pytest.raises(PluginContractError, match="unknown module 'model.layers.0.input_layernorm'"):
        list(check_merge_result("m", MergeResult(deltas=norm), model).items())


def test_method_file_joins_the_default_grid(tmp_path, global_registry):
    path = tmp_path / "my_method.py"
    path.write_text(GOOD.format(cls="FileHalve", name="file_halve"))
    catalog.load_method_file(path)
    assert "file_halve" in catalog.method_names(["math", "code"])  # the grid when --method is absent
    assert catalog.create_method("file_halve", {}, []).name == "file_halve"
    bad = tmp_path / "bad_method.py"
    bad.write_text("def broken(:\n")
    # A method no file defines: should the file be skipped, the run fails fast on that name instead.
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(TINY_SUITE))
    result = runner.invoke(app, ["run", "--method-file", str(bad), "--suite", str(suite), "--method", "nowhere",
                                 "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "bad_method.py" in result.output and "SyntaxError" in result.output


def test_entry_point_from_an_installed_dist_info(tmp_path, monkeypatch):
    """An installed package's entry point, without pip: a *.dist-info on sys.path is what
    importlib.metadata reads, exactly as for a package installed in site-packages."""
    (tmp_path / "soup_ep_demo.py").write_text(GOOD.format(cls="EpHalve", name="ep_halve"))
    info = tmp_path / "soup_ep_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: soup-ep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{catalog.ENTRY_POINT_GROUP}]\nep_halve = soup_ep_demo:EpHalve\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = importlib.metadata.entry_points(group=catalog.ENTRY_POINT_GROUP)
    assert "ep_halve" in [ep.name for ep in found]
    assert catalog.build_registry().get("ep_halve").__name__ == "EpHalve"
    monkeypatch.setattr(catalog, "_registry", None)  # the CLI discovers it on first use
    listed = runner.invoke(app, ["list", "methods"])
    assert listed.exit_code == 0 and "ep_halve" in listed.output


def test_runner_records_broken_plugin_and_goes_on(tiny_suite_file, tmp_path, global_registry):
    plugin = tmp_path / "nan_plugin.py"
    plugin.write_text(BROKEN)
    db = tmp_path / "runs.db"
    result = runner.invoke(app, ["run", "--suite", str(tiny_suite_file), "--method-file", str(plugin),
                                 "--method", "base", "--method", "nan_merge", "--task", "math", "--db", str(db)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "failed: nan_merge (seed 0): PluginContractError: method 'nan_merge'" in text
    assert "NaN values at module" in text and "nan_plugin.py" in text
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select method, task, seed, status, error from runs order by method").fetchall()
    assert [row[:4] for row in rows] == [("base", "math", 0, "ok"), ("nan_merge", "math", 0, "failed")]
    assert "NaN values" in rows[1][4] and "nan_merge" in rows[1][4]

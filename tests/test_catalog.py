"""Method discovery: the methods package, user files, entry points, names and parameter errors."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

from benchmark import catalog
from benchmark.catalog import build_registry, create_method, get_method_class, load_method_file, method_names
from benchmark.registry import Registry, UnknownNameError
from methods.base import Base
from methods.cat_static import CatStatic
from methods.single_expert import SingleExpert
from methods.task_arithmetic import TaskArithmetic

USER_METHOD = textwrap.dedent('''
    from benchmark.method import MergeMethod, MergeResult, MethodParams
    from methods.task_arithmetic import TaskArithmetic  # imported, not defined here: not registered

    class Helper(MergeMethod):  # no name: an abstract helper, not registered
        pass

    class Halve(MergeMethod):
        class Params(MethodParams):
            factor: float = 0.5
        name = "halve"
        description = "test method"

        def merge(self, experts, context):
            return MergeResult(deltas={})
''')


def test_builtin_methods_are_discovered():
    registry = build_registry()
    assert registry.get("base") is Base
    assert registry.get("task_arithmetic") is TaskArithmetic
    assert registry.get("cat_static") is CatStatic
    assert registry.get("expert") is SingleExpert
    assert not any(name.startswith("_") for name in registry.names())


def test_method_names_order():
    names = method_names(["math", "code"])
    assert names[:3] == ["base", "expert-math", "expert-code"]
    rest = names[3:]
    assert rest == sorted(rest) and {"task_arithmetic", "cat_static"} <= set(rest)
    assert "expert" not in rest and "base" not in rest


def test_unknown_name_suggests_and_lists():
    with pytest.raises(UnknownNameError, match=r"Did you mean 'task_arithmetic'\?.*Known: .*cat_static"):
        get_method_class("task_arithmetc")
    with pytest.raises(KeyError):  # UnknownNameError stays a KeyError for callers that expect one
        create_method("nope", {}, [])


def test_expert_names_resolve_to_single_expert():
    method = create_method("expert-math", {}, ["math", "code"])
    assert isinstance(method, SingleExpert) and method.params.skill == "math"
    assert method.display_name == "expert-math"
    with pytest.raises(ValueError, match=r"expert-law.*'law'.*math, code"):
        create_method("expert-law", {}, ["math", "code"])
    with pytest.raises(ValueError, match=r"'expert'.*'law'"):
        create_method("expert", {"skill": "law"}, ["math", "code"])
    assert create_method("expert", {"skill": "code"}, ["math", "code"]).display_name == "expert-code"
    with pytest.raises(ValueError, match="contradicts"):
        create_method("expert-math", {"skill": "code"}, ["math", "code"])


def test_bad_params_are_clear_errors():
    message = r"method 'task_arithmetic': bad parameter 'wieghts'.*Accepted parameters: weights"
    with pytest.raises(ValueError, match=message):
        create_method("task_arithmetic", {"wieghts": [1.0, 1.0]}, ["math", "code"])
    with pytest.raises(ValueError, match=r"method 'cat_static': bad parameter 'weights"):
        create_method("cat_static", {"weights": "heavy"}, ["math", "code"])
    assert create_method("cat_static", {"weights": [1, 0.5]}, []).params.weights == [1.0, 0.5]


def test_method_file_by_path_registers(tmp_path):
    path = tmp_path / "my_method.py"
    path.write_text(USER_METHOD)
    registry = build_registry(include_entry_points=False)
    found = load_method_file(path, into=registry)
    assert [cls.name for cls in found] == ["halve"]
    assert "halve" in registry and "Helper" not in registry.names()
    assert load_method_file(path, into=registry) == found  # a second load reuses the module
    method = create_method("halve", {"factor": 2}, [], into=registry)
    assert method.params.factor == 2.0
    assert "halve" in method_names([], into=registry)
    assert "halve" not in build_registry(include_entry_points=False)  # the fresh registry is untouched


def test_method_file_without_methods_is_an_error(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no MergeMethod"):
        load_method_file(path, into=Registry("method"))


def test_entry_point_plugins_register(tmp_path, monkeypatch):
    (tmp_path / "soup_plugin_mod.py").write_text(USER_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    group = catalog.ENTRY_POINT_GROUP
    plugin = importlib.metadata.EntryPoint(name="halve", value="soup_plugin_mod:Halve", group=group)
    monkeypatch.setattr(catalog.importlib.metadata, "entry_points",
                        lambda group: [plugin] if group == catalog.ENTRY_POINT_GROUP else [])
    assert build_registry().get("halve").__name__ == "Halve"
    broken = importlib.metadata.EntryPoint(name="broken", value="no_such_module_xyz:Cls", group=group)
    monkeypatch.setattr(catalog.importlib.metadata, "entry_points", lambda group: [broken])
    with pytest.raises(RuntimeError, match="'broken'"):
        build_registry()


def test_discovering_every_builtin_method_does_not_import_peft():
    """`soupbench merge` builds the registry before any work: importing PEFT (and its share of
    transformers) there cost 6 to 9 s of start-up while only the methods that train need it. The
    training methods must still train: their module imports PEFT when a LoRA is made."""
    code = (
        "import sys\n"
        "from benchmark.catalog import registry\n"
        "names = registry().names()\n"
        "assert {'cat', 'data_mix', 'lorahub', 'ties'} <= set(names), names\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'peft'))\n"
        "from benchmark.training import lora_config\n"
        "from benchmark.suite import LoraRecipe\n"
        "print(type(lora_config(LoraRecipe())).__module__.split('.')[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[]", "peft"]

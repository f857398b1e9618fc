"""What a suite fetches from the Hugging Face hub, and a check, before any work, that it can.

A suite names its base and its data as local paths or hub ids (`HubBase.model_id`, a skill's
`data_path`, a task's `data_path` builder option). `check_reachable` looks at every hub id a run
would fetch: in the local Hugging Face cache, or, where downloads are allowed, on the hub itself
(a metadata call with a short timeout). What cannot be fetched is refused in one line that names
each model and data set, seconds after the command starts, instead of a traceback from deep
inside `from_pretrained` after the grid has begun.

Downloads: `benchmark.evaluation` sets HF_HUB_OFFLINE=1 unless the environment says otherwise,
since nothing SoupBench builds needs a network. A suite that names hub ids does: the CLI calls
`allow_downloads(suite)` before the Hugging Face libraries are imported (they read the setting
once, at import), which sets HF_HUB_OFFLINE=0 and HF_DATASETS_OFFLINE=0 unless the user set them.
An explicit HF_HUB_OFFLINE=1 keeps the run offline: then every hub id must be in the local cache.
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmark.data_sources import is_local
from benchmark.errors import UserError
from benchmark.suite import HubBase, Suite

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
HUB_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Needed:
    """One model or data set a run of the suite reads."""

    what: str  # its role, for messages: "suite base", "skill math's data", "task gsm_hard's documents"
    ref: str  # a local path or a hub id
    kind: Literal["model", "dataset"]
    revision: str | None = None

    @property
    def on_hub(self) -> bool:
        return not is_local(self.ref)


def needed(suite: Suite, tasks: list[str] | None = None) -> list[Needed]:
    """Every model and data set a run of `suite` (its `tasks`, default all) reads from outside."""
    from benchmark.taskinfo import TASKS

    found: list[Needed] = []
    if isinstance(suite.base, HubBase):
        found.append(Needed("suite base", suite.base.model_id, "model", suite.base.revision))
    for skill in suite.skills:
        if skill.source == "files" and skill.data_path:
            found.append(Needed(f"skill {skill.name}'s data", skill.data_path, "dataset"))
    for task in tasks or suite.tasks:
        parameter = inspect.signature(TASKS.get(task).build_eval).parameters.get("data_path")
        if parameter is not None:
            ref = suite.task_options.get(task, {}).get("data_path", parameter.default)
            found.append(Needed(f"task {task}'s documents", str(ref), "dataset"))
    return found


def allow_downloads(suite: Suite) -> None:
    """Let the Hugging Face libraries download when the suite names hub ids and the user did not
    say HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: call it before they are imported (it does nothing
    once they are, and `check_reachable` then says the run is offline)."""
    if "huggingface_hub" in sys.modules or not any(item.on_hub for item in needed(suite)):
        return
    for name in OFFLINE_VARS:
        os.environ.setdefault(name, "0")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _in_local_cache(item: Needed) -> bool:
    """Whether the hub cache (or, for a data set, the `datasets` cache) already holds `item`."""
    from huggingface_hub import constants, try_to_load_from_cache

    if item.kind == "model":
        return isinstance(try_to_load_from_cache(item.ref, "config.json", revision=item.revision), str)
    hub_folder = Path(constants.HF_HUB_CACHE) / f"datasets--{item.ref.replace('/', '--')}"
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    return hub_folder.is_dir() or (datasets_cache / item.ref.replace("/", "___")).is_dir()


def _hub_problem(item: Needed) -> tuple[str | None, bool]:
    """Why `item` cannot be fetched from the hub now (None when it can), and whether the reason is
    the network itself (then asking again about the next id would only wait again)."""
    from huggingface_hub import HfApi

    from benchmark.errors import first_line

    api = HfApi()
    try:
        if item.kind == "model":
            api.model_info(item.ref, revision=item.revision, timeout=HUB_TIMEOUT_S)
        else:
            api.dataset_info(item.ref, revision=item.revision, timeout=HUB_TIMEOUT_S)
    except Exception as err:  # no network, a wrong id, a gated repository: its first line says which
        if _is_network_error(err):
            return f"the hub is unreachable: {first_line(err)}", True
        return first_line(err), False
    return None, False


def _is_network_error(err: BaseException) -> bool:
    """No route, no name resolution, a timeout: the HTTP client's transport errors (by class name, as
    huggingface_hub's client library has changed names across releases) or the OS's."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return isinstance(err, OSError) or bool(names & {"TransportError", "NetworkError", "TimeoutException"})


def check_reachable(suite: Suite, tasks: list[str] | None = None) -> None:
    """Refuse, in one line naming each of them, the models and data sets a run of `suite` could
    not fetch: a local path that does not exist, a hub id neither cached nor reachable."""
    absent: list[str] = []  # local paths that are not there
    problems: dict[str, list[str]] = {}  # reason -> the hub ids it stops
    offline, network_down = None, None
    for item in needed(suite, tasks):
        named = f"{item.what} {item.ref}"
        if not item.on_hub:
            if not Path(item.ref).exists():
                absent.append(f"{named} does not exist")
            continue
        if _in_local_cache(item):
            continue
        offline = _offline() if offline is None else offline
        if offline:
            problems.setdefault("not in the local Hugging Face cache, and HF_HUB_OFFLINE=1", []).append(named)
            continue
        problem, network = (network_down, True) if network_down else _hub_problem(item)
        if network:
            network_down = problem
        if problem is not None:
            problems.setdefault(problem, []).append(named)
    if absent or problems:
        said = "; ".join(absent + [f"{', '.join(names)} ({reason})" for reason, names in problems.items()])
        advice = (" Unset HF_HUB_OFFLINE (or set it to 0) to download them, or fetch them into the cache beforehand."
                  if offline else " Check the network and the ids, or name local copies in the suite file."
                  if problems else "")
        raise UserError(f"suite {suite.name!r} needs what this machine cannot fetch: {said}.{advice}")

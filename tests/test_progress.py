"""The live table of `soupbench run`: filled from stored records as they come."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from benchmark.progress import LiveResults, RichReporter
from tests.test_storage import make_run


def record(method: str, task: str, seed: int, value: float | None):
    run = make_run(method=method, task=task, seed=seed)
    if value is None:
        return dataclasses.replace(run, status="failed", error="boom", scores=[])
    return dataclasses.replace(run, scores=[dataclasses.replace(s, value=value if s.primary else 0.9)
                                            for s in run.scores])


def render(renderable) -> str:
    console = Console(file=io.StringIO(), width=120)
    console.print(renderable)
    return console.file.getvalue()


def test_cells_show_the_mean_of_the_seeds_stored_so_far_and_failures():
    live = LiveResults()
    live.add([record("cat", "math", 0, 0.5), record("cat", "code", 0, 0.25)])
    assert "0.500" in render(live) and "0.250" in render(live)
    live.add([record("cat", "math", 1, 0.7), record("ties", "math", 0, None)])
    text = render(live)
    assert "0.600 (2)" in text and "failed" in text and "0.500" not in text
    assert text.index("cat") < text.index("ties")  # rows in the order methods finish


def test_the_reporter_feeds_the_table_through_the_runners_hook():
    console = Console(file=io.StringIO(), width=120)
    with RichReporter(console) as reporter:
        reporter.stored([record("ties", "math_code", 0, 0.375)])
    assert "0.375" in console.file.getvalue()

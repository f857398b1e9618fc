"""The site as a user gets it: `soupbench leaderboard` started, opened in headless Chromium.

Streamlit draws pages with JavaScript, so only a real browser shows whether the overview renders:
this waits for the table, checks that the method names and a score (computed here by hand) are on
screen, and saves screenshots to `test-artifacts/` for a person to look at. It uses Debian's
`chromium` (installed by `.ci/run`), never a browser that playwright would download; without it
the test fails and says how to install it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from leaderboard_fixtures import METHODS, competition_rank, fill_grid, write_reference_release

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, server: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"`soupbench leaderboard` exited with {server.returncode}: "
                                 f"{server.stdout.read() if server.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the leaderboard did not answer on port {port} within {timeout} s")


def _require_chromium():
    if not CHROMIUM.is_file():
        pytest.fail("Debian's Chromium is missing at /usr/bin/chromium: "
                    "`apt-get update && apt-get install -y chromium` (.ci/run does this)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'")
    return expect, sync_playwright


@contextlib.contextmanager
def _leaderboard(*args: str, cwd: Path | None = None, env: dict | None = None) -> Iterator[int]:
    """`soupbench leaderboard ARGS` on a free port, until the block ends; yields the port."""
    command = shutil.which("soupbench")
    argv = [command] if command else [sys.executable, "-c", "from benchmark.cli import app; app()"]
    port = _free_port()
    server = subprocess.Popen([*argv, "leaderboard", *args, "--port", str(port)], cwd=cwd,
                              env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_healthy(port, server)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _open_overview(playwright, expect, port: int, methods: list[str]):
    """Chromium on the overview, once its table shows every one of `methods` as a link."""
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/")
    table = page.locator("table.sb-board")
    expect(table).to_be_visible(timeout=60_000)
    for method in methods:
        expect(table.get_by_role("link", name=method, exact=True)).to_be_in_viewport()
    return browser, page, table


@pytest.mark.timeout(300)
def test_overview_renders_in_chromium(tmp_path) -> None:
    expect, sync_playwright = _require_chromium()
    db = tmp_path / "results.db"
    grid = fill_grid(f"sqlite:///{db}")
    means = {m.name: grid.cell(m.name, "math_code")[0] for m in METHODS}
    best = max(means, key=means.get)
    mean, half = grid.cell(best, "math_code")
    assert competition_rank(means)[best] == 1
    score = f"{mean:.3f} ± {half:.3f} #1"

    ARTIFACTS.mkdir(exist_ok=True)
    with _leaderboard("--db", str(db), "--no-reference") as port:
        with sync_playwright() as playwright:
            browser, page, table = _open_overview(playwright, expect, port, [m.name for m in METHODS])
            expect(table.get_by_text(score, exact=True)).to_be_in_viewport()
            expect(page.get_by_role("heading", name="SoupBench leaderboard")).to_be_visible()
            # A public board is for viewers: no Deploy button, even to a visitor on localhost
            # (where Streamlit's "auto" toolbar shows it).
            expect(page.get_by_test_id("stToolbar")).to_be_attached()
            expect(page.get_by_test_id("stAppDeployButton")).to_have_count(0)
            expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
            # Each row says where it came from (here every row is built in: no submissions).
            expect(table.get_by_role("columnheader", name="source", exact=True)).to_be_visible()
            expect(table.locator("td.source")).to_have_text(["built in"] * len(METHODS))
            page.screenshot(path=str(ARTIFACTS / "leaderboard-overview.png"))

            # A method name is a link to its page, which says where the method comes from.
            table.get_by_role("link", name=best, exact=True).click()
            expect(page.get_by_role("heading", name=best, exact=True)).to_be_visible(timeout=60_000)
            expect(page.get_by_text("arxiv.org").first).to_be_visible()

            page.goto(f"http://127.0.0.1:{port}/task?task=math_code")
            chart = page.locator('[data-testid="stVegaLiteChart"]').first
            expect(chart).to_be_visible(timeout=60_000)
            expect(chart.locator("canvas, svg").first).to_be_visible()
            page.wait_for_timeout(500)  # let the chart finish its first paint
            page.screenshot(path=str(ARTIFACTS / "leaderboard-task.png"))
            browser.close()


@pytest.mark.timeout(300)
def test_with_no_database_of_ones_own_the_site_shows_the_release_reference(tmp_path) -> None:
    """A fresh clone, nothing run yet: `soupbench leaderboard` opens the release's reference results."""
    expect, sync_playwright = _require_chromium()
    release = tmp_path / "release"
    release.mkdir()
    shown = tuple(m for m in METHODS if m.name != "lorahub")
    grid = fill_grid(f"sqlite:///{release / 'reference.db'}", methods=shown)
    write_reference_release(release)
    means = {m.name: grid.cell(m.name, "math_code")[0] for m in shown}
    best = max(means, key=means.get)
    mean, half = grid.cell(best, "math_code")
    ARTIFACTS.mkdir(exist_ok=True)
    empty = tmp_path / "fresh-clone"
    empty.mkdir()
    env = {"SOUPBENCH_RELEASE": str(release), "SOUPBENCH_DB": ""}
    with _leaderboard(cwd=empty, env=env) as port:
        with sync_playwright() as playwright:
            browser, page, table = _open_overview(playwright, expect, port, [m.name for m in shown])
            expect(table.get_by_role("link", name="lorahub", exact=True)).to_have_count(0)
            expect(table.get_by_text(f"{mean:.3f} ± {half:.3f} #1", exact=True)).to_be_in_viewport()
            expect(page.get_by_text("Showing the release's reference results")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "leaderboard-reference.png"))
            browser.close()
    assert not (empty / "soupbench.db").exists()  # nothing was created in the user's folder

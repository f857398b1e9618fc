"""Helpers of the sandbox tests: small limits, timing, leftover checks, listeners, a separate harness.

Hostile programs run with small limits (2 s, 8 processes) so that a broken sandbox fails a test
quickly instead of hurting the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmark.sandbox import SandboxLimits, SandboxResult, run_program

SMALL = SandboxLimits(timeout_s=2.0, memory_mb=256, max_processes=8, max_disk_mb=32)
SLACK_S = 2.0  # what a loaded 2-core machine may add to a timeout
REPO = Path(__file__).resolve().parent.parent
# The first line a marked program prints: its pid namespace, which names every process it starts.
_MARK = "import os as _os\nprint(_os.readlink('/proc/self/ns/pid'), flush=True)\n"


def timed(code: str, limits: SandboxLimits = SMALL) -> tuple[SandboxResult, float]:
    start = time.monotonic()
    result = run_program(code, limits)
    return result, time.monotonic() - start


def run_marked(code: str, limits: SandboxLimits = SMALL) -> tuple[SandboxResult, float, str]:
    """Run `code` after printing its pid namespace; returns (result, seconds, namespace)."""
    result, elapsed = timed(_MARK + code, limits)
    namespace = result.stdout.splitlines()[0]
    assert namespace != os.readlink("/proc/self/ns/pid"), "the program ran in the harness's pid namespace"
    return result, elapsed, namespace


def processes_in(namespace: str) -> list[tuple[int, str]]:
    """Live processes of the host whose pid namespace is `namespace`."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{name}/ns/pid") == namespace:
                with open(f"/proc/{name}/stat") as f:
                    if f.read().rsplit(")", 1)[-1].split()[0] != "Z":
                        found.append((int(name), Path(f"/proc/{name}/cmdline").read_bytes()[:80].decode()))
    return found


def assert_no_leftovers(namespace: str) -> None:
    """Nothing of the run's pid namespace is alive a moment after run_program has returned.

    Every process of the namespace has been sent SIGKILL by then, but one that the namespace's
    exit reparented may still be on its way out for a few milliseconds."""
    deadline = time.monotonic() + 1.0
    while processes_in(namespace) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processes_in(namespace) == []


@contextlib.contextmanager
def tcp_listener(host: str = "127.0.0.1") -> Iterator[tuple[socket.socket, int]]:
    """A real listening TCP server on the host's loopback; yields (server, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((host, 0))
        server.listen(8)
        server.setblocking(False)
        yield server, server.getsockname()[1]


def nothing_arrived(server: socket.socket) -> bool:
    """True when no connection waits in the listener's backlog."""
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


@contextlib.contextmanager
def unix_listener(path: str) -> Iterator[socket.socket]:
    """A real listening Unix socket at `path` (a filesystem path, or "\\0name" for an abstract one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        if not path.startswith("\0"):
            os.chmod(path, 0o777)
        server.listen(8)
        server.setblocking(False)
        try:
            yield server
        finally:
            if not path.startswith("\0"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


@contextlib.contextmanager
def open_tree(parent: str | None = None) -> Iterator[Path]:
    """A world-readable folder on the host (under `parent`, default the temp folder), as a cache or
    a project folder usually is (pytest's own temp folders are 0700, which would hide what is in
    them from a dropped uid anyway)."""
    folder = Path(tempfile.mkdtemp(prefix="soupbench-hostile-", dir=parent))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@contextlib.contextmanager
def open_folder(parent: str | None = None) -> Iterator[str]:
    """A 0777 folder (under `parent`, default the host's temp folder) removed afterwards."""
    folder = tempfile.mkdtemp(prefix="soupbench-hostile-", dir=parent)
    os.chmod(folder, 0o777)
    try:
        yield folder
    finally:
        for entry in Path(folder).iterdir():
            entry.unlink()
        os.rmdir(folder)


def harness(code: str, *args: str, env: dict[str, str] | None = None, wrapper: list[str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` (with `args` as sys.argv[1:]) in a separate harness process, a fresh interpreter
    importing this checkout, with `env` added to a minimal environment and the command prefixed
    by `wrapper`."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "HOME": os.path.expanduser("~"),
            "LANG": "C.UTF-8"}
    return subprocess.run([*(wrapper or []), sys.executable, "-c", code, *args], env={**base, **(env or {})}, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def harness_json(code: str, *args: str, **kwargs):
    """`harness`, for code that prints one JSON value as its last line."""
    done = harness(code, *args, **kwargs)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def tool_only_path(tmp_path: Path, *tools: str) -> str:
    """A PATH folder holding only links to `tools`: a machine where the others are not installed."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        target = Path("/usr/bin") / tool
        assert target.exists(), f"{tool} is part of util-linux on every Linux this runs on"
        (folder / tool).symlink_to(target)
    os.chmod(tmp_path, 0o755)
    return str(folder)


"""The sandbox for model-written programs: each test names a layer and would fail without it.

Hostile programs run with small limits (2 s, 8 processes) so that a broken sandbox fails a test
quickly instead of hurting the machine, and the whole file stays well under 30 s on two cores.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid

import psutil
import pytest

from benchmark import sandbox
from benchmark.sandbox import (
    SandboxLimits,
    isolation_report,
    parse_number,
    run_program,
    run_programs,
)

SMALL = SandboxLimits(timeout_s=2.0, memory_mb=256, max_processes=8)
SLACK_S = 2.0  # what a loaded 2-core machine may add to a timeout


def _timed(code: str, limits: SandboxLimits = SMALL) -> tuple[sandbox.SandboxResult, float]:
    start = time.monotonic()
    result = run_program(code, limits)
    return result, time.monotonic() - start


def _run_marked(code: str) -> tuple[sandbox.SandboxResult, float, str]:
    """Run `code` after printing its working folder, which names this run's processes."""
    result, elapsed = _timed("import os as _os\nprint(_os.getcwd(), flush=True)\n" + code)
    return result, elapsed, result.stdout.splitlines()[0]


def _assert_no_leftovers(workdir: str) -> None:
    """No live process still works in the run's folder (processes of other runs are not ours)."""

    def leftovers() -> list[tuple[int, str]]:
        found = []
        for proc in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.cwd().startswith(workdir):
                    found.append((proc.pid, " ".join(proc.cmdline())[:80]))
        return found

    deadline = time.monotonic() + 1.0  # the kernel needs a moment to tear a namespace down
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers() == []


def test_normal_program_prints_its_result() -> None:
    result = run_program("a = 48213\nb = 9732\nprint(a + b)")
    assert result.ok and result.error is None and result.returncode == 0 and not result.timed_out
    assert result.stdout == "57945\n"
    assert parse_number(result.stdout) == 57945


def test_syntax_and_runtime_errors_are_not_ok() -> None:
    syntax = run_program("print(1")
    assert not syntax.ok and "SyntaxError" in syntax.error and syntax.returncode == 1
    name = run_program("print(undefined_name)")
    assert not name.ok and name.error.startswith("exit 1: NameError")


def test_infinite_loop_times_out() -> None:
    result, elapsed, workdir = _run_marked("while True: pass")
    assert result.timed_out and not result.ok and result.error == "timeout" and result.returncode is None
    assert elapsed < SMALL.timeout_s + SLACK_S
    _assert_no_leftovers(workdir)


@pytest.mark.parametrize("code", [
    "x = 'a' * 10**10",
    "x = bytearray(1 << 30)\nprint('allocated a GiB')",  # succeeds without RLIMIT_AS
    "grow = []\nwhile True: grow.append(bytearray(10**6))",  # times out without RLIMIT_AS
])
def test_memory_bomb_fails_and_harness_survives(code: str) -> None:
    result, elapsed = _timed(code)
    assert not result.ok and result.error == "memory" and "allocated" not in result.stdout
    assert elapsed < SMALL.timeout_s
    assert run_program("print(6 * 7)").stdout == "42\n"


def test_process_limit_is_enforced() -> None:
    """Counts the forks that succeed; as root with no uid drop RLIMIT_NPROC would allow all 40."""
    code = (
        "import os, time\nn = 0\nfor _ in range(40):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint(n)"
    )
    result, _, workdir = _run_marked(code)
    assert result.ok, result.error
    assert int(result.stdout.splitlines()[1]) < SMALL.max_processes
    _assert_no_leftovers(workdir)  # the sleeping children did not outlive the program


@pytest.mark.parametrize("code", [
    "import os\nwhile True: os.fork()",
    "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",  # survives failed forks
])
def test_fork_bomb_is_contained(code: str) -> None:
    result, elapsed, workdir = _run_marked(code)
    assert not result.ok
    assert elapsed < SMALL.timeout_s + SLACK_S
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host can still fork
    _assert_no_leftovers(workdir)


def test_escaping_the_process_group_does_not_leave_a_process_behind() -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
    result, elapsed, workdir = _run_marked(code)
    assert result.ok and result.stdout.splitlines()[1:] == ["parent done"]
    assert elapsed < SMALL.timeout_s  # the child holding the pipes did not stall the harness
    _assert_no_leftovers(workdir)


def _connect_to_listener(limits: SandboxLimits = SMALL) -> sandbox.SandboxResult:
    """Let the program dial a port this test listens on; assert that nothing arrived."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')"
        result = run_program(code, limits)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # a connection would wait in the backlog
            server.accept()
    assert not result.ok and "connected" not in result.stdout
    return result


def test_network_is_unreachable() -> None:
    _connect_to_listener()


def test_python_socket_guard_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_unshare", lambda: ((), frozenset()))
    assert "guard" in isolation_report()["network"]
    assert "network disabled by sandbox" in _connect_to_listener().error
    assert run_program("import ssl, urllib.request\nprint(1)").ok  # stdlib still imports


def test_files_outside_the_working_folder_survive(tmp_path) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    code = (
        f"import os\nfor act in (lambda: os.remove({str(sentinel)!r}),\n"
        f"            lambda: open({str(sentinel)!r}, 'w').write('gone')):\n"
        "    try:\n        act()\n        print('did it')\n    except OSError as e:\n        print(type(e).__name__)"
    )
    result = run_program(code)
    assert "did it" not in result.stdout
    assert sentinel.read_text() == "keep me"


def test_cannot_create_files_in_a_visible_root_owned_folder() -> None:
    """`/` is visible in every namespace here, so only the uid drop stops this write."""
    if not sandbox._IS_ROOT:
        pytest.skip("without root no uid is dropped; the program runs as this user")
    target = f"/soupbench-sandbox-probe-{uuid.uuid4().hex}"
    try:
        result = run_program(f"open({target!r}, 'w').write('x')")
        assert not result.ok and "PermissionError" in result.error
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


def test_own_folder_is_writable_and_file_size_is_capped() -> None:
    assert run_program("open('a.txt', 'w').write('hi')\nprint(open('a.txt').read())").stdout == "hi\n"
    big = run_program("open('big.bin', 'wb').write(b'a' * (32 << 20))", SandboxLimits(max_file_mb=16))
    assert not big.ok and "File too large" in big.error


def test_environment_is_minimal_and_stdin_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUPBENCH_SECRET", "hunter2")
    result = run_program("import os, sys\nprint(sorted(os.environ))\nprint(repr(sys.stdin.read()))")
    assert result.ok and "SOUPBENCH_SECRET" not in result.stdout
    assert result.stdout.splitlines()[1] == "''"


@pytest.mark.parametrize("code", ["print('x' * 10_000_000)", "while True: print('spam')"])
def test_output_is_capped(code: str) -> None:
    result, elapsed = _timed(code)
    assert len(result.stdout) == SMALL.max_output_bytes
    assert not result.ok and result.error == "output limit"
    assert elapsed < SMALL.timeout_s  # stopped at the cap, not at the timeout
    assert run_program("print(1)").ok


def test_run_programs_preserves_order() -> None:
    # Later programs finish first, so completion order differs from input order.
    codes = [f"import time\ntime.sleep({0.3 * (3 - i)})\nprint({i})" for i in range(4)]
    results = run_programs(codes, workers=2)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    assert run_programs([]) == []


def test_isolation_report_names_every_layer() -> None:
    report = isolation_report()
    assert set(report) == {"network", "user", "processes", "filesystem", "limits", "interpreter"}
    assert all(isinstance(value, str) and value for value in report.values())


@pytest.mark.parametrize(("stdout", "expected"), [
    ("57945\n", 57945.0),
    ("-3.5  \n", -3.5),
    ("1e3", 1000.0),
    ("x = -0.25e-2\n", -0.0025),
    ("step 1\nstep 2\nanswer: 17\n", 17.0),
    (".5\n", 0.5),
    ("", None),
    ("no digits here\n", None),
])
def test_parse_number_takes_the_last_number(stdout: str, expected: float | None) -> None:
    assert parse_number(stdout) == expected


def test_run_programs_runs_each_source_once_per_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox._MEMO.clear()
    ran: list[str] = []

    def counting(code: str, limits: SandboxLimits = SandboxLimits()) -> sandbox.SandboxResult:
        ran.append(code)
        return real(code, limits)

    real = sandbox.run_program
    monkeypatch.setattr(sandbox, "run_program", counting)
    codes = ["print(6 * 7)", "print(1 / 0)", "print(6 * 7)", "print(6 * 7)"]
    first = run_programs(codes, SMALL)
    assert [r.stdout for r in first] == ["42\n", "", "42\n", "42\n"]
    assert not first[1].ok and "ZeroDivisionError" in first[1].error
    assert sorted(ran) == ["print(1 / 0)", "print(6 * 7)"]  # the copies were not run
    assert run_programs(["print(6 * 7)"], SMALL)[0].stdout == "42\n" and len(ran) == 2  # later batch
    run_programs(["print(6 * 7)"], SandboxLimits(timeout_s=3.0))  # other limits: run again
    assert ran.count("print(6 * 7)") == 2
    sandbox._MEMO.clear()
    long = "print('y' * 10_000)"  # too long to keep: run every time
    run_programs([long], SMALL)
    run_programs([long], SMALL)
    assert ran.count(long) == 2

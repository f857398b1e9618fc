"""The sandbox for model-written programs: what it runs, what it refuses, and whether what it says
about itself is true.

The attacks (hostile programs) are in test_sandbox_hostile.py. Here: ordinary programs, the batch
runner and its memo, the refusal where no strong sandbox can run (real machines without
bubblewrap or without user namespaces, made by hiding bwrap from PATH or by a user namespace that
may not nest another), the weak fallback when asked for, and `isolation_report` checked claim by
claim against what a probe program can actually do in each of those set-ups.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from benchmark import sandbox
from benchmark.sandbox import (
    ALLOW_WEAK_ENV,
    SandboxLimits,
    isolation_report,
    parse_number,
    run_program,
    run_programs,
)
from tests.sandbox_fixtures import SMALL, harness_json, nothing_arrived, open_tree, tcp_listener, tool_only_path


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


def test_run_programs_preserves_order() -> None:
    # Later programs finish first, so completion order differs from input order.
    codes = [f"import time\ntime.sleep({0.3 * (3 - i)})\nprint({i})" for i in range(4)]
    results = run_programs(codes, workers=2)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    assert run_programs([]) == []


def test_isolation_report_names_every_layer() -> None:
    report = isolation_report()
    assert set(report) == {"level", "backend", "network", "filesystem", "processes", "user", "ipc", "limits",
                           "interpreter"}
    assert all(isinstance(value, str) and value for value in report.values())


# ------------------------------------------------------------ refused without a strong sandbox

_REFUSAL = (
    "import json\nfrom benchmark import sandbox\n"
    "try:\n    sandbox.require_isolation()\n    outcome = sandbox.run_program('print(6 * 7)').stdout\n"
    "except sandbox.SandboxUnavailable as err:\n    outcome = 'refused: ' + str(err)\n"
    "print(json.dumps([outcome, sandbox.isolation_report()]))"
)
# A user namespace in which no further one may be made: a kernel that allows user namespaces to no
# one. Capabilities in it are dropped before the harness starts, as a process there would have none.
_NO_USER_NAMESPACES = [
    "unshare", "--user", "--map-current-user", "--keep-caps", "sh", "-c",
    'echo 0 > /proc/sys/user/max_user_namespaces && '
    'exec setpriv --ambient-caps -all --inh-caps -all --bounding-set -all "$@"', "sh",
]


def _refused(outcome: str, missing: str) -> None:
    assert outcome.startswith("refused: sandbox: ") and missing in outcome
    assert ALLOW_WEAK_ENV in outcome and "\n" not in outcome  # one line, naming the way out


def test_programs_are_refused_without_bubblewrap(tmp_path: Path) -> None:
    outcome, report = harness_json(_REFUSAL, env={"PATH": tool_only_path(tmp_path)})
    _refused(outcome, "bubblewrap (bwrap) is not installed")
    assert report["level"] == "unavailable" and "bubblewrap" in report["backend"]


def test_programs_are_refused_where_no_user_namespace_can_be_made() -> None:
    outcome, report = harness_json(_REFUSAL, wrapper=_NO_USER_NAMESPACES)
    _refused(outcome, "bubblewrap cannot run a sandboxed Python here")
    assert report["level"] == "unavailable"


def test_the_weak_fallback_runs_only_when_asked_and_says_so(tmp_path: Path) -> None:
    outcome, report = harness_json(_REFUSAL, env={"PATH": tool_only_path(tmp_path), ALLOW_WEAK_ENV: "1"})
    assert outcome == "42\n"
    assert report["level"] == "weak" and "bubblewrap (bwrap) is not installed" in report["backend"]


def test_the_weak_fallback_keeps_the_socket_guard(tmp_path: Path) -> None:
    code = ("import json\nfrom benchmark.sandbox import run_program\n"
            "r = [run_program(c) for c in ('import socket\\nsocket.socket()', 'import ssl, urllib.request\\nprint(1)')]\n"
            "print(json.dumps([x.error for x in r]))")
    guarded, stdlib = harness_json(code, env={"PATH": tool_only_path(tmp_path), ALLOW_WEAK_ENV: "1"})
    assert "network disabled by sandbox" in guarded and stdlib is None  # stdlib modules still import


# ------------------------------------------------- what the report claims, against what a program can do

# One probe program, formatted by the harness: what it can reach, read, write and see.
_CLAIMS_HARNESS = '''
import json, os, sys
from benchmark.sandbox import isolation_report, run_program, SandboxLimits
port, readable, writable = int(sys.argv[1]), sys.argv[2], sys.argv[3]
probe = f"""
import json, os, _socket
seen = {{}}
s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
s.settimeout(1)
try:
    s.connect(('127.0.0.1', {port}))
    seen['raw_tcp'] = 'reached'
except OSError as e:
    seen['raw_tcp'] = type(e).__name__
import socket
try:
    socket.socket().close()
    seen['socket'] = 'created'
except OSError as e:
    seen['socket'] = str(e)
try:
    seen['read'] = open({readable!r}).read()
except OSError as e:
    seen['read'] = type(e).__name__
try:
    open({writable!r}, 'w').write('x')
    seen['write'] = 'wrote'
except OSError as e:
    seen['write'] = type(e).__name__
seen['harness_visible'] = os.path.exists('/proc/{os.getpid()}')
seen['uid'] = os.getuid()
try:
    open('big', 'wb').write(b'a' * (12 << 20))
    open('big2', 'wb').write(b'a' * (12 << 20))
    seen['disk'] = 'wrote 24 MB'
except OSError as e:
    seen['disk'] = type(e).__name__
print(json.dumps(seen))
"""
result = run_program(probe, SandboxLimits(timeout_s=5.0, max_disk_mb=16))
print(json.dumps([isolation_report(), result.stdout, result.error]))
'''


def _check_claims(report: dict[str, str], seen: dict, secret: str, owner_uid: int) -> None:
    """Each claim of the report holds for the probe; a claim this does not know fails the test."""
    network = report["network"]
    if network.startswith(("own network namespace", "network namespace (unshare --net)")):
        assert seen["raw_tcp"] != "reached" and seen["socket"] == "created"
    elif network.startswith("python socket guard only"):
        assert seen["socket"] == "network disabled by sandbox"
        assert seen["raw_tcp"] == "reached"  # the weakness it admits is real
    else:
        pytest.fail(f"unchecked network claim {network!r}")

    files = report["filesystem"]
    if files.startswith("only /usr and the interpreter"):
        assert seen["read"] == "FileNotFoundError" and seen["write"] == "FileNotFoundError"
    elif "elsewhere Unix permissions (world-readable files readable)" in files:
        assert seen["read"] == secret and seen["write"] == "PermissionError"
    elif "elsewhere this user's own files readable and writable" in files:
        assert seen["read"] == secret and seen["write"] == "wrote"
    else:
        pytest.fail(f"unchecked filesystem claim {files!r}")

    processes = report["processes"]
    if processes.startswith(("own pid namespace", "pid namespace")):
        assert seen["harness_visible"] is False
    elif processes.startswith("host pid namespace (harness visible)"):
        assert seen["harness_visible"] is True
    else:
        pytest.fail(f"unchecked processes claim {processes!r}")

    user = report["user"]
    if user.startswith("per-run uid in "):
        low, high = map(int, user.split()[3].rstrip(",").split("-"))
        assert low <= seen["uid"] <= high
    elif user.startswith("user namespace, as uid "):
        assert seen["uid"] == int(user.split()[4].rstrip(";")) == owner_uid
    elif user.startswith(f"uid {owner_uid}, not dropped"):
        assert seen["uid"] == (0 if "root of a user namespace" in user else owner_uid)
    else:
        pytest.fail(f"unchecked user claim {user!r}")

    limits = report["limits"]
    assert ("all writes capped by the tmpfs size" in limits) == (seen["disk"] == "OSError")


@pytest.mark.parametrize("setup", ["as installed", "without bubblewrap", "with unshare only"])
def test_what_the_isolation_report_says_holds_for_a_probe(setup: str, tmp_path: Path) -> None:
    secret = uuid.uuid4().hex
    env = {} if setup == "as installed" else {
        ALLOW_WEAK_ENV: "1", "PATH": tool_only_path(tmp_path, *(["unshare"] if "unshare" in setup else []))}
    # Outside /tmp, which the weak fallback's pid namespace covers with a private tmpfs: "elsewhere".
    parent = "/run" if os.geteuid() == 0 else str(Path.home())
    with open_tree(parent) as tree, tcp_listener() as (server, port):
        (tree / "secret.txt").write_text(secret)
        os.chmod(tree / "secret.txt", 0o644)
        (tree / "mine").mkdir(mode=0o755)  # writable by this user alone
        report, stdout, error = harness_json(_CLAIMS_HARNESS, str(port), str(tree / "secret.txt"),
                                             str(tree / "mine" / "pwned"), env=env)
        assert stdout, error
        seen = json.loads(stdout)
        _check_claims(report, seen, secret, os.getuid())
        assert nothing_arrived(server) == (seen["raw_tcp"] != "reached")
    assert report["level"] == ("strong" if setup == "as installed" else "weak")


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

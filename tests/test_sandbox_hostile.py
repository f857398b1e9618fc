"""The hostile-program suite: programs that attack the harness or cheat, each contained.

Every sandbox case of issue 12's probe, as root and as an ordinary user (`.ci/run` runs this file
both ways), and the attacks the sandbox was already tested against. Each asserts that the attack
failed, that a program that tried to cheat is scored as wrong, that the harness lives on, and that
nothing is left running or written on the host. The files, sockets and secrets the programs go
for are real and readable under Unix permissions (world-readable, 0777 folders), so that only the
sandbox's own view of the host stops them; the tests marked "fails without the network namespace"
are the ones that a Python socket guard alone would not pass.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from benchmark import cache, sandbox
from benchmark.sandbox import SandboxLimits, isolation_report, parse_number, run_program
from tests.sandbox_fixtures import (
    REPO,
    SLACK_S,
    SMALL,
    assert_no_leftovers,
    harness,
    nothing_arrived,
    open_folder,
    open_tree,
    run_marked,
    tcp_listener,
    timed,
    unix_listener,
)


def _alive() -> None:
    """The harness still runs programs after an attack."""
    assert run_program("print(6 * 7)", SMALL).stdout == "42\n"


def _world_readable(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def open_tree_path():
    with open_tree() as folder:
        yield folder


def test_the_sandbox_in_force_is_the_strong_one() -> None:
    """The rest of this file tests bubblewrap's sandbox; without it programs would be refused."""
    report = isolation_report()
    assert report["level"] == "strong", report["backend"]


# ------------------------------------------------------------------------- what a program can read


def test_task_data_gold_answers_are_invisible(open_tree_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUPBENCH_CACHE", str(open_tree_path / "cache"))
    folder = cache.cache_dir("data", uuid.uuid4().hex[:16])
    folder.mkdir(parents=True)
    os.chmod(open_tree_path / "cache", 0o755)
    os.chmod(folder.parent, 0o755)
    os.chmod(folder, 0o755)
    gold = 48213 * 9732
    data = _world_readable(folder / "math_code.jsonl",
                           json.dumps({"prompt": "...", "answer": gold, "target": f"print({gold})"}) + "\n")
    cheat = f"import json\nprint(json.loads(open({str(data)!r}).readline())['answer'])"
    result = run_program(cheat, SMALL)
    assert not result.ok and "FileNotFoundError" in result.error
    assert parse_number(result.stdout) != gold  # scored as wrong
    # Nor can it find the file by looking around (but in the system's /usr, the interpreter's own
    # tree and its own /proc, which test_only_the_interpreter_is_visible_at_the_top covers).
    skip = ["/proc", "/usr", *sandbox._probe().binds]
    search = (f"import os\nhits = []\nfor d, sub, files in os.walk('/'):\n"
              f"    sub[:] = [s for s in sub if os.path.join(d, s) not in {skip!r}]\n"
              "    hits += [os.path.join(d, f) for f in files if f.endswith('.jsonl')]\nprint(hits)")
    assert run_program(search, SMALL).stdout == "[]\n"


def test_a_results_database_is_invisible(open_tree_path: Path) -> None:
    db = open_tree_path / "soupbench.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table runs (secret text)")
        conn.execute("insert into runs values ('hunter2')")
    os.chmod(db, 0o644)
    code = (f"import sqlite3\nconn = sqlite3.connect('file:{db}?mode=ro', uri=True)\n"
            "print(conn.execute('select secret from runs').fetchone())")
    result = run_program(code, SMALL)
    assert not result.ok and "unable to open database file" in result.error
    assert "hunter2" not in result.stdout


def test_the_projects_files_are_invisible() -> None:
    targets = [REPO / "benchmark" / "sandbox.py", REPO / "pyproject.toml", Path("/work"), Path("/etc/passwd")]
    code = ("import os\nfor path in %r:\n    try:\n        print(path, len(os.listdir(path) if os.path.isdir(path) "
            "else open(path).read()))\n    except OSError as err:\n        print(path, type(err).__name__)") % [
        str(t) for t in targets]
    result = run_program(code, SMALL)
    assert result.ok
    assert result.stdout.splitlines() == [f"{t} FileNotFoundError" for t in targets]


def test_only_the_interpreter_is_visible_at_the_top() -> None:
    setup = sandbox._probe()
    expected = {"usr", "tmp", "proc", "dev"} | {name for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
                                                if os.path.exists("/" + name)}
    expected |= {tree.strip("/").split("/")[0] for tree in setup.binds}
    result = run_program("import os\nprint(sorted(os.listdir('/')))\nprint(sorted(os.listdir('/tmp')))", SMALL)
    assert result.stdout.splitlines() == [str(sorted(expected)), "['prog.py']"]
    assert not {"root", "home", "work", "run", "var", "etc", "opt", "mnt"} & (expected - {
        tree.strip("/").split("/")[0] for tree in setup.binds})


def test_home_is_invisible_and_unwritable() -> None:
    home = Path.home()
    secret = _world_readable(home / f"soupbench-secret-{uuid.uuid4().hex}.txt", "hunter2")
    pwned = home / f"soupbench-pwned-{uuid.uuid4().hex}"
    code = (f"for act in (lambda: print(open({str(secret)!r}).read()), lambda: open({str(pwned)!r}, 'w').write('x')):\n"
            "    try:\n        act()\n    except OSError as err:\n        print(type(err).__name__)")
    try:
        result = run_program(code, SMALL)
        assert "hunter2" not in result.stdout and not pwned.exists()
        read, write = result.stdout.splitlines()
        assert read == "FileNotFoundError" and write in ("FileNotFoundError", "OSError")  # OSError: read-only /
    finally:
        secret.unlink()
        if pwned.exists():
            pwned.unlink()


def test_the_harness_environment_and_processes_are_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = uuid.uuid4().hex
    monkeypatch.setenv("SOUPBENCH_HOSTILE_SECRET", secret)
    code = (
        "import json, os\npids = sorted(p for p in os.listdir('/proc') if p.isdigit())\nfound = []\n"
        "for pid in pids:\n    for part in ('environ', 'cmdline'):\n        try:\n"
        f"            found += [pid] if {secret!r}.encode() in open(f'/proc/{{pid}}/{{part}}', 'rb').read() else []\n"
        "        except OSError:\n            pass\ntry:\n"
        f"    open('/proc/{os.getpid()}/environ', 'rb').read()\n    harness = 'readable'\n"
        "except OSError as err:\n    harness = type(err).__name__\n"
        "print(json.dumps({'pids': pids, 'found': found, 'harness': harness}))")
    result = run_program(code, SMALL)
    seen = json.loads(result.stdout)
    assert seen["found"] == [] and seen["harness"] in ("FileNotFoundError", "ProcessLookupError")
    assert set(seen["pids"]) <= {"1", "2"}  # bwrap's reaper and the program itself
    assert secret not in result.stdout + result.stderr


# ------------------------------------------------------------------------ what a program can write


def test_writes_outside_the_private_tmpfs_do_not_reach_the_host() -> None:
    name = f"soupbench-pwned-{uuid.uuid4().hex}"
    with open_folder() as shared:
        targets = [f"/run/lock/{name}", f"/tmp/{name}", f"/var/tmp/{name}", f"/dev/shm/{name}", f"/{name}",
                   f"{shared}/{name}", str(REPO / name)]
        code = ("for path in %r:\n    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n"
                "    except OSError as err:\n        print(type(err).__name__)") % targets
        result = run_program(code, SMALL)
        assert result.ok
        written = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("wrote")]
        assert written == [f"/tmp/{name}"]  # its own tmpfs, gone with it
        assert [t for t in targets if os.path.exists(t)] == []


def test_a_second_run_finds_nothing_the_first_left() -> None:
    first = run_program("open('/tmp/left-behind', 'w').write('x')\nimport os\nprint(sorted(os.listdir('/tmp')))",
                        SMALL)
    assert first.stdout == "['left-behind', 'prog.py']\n"
    second = run_program("import os\nprint(sorted(os.listdir('/tmp')), os.path.exists('/run/lock'))", SMALL)
    assert second.stdout == "['prog.py'] False\n"


def test_filling_the_disk_stops_at_the_tmpfs_cap() -> None:
    """1 GB in 64 files of 16 MB: each file is within RLIMIT_FSIZE, the total is not."""
    code = ("import errno\nwritten, why = 0, 'none'\nchunk = b'a' * (1 << 20)\ntry:\n    for i in range(64):\n"
            "        with open(f'fill{i}.bin', 'wb') as f:\n            for _ in range(16):\n"
            "                f.write(chunk)\n                f.flush()\n                written += len(chunk)\n"
            "except OSError as err:\n    why = errno.errorcode[err.errno]\nprint(written, why)")
    result, elapsed = timed(code)
    written, why = result.stdout.split()
    assert why == "ENOSPC" and int(written) <= SMALL.max_disk_mb << 20
    assert elapsed < SMALL.timeout_s + SLACK_S
    _alive()


def test_files_outside_the_working_folder_survive() -> None:
    with open_folder() as folder:
        sentinel = Path(folder) / "sentinel.txt"
        sentinel.write_text("keep me")
        os.chmod(sentinel, 0o666)
        code = (f"import os\nfor act in (lambda: os.remove({str(sentinel)!r}),\n"
                f"            lambda: open({str(sentinel)!r}, 'w').write('gone')):\n"
                "    try:\n        act()\n        print('did it')\n    except OSError as e:\n        print(type(e).__name__)")
        result = run_program(code, SMALL)
        assert "did it" not in result.stdout
        assert sentinel.read_text() == "keep me"


def test_own_folder_is_writable_and_file_size_is_capped() -> None:
    assert run_program("open('a.txt', 'w').write('hi')\nprint(open('a.txt').read())").stdout == "hi\n"
    big = run_program("open('big.bin', 'wb').write(b'a' * (32 << 20))", SandboxLimits(max_file_mb=16))
    assert not big.ok and "File too large" in big.error


# ------------------------------------------------------------------------ what a program can reach


def _dial_listener(code_template: str) -> None:
    with tcp_listener() as (server, port):
        result = run_program(code_template.format(port=port), SMALL)
        assert not result.ok and "connected" not in result.stdout
        assert nothing_arrived(server)


def test_the_network_is_unreachable() -> None:
    _dial_listener("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')")


def test_the_raw_socket_module_cannot_reach_the_host() -> None:
    """Fails without the network namespace: `_socket` goes around any Python-level guard."""
    _dial_listener("import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.settimeout(1)\n"
                   "s.connect(('127.0.0.1', {port}))\nprint('connected')")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        code = (f"import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)\n"
                f"s.sendto(b'leak', ('127.0.0.1', {udp.getsockname()[1]}))\nprint('sent')")
        run_program(code, SMALL)  # the datagram goes to the sandbox's own loopback, if anywhere
        with pytest.raises(BlockingIOError):
            udp.recv(16)


def test_an_abstract_unix_socket_is_unreachable() -> None:
    """Fails without the network namespace: abstract sockets belong to it, not to a filesystem."""
    name = f"\0soupbench-hostile-{uuid.uuid4().hex}"
    with unix_listener(name) as server:
        code = (f"import _socket\ns = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\ns.connect({name!r})\n"
                "print('connected')")
        result = run_program(code, SMALL)
        assert not result.ok and "ConnectionRefusedError" in result.error and nothing_arrived(server)


def test_a_filesystem_unix_socket_is_unreachable() -> None:
    parent = "/run" if os.access("/run", os.W_OK) else None  # where the probe found one answering
    with open_folder(parent) as folder, unix_listener(f"{folder}/sock") as server:
        code = (f"import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.connect('{folder}/sock')\n"
                "print('connected')")
        result = run_program(code, SMALL)
        assert not result.ok and "FileNotFoundError" in result.error and nothing_arrived(server)


# ---------------------------------------------------------------------- what a program can start


def test_infinite_loop_times_out() -> None:
    result, elapsed, namespace = run_marked("while True: pass")
    assert result.timed_out and not result.ok and result.error == "timeout" and result.returncode is None
    assert elapsed < SMALL.timeout_s + SLACK_S
    assert_no_leftovers(namespace)


@pytest.mark.parametrize("code", [
    "x = 'a' * 10**10",
    "x = bytearray(1 << 30)\nprint('allocated a GiB')",  # succeeds without RLIMIT_AS
    "grow = []\nwhile True: grow.append(bytearray(10**6))",  # times out without RLIMIT_AS
])
def test_memory_bomb_fails_and_harness_survives(code: str) -> None:
    result, elapsed = timed(code)
    assert not result.ok and result.error == "memory" and "allocated" not in result.stdout
    assert elapsed < SMALL.timeout_s
    _alive()


def test_process_limit_is_enforced() -> None:
    """Counts the forks that succeed; as root with no uid drop RLIMIT_NPROC would allow all 40."""
    code = (
        "import os, time\nn = 0\nfor _ in range(40):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint(n)"
    )
    result, _, namespace = run_marked(code)
    assert result.ok, result.error
    assert int(result.stdout.splitlines()[1]) < SMALL.max_processes
    assert_no_leftovers(namespace)  # the sleeping children did not outlive the program


@pytest.mark.parametrize("code", [
    "import os\nwhile True: os.fork()",
    "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",  # survives failed forks
])
def test_fork_bomb_is_contained(code: str) -> None:
    result, elapsed, namespace = run_marked(code)
    assert not result.ok
    assert elapsed < SMALL.timeout_s + SLACK_S
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host can still fork
    assert_no_leftovers(namespace)


def test_a_setsid_grandchild_does_not_outlive_the_run() -> None:
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(60)\n    os._exit(0)\nos.wait()\nprint('parent done')")
    result, elapsed, namespace = run_marked(code)
    assert result.ok and result.stdout.splitlines()[1:] == ["parent done"]
    assert elapsed < SMALL.timeout_s  # the grandchild holding the pipes did not stall the harness
    assert_no_leftovers(namespace)


def test_killing_its_parent_does_not_kill_the_harness() -> None:
    """The program signals its parent, every process it may (-1), and the harness by its host pid;
    the harness is a separate process here, so that its death would show as this one's exit code."""
    code = ("import os, json\n"
            "from benchmark.sandbox import run_program, SandboxLimits\n"
            "attack = ('import os\\nfor target in (os.getppid(), -1, %d):\\n    try:\\n        os.kill(target, 9)\\n'\n"
            "          '        print(\"sent\")\\n    except OSError as e:\\n        print(type(e).__name__)\\nprint(\"still here\")')"
            " % os.getpid()\n"
            "r = run_program(attack, SandboxLimits(timeout_s=2.0))\n"
            "print(json.dumps([r.stdout, r.error]))")
    done = harness(code)
    assert done.returncode == 0, done.stderr[-1000:]
    stdout, _ = json.loads(done.stdout.splitlines()[-1])
    lines = stdout.splitlines()
    assert lines[-1] == "still here" and lines[2] == "ProcessLookupError"  # the harness's pid names nothing


def test_closing_its_output_does_not_escape_the_timeout() -> None:
    result, elapsed, namespace = run_marked("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)")
    assert result.timed_out and not result.ok and elapsed < SMALL.timeout_s + SLACK_S
    assert_no_leftovers(namespace)


def test_environment_is_minimal_and_stdin_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUPBENCH_SECRET", "hunter2")
    result = run_program("import os, sys\nprint(sorted(os.environ))\nprint(repr(sys.stdin.read()))")
    assert result.ok and "SOUPBENCH_SECRET" not in result.stdout
    assert result.stdout.splitlines()[1] == "''"


@pytest.mark.parametrize("code", ["print('x' * 10_000_000)", "while True: print('spam')"])
def test_output_is_capped(code: str) -> None:
    result, elapsed = timed(code)
    assert len(result.stdout) == SMALL.max_output_bytes
    assert not result.ok and result.error == "output limit"
    assert elapsed < SMALL.timeout_s  # stopped at the cap, not at the timeout
    _alive()


def test_site_packages_are_hidden() -> None:
    """A score must not depend on (or read) what the harness has installed: not even pytest imports."""
    result = run_program("import pytest", SMALL)
    assert not result.ok and "ModuleNotFoundError" in result.error

"""Run untrusted, model-generated Python programs in a contained child process.

Scoring a program-of-thought answer means running code a model wrote, so the child must not hang
the run, exhaust memory or processes, reach the network, or touch files outside a throwaway folder.
Layers, strongest available first (`isolation_report` says which are in force):

- user: as root, each run leases its own unused uid from `SANDBOX_UIDS` (a file lock keeps
  concurrent harnesses apart). RLIMIT_NPROC is not enforced for root, and a private uid lets
  `kill(-1)` reap every process the program started, even ones that left its process group.
- namespaces: `unshare --net --pid --mount-proc`: no network interface up (not even loopback), a
  pid namespace that dies with the program (its pid 1, so signals it sends itself are ignored),
  private small tmpfs on /tmp, /var/tmp, /dev/shm. Without unshare a Python `socket` guard stands
  in for the network namespace (weak: `_socket` and `ctypes` still get through).
- limits: RLIMIT_AS/CPU/NPROC/FSIZE, no core dumps, a wall-clock timeout, capped output capture.
- files: a fresh working folder owned by the sandbox uid, `python -I`, minimal env, stdin closed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pwd
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

SANDBOX_UIDS = range(60500, 60564)  # uids without accounts, one per concurrent run
# The interpreter probe runs as a uid of its own: a sandbox run's clean-up kills every process of
# its uid, and a probe sharing that uid (threads scoring in parallel) would be killed with it.
PROBE_UID = SANDBOX_UIDS[-1] + 1
_PROBE_LOCK = threading.Lock()
_LOCK_DIR = os.path.join(tempfile.gettempdir(), "soupbench-sandbox-locks")
_IS_ROOT = os.geteuid() == 0


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits; the defaults fit short arithmetic programs with a wide margin."""

    timeout_s: float = 5.0
    memory_mb: int = 512
    max_processes: int = 16  # max processes/threads for the sandbox user
    max_output_bytes: int = 65536
    max_file_mb: int = 16


@dataclass(frozen=True)
class SandboxResult:
    """What a run printed and how it ended; `error` is for logs, `ok` is what metrics check."""

    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    ok: bool  # exited 0 and not timed out
    error: str | None  # short human reason when not ok ("timeout", "memory", "exit 1: NameError...")


# Runs as root inside the namespaces: private tmpfs, limits, drop to the sandbox uid, then run the
# program in this same interpreter (one interpreter start per run instead of two: start-up is most
# of a short program's cost). The launcher runs with -I -S and imports only these modules, so the
# program finds the state a fresh `python -I` gives it: site is run after the drop (the sandbox
# uid's sys.path), sys.argv is ["-c"], and its globals are a new __main__. 6 = nosuid|nodev.
_LAUNCHER = """
import ctypes, os, resource as r, sys
uid, mem, cpu, nproc, fsize, tmpfs = map(int, sys.argv[1:7])
program = sys.argv[7]
if tmpfs:
    libc = ctypes.CDLL(None, use_errno=True)
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        opts = b"size=%dk,mode=1777" % (fsize >> 10)
        if os.path.isdir(d) and libc.mount(b"tmpfs", d.encode(), b"tmpfs", 6, opts):
            raise OSError(ctypes.get_errno(), "sandbox: cannot mount tmpfs on " + d)
for res, soft, hard in ((r.RLIMIT_AS, mem, mem), (r.RLIMIT_CPU, cpu, cpu + 1),
                        (r.RLIMIT_NPROC, nproc, nproc), (r.RLIMIT_FSIZE, fsize, fsize), (r.RLIMIT_CORE, 0, 0)):
    r.setrlimit(res, (soft, hard))  # CPU: SIGXCPU at the soft limit, SIGKILL one second later
if uid >= 0:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
import site
site.main()
sys.argv[:] = ["-c"]
exec(compile(program, "<string>", "exec"), {"__name__": "__main__"})
"""

# Read from a relative path: python turns a script argument into an absolute path under /tmp,
# which the private tmpfs hides. The socket guard, used only without a network namespace, is a
# subclass rather than a function so that stdlib modules subclassing socket (ssl) still import.
_RUN = 'exec(compile(open("prog.py", encoding="utf-8").read(), "prog.py", "exec"), {"__name__": "__main__"})'
_SOCKET_GUARD = """
import socket
class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        raise OSError("network disabled by sandbox")
socket.socket = _NoSocket
"""


def _output(cmd: list[str], uid: int | None = None) -> str | None:
    """stdout of a short probe command, or None if it failed."""
    drop = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd="/",
                              env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, **drop)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def _unshare() -> tuple[tuple[str, ...], frozenset[str]]:
    """The strongest `unshare` wrapper that works here (empty if none), and its flags."""
    exe = shutil.which("unshare")
    user = () if _IS_ROOT else ("--map-root-user",)  # unprivileged: a user namespace first
    for flags in (("--net", "--pid", "--fork", "--kill-child", "--mount-proc"), ("--net",)):
        cmd = (exe, *user, *flags) if exe else ()
        if cmd and _output([*cmd, sys.executable, "-S", "-c", "print(1)"]) == "1":
            return cmd, frozenset(flags)
    return (), frozenset()


@functools.cache
def _interpreter() -> str:
    """A Python that the sandbox uid can run with the same stdlib that root sees.

    A root-only install (pyenv under a 0700 /root) may still start as another uid but silently
    fall back to a different stdlib, so compare sys.prefix as root and as the sandbox uid.
    """
    if not _IS_ROOT:
        return sys.executable
    probe = ["-I", "-c", "import sys; print(sys.prefix)"]
    with _PROBE_LOCK:  # the first scoring batch calls this from several threads at once
        for cand in dict.fromkeys([os.path.realpath(sys.executable), "/usr/bin/python3"]):
            prefix = _output([cand, *probe])
            if prefix and prefix == _output([cand, *probe], uid=PROBE_UID):
                return cand
    raise RuntimeError(f"no Python runnable by uid {PROBE_UID}; install one world-readable")


@contextlib.contextmanager
def _lease_uid() -> Iterator[int]:
    """An unused uid, held (flock) for one run, also against other harness processes."""
    os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
    accounts = {entry.pw_uid for entry in pwd.getpwall()}  # never borrow a real account
    for uid in (uid for uid in SANDBOX_UIDS if uid not in accounts):
        fd = os.open(os.path.join(_LOCK_DIR, str(uid)), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Killed processes may linger as zombies until init reaps them (no pid namespace),
            # and they still count against this uid's RLIMIT_NPROC: take a clean uid.
            if _pids(uid, zombies=True):
                raise BlockingIOError
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)
        return
    raise RuntimeError(f"all {len(SANDBOX_UIDS)} sandbox uids are busy")


def _pids(uid: int, zombies: bool = False) -> list[int]:
    """Processes whose real, effective or saved uid is `uid`."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line[:4] in ("Stat", "Uid:"))
        except (OSError, ValueError):
            continue
        alive = not fields.get("State", "Z").strip().startswith("Z")
        if (alive or zombies) and str(uid) in fields.get("Uid", "").split()[:3]:
            pids.append(int(name))
    return pids


def _kill(proc: subprocess.Popen, uid: int | None) -> None:
    """Kill the program and everything it started, then reap it."""
    for _ in range(20 if uid is not None else 0):
        if not _pids(uid):
            break
        # kill(-1) from the run's uid reaches every process of that uid and nothing else, even
        # those that left the process group; run it before the group kill so that unshare can
        # still reap its child (else it lingers as a zombie of init).
        _output([_interpreter(), "-I", "-S", "-c", "import os\ntry: os.kill(-1, 9)\nexcept OSError: pass"],
                uid=uid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5 if uid is not None else 0)
    if proc.returncode is None:  # not reaped yet, so its pid cannot name another group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _collect(proc: subprocess.Popen, limits: SandboxLimits, uid: int | None
             ) -> tuple[bytes, bytes, bool, bool, bool]:
    """Read stdout and stderr until EOF, the deadline or the output cap.

    Returns (out, err, timed out, capped, reaped): reaped when the program exited and everything
    it started was killed after it, so that the caller need not scan /proc a second time."""
    deadline = time.monotonic() + limits.timeout_s
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    timed_out = capped = reaped = False
    with selectors.DefaultSelector() as sel:
        for stream in bufs:
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map() and not (timed_out or capped):
            left = deadline - time.monotonic()
            timed_out = left <= 0
            for key, _ in [] if timed_out else sel.select(min(left, 0.2)):
                chunk, buf = os.read(key.fd, 1 << 16), bufs[key.fileobj]
                if not chunk:
                    sel.unregister(key.fileobj)
                capped = capped or len(buf) + len(chunk) > limits.max_output_bytes
                buf += chunk[: limits.max_output_bytes - len(buf)]
            if not reaped and proc.poll() is not None:
                _kill(proc, uid)  # exited: background children must not hold the pipes open
                reaped = True
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, capped, reaped


def _describe(rc: int | None, stderr: str, timed_out: bool, capped: bool) -> str | None:
    """A short reason for a failed run (None when it succeeded)."""
    if timed_out or capped or rc == 0:
        return "timeout" if timed_out else "output limit" if capped else None
    if rc is not None and rc < 0:
        named = {signal.SIGXCPU: "cpu time", signal.SIGXFSZ: "file size", signal.SIGKILL: "killed"}
        return named.get(-rc) or f"signal {signal.strsignal(-rc) or -rc}"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    return "memory" if "MemoryError" in last else f"exit {rc}: {last[:200]}".rstrip(": ")


def run_program(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` as a script in a fresh sandbox and capture what it printed."""
    wrapper, flags = _unshare()
    # Not root: no uid can be dropped to (None), and the run stays this user's.
    lease = _lease_uid() if _IS_ROOT else contextlib.nullcontext(None)
    with lease as uid, tempfile.TemporaryDirectory(prefix="soupbench-sbx-") as work:
        with open(os.path.join(work, "prog.py"), "w", encoding="utf-8") as f:
            f.write(code)
        if uid is not None:
            os.chown(work, uid, uid)
        program = _RUN if "--net" in flags else _SOCKET_GUARD + _RUN
        ints = (-1 if uid is None else uid, limits.memory_mb << 20, int(limits.timeout_s) + 2,
                limits.max_processes, limits.max_file_mb << 20, "--mount-proc" in flags)
        cmd = [*wrapper, _interpreter(), "-I", "-S", "-c", _LAUNCHER, *map(str, map(int, ints)),
               program]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": work, "TMPDIR": work}
        # No preexec_fn (unsafe with run_programs' threads): the launcher does the child's set-up.
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        reaped = False
        try:
            out, err, timed_out, capped, reaped = _collect(proc, limits, uid)
        finally:
            if not reaped:  # before the folder and the uid are given back
                _kill(proc, uid)
            proc.stdout.close()
            proc.stderr.close()
    rc, stderr = None if timed_out else proc.returncode, err.decode("utf-8", "replace")
    error = _describe(rc, stderr, timed_out, capped)
    return SandboxResult(out.decode("utf-8", "replace"), stderr, rc, timed_out, error is None, error)


class _ResultMemo:
    """Results of programs already run in this process, by (source, limits), least recent out first.

    Models repeat themselves: in a micro grid (13 methods x 3 tasks x 200 stories) 40% of the
    programs are exact copies of one another (the same story answered the same way by several
    methods), and a run is ~25 ms of process start-up for a program that computes one product.
    A program's result depends on its source and its limits only (fresh folder, no input, no
    network), so a copy is not run again. Long outputs are not kept (memory stays small)."""

    MAX_ENTRIES = 20_000
    MAX_CHARS = 4096  # stdout + stderr of a kept result

    def __init__(self) -> None:
        self._results: OrderedDict[tuple[str, SandboxLimits], SandboxResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, SandboxLimits]) -> SandboxResult | None:
        with self._lock:
            found = self._results.get(key)
            if found is not None:
                self._results.move_to_end(key)
            return found

    def put(self, key: tuple[str, SandboxLimits], result: SandboxResult) -> None:
        if len(result.stdout) + len(result.stderr) > self.MAX_CHARS:
            return
        with self._lock:
            self._results[key] = result
            while len(self._results) > self.MAX_ENTRIES:
                self._results.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._results.clear()


_MEMO = _ResultMemo()


def run_programs(codes: list[str], limits: SandboxLimits = SandboxLimits(),
                 workers: int = 2) -> list[SandboxResult]:
    """Run a batch of programs, `workers` at a time (each in its own sandbox), in input order.

    A program whose exact source already ran under the same limits, in this batch or an earlier
    one of this process, is not run again: its result is reused (see `_ResultMemo`)."""
    known = {code: _MEMO.get((code, limits)) for code in dict.fromkeys(codes)}
    todo = [code for code, result in known.items() if result is None]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for code, result in zip(todo, pool.map(lambda code: run_program(code, limits), todo)):
            known[code] = result
            _MEMO.put((code, limits), result)
    return [known[code] for code in codes]


def isolation_report() -> dict[str, str]:
    """Which isolation mechanisms are in force on this machine, for logs and run records."""
    _, flags = _unshare()
    pidns, root = "--pid" in flags, _IS_ROOT
    uids = f"{SANDBOX_UIDS.start}-{SANDBOX_UIDS.stop - 1}"
    return {
        "network": "network namespace (unshare --net): no interface up" if "--net" in flags
        else "python socket guard only (weak: _socket and ctypes still reach the network)",
        "user": f"per-run uid in {uids}, dropped from root" if root
        else f"uid {os.getuid()}, not dropped: RLIMIT_NPROC counts all of this user's processes",
        "processes": ("pid namespace, " if pidns else "")
        + ("kill(-1) as the run's uid" if root else "process-group kill"),
        "filesystem": "own temp dir" + (", private tmpfs /tmp /var/tmp /dev/shm" if pidns else "")
        + ("; elsewhere Unix permissions" if root else "; elsewhere unprotected (same user)"),
        "limits": "wall timeout, RLIMIT_AS/CPU/NPROC/FSIZE, RLIMIT_CORE=0, capped output",
        "interpreter": f"{_interpreter()} -I, minimal env, stdin closed",
    }


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(stdout: str) -> float | None:
    """The last number printed ("-3", "2.5", "1e3"), or None; metrics compare it to the gold answer."""
    found = _NUMBER.findall(stdout)
    return float(found[-1]) if found else None

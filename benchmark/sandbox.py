"""Run untrusted, model-generated Python programs in a contained child process.

Scoring a program-of-thought answer means running code a model wrote, so the child must not hang
the run, exhaust memory, disk or processes, reach the network, see or touch the host's files
(the task data's gold answers among them), or outlive its run. Two layers:

- confinement: bubblewrap (`sandbox_bwrap`), for root and for an ordinary user alike: the program
  sees nothing but the interpreter, in its own pid, network, IPC and mount namespaces. Where
  bubblewrap cannot run, untrusted programs are refused (`SandboxUnavailable`, one line saying
  what is missing) unless SOUPBENCH_ALLOW_WEAK_SANDBOX=1 asks for the weak fallback
  (`sandbox_weak`: whatever `unshare` and Unix permissions give).
- limits: RLIMIT_AS/CPU/NPROC/FSIZE, no core dumps, a size-capped tmpfs for everything it writes,
  a wall-clock timeout, capped output capture, a minimal environment, stdin closed. As root each
  run leases its own unused uid from `SANDBOX_UIDS` (a file lock keeps concurrent harnesses
  apart): RLIMIT_NPROC is not enforced for root, and is per run with a uid of its own.

`isolation_report` says which layers are in force; every stored run carries it in its provenance.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pwd
import re
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from benchmark import sandbox_bwrap, sandbox_weak
from benchmark.errors import UserError

SANDBOX_UIDS = range(60500, 60564)  # uids without accounts, one per concurrent run
# The probes run as a uid of their own: the weak fallback's clean-up kills every process of its
# run's uid, and a probe sharing that uid (threads scoring in parallel) would be killed with it.
PROBE_UID = SANDBOX_UIDS[-1] + 1
ALLOW_WEAK_ENV = "SOUPBENCH_ALLOW_WEAK_SANDBOX"
_LOCK_DIR = os.path.join(tempfile.gettempdir(), "soupbench-sandbox-locks")
_IS_ROOT = os.geteuid() == 0
_PROBE_LOCK = threading.Lock()
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": sandbox_bwrap.WORKDIR, "TMPDIR": sandbox_bwrap.WORKDIR}


class SandboxUnavailable(UserError):
    """No confinement strong enough for untrusted programs, and the weak fallback was not asked for."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits; the defaults fit short arithmetic programs with a wide margin."""

    timeout_s: float = 5.0
    memory_mb: int = 512
    max_processes: int = 16  # max processes/threads for the sandbox user
    max_output_bytes: int = 65536
    max_file_mb: int = 16
    max_disk_mb: int = 64  # all files together: the size of the program's tmpfs


@dataclass(frozen=True)
class SandboxResult:
    """What a run printed and how it ended; `error` is for logs, `ok` is what metrics check."""

    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    ok: bool  # exited 0 and not timed out
    error: str | None  # short human reason when not ok ("timeout", "memory", "exit 1: NameError...")


def _probe() -> sandbox_bwrap.Bubblewrap | str:
    """bubblewrap's set-up on this machine, or what keeps it from working (probed once: the first
    scoring batch asks from several threads at once, and they wait for one probe)."""
    with _PROBE_LOCK:
        return _probe_once()


@functools.cache
def _probe_once() -> sandbox_bwrap.Bubblewrap | str:
    return sandbox_bwrap.probe(_IS_ROOT, PROBE_UID)


@functools.cache
def _weak(missing: str) -> sandbox_weak.Weak:
    return sandbox_weak.Weak(_IS_ROOT, PROBE_UID, missing)


def weak_allowed() -> bool:
    return os.environ.get(ALLOW_WEAK_ENV, "").strip().lower() in ("1", "true", "yes")


def _confinement() -> sandbox_bwrap.Bubblewrap | sandbox_weak.Weak:
    """bubblewrap where it works; else the weak fallback if the user asked for it; else refuse."""
    found = _probe()
    if not isinstance(found, str):
        return found
    if weak_allowed():
        weak = _weak(found)
        try:
            weak.interpreter  # probed here, so that a fallback that cannot run either says so now
        except RuntimeError as err:
            raise SandboxUnavailable(f"sandbox: {found}; and the weak fallback cannot run: {err}") from None
        return weak
    raise SandboxUnavailable(
        f"sandbox: {found}; refusing to run model-written programs without it "
        f"(set {ALLOW_WEAK_ENV}=1 to run them with weak isolation, at your own risk)")


def require_isolation() -> None:
    """Raise `SandboxUnavailable` now, before any work, if programs could not be run later."""
    _confinement()


@contextlib.contextmanager
def _lease_uid(clean: Callable[[int], bool]) -> Iterator[int]:
    """An unused uid, held (flock) for one run, also against other harness processes.

    `clean(uid)` says whether a uid is free of leftovers of an earlier run."""
    os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
    accounts = {entry.pw_uid for entry in pwd.getpwall()}  # never borrow a real account
    for uid in (uid for uid in SANDBOX_UIDS if uid not in accounts):
        fd = os.open(os.path.join(_LOCK_DIR, str(uid)), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not clean(uid):
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


def _collect(proc: subprocess.Popen, limits: SandboxLimits,
             exited: Callable[[subprocess.Popen], None]) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout and stderr until EOF, the deadline or the output cap.

    Returns (out, err, timed out, capped). `exited(proc)` runs once when the program has exited,
    so that background children cannot hold the pipes open."""
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
                exited(proc)
                reaped = True
    if not (reaped or timed_out or capped):  # both pipes closed: wait for the exit, not kill it
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True  # it closed its output and ran on
        else:
            exited(proc)
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, capped


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
    """Run `code` as a script in a fresh sandbox and capture what it printed.

    Raises `SandboxUnavailable` where no sandbox strong enough can run (see `_confinement`)."""
    confinement = _confinement()
    # Not root: no uid can be dropped to (None), and the run stays this user's (in a user namespace).
    lease = _lease_uid(confinement.clean) if _IS_ROOT else contextlib.nullcontext(None)
    with lease as uid, confinement.launch(code, limits, uid, _ENV) as proc:
        out, err, timed_out, capped = _collect(proc, limits, lambda p: confinement.exited(p, uid))
    rc = None if timed_out else confinement.returncode(proc.returncode)
    stderr = err.decode("utf-8", "replace")
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
    """Which isolation is in force for the programs of this process, for logs and run records.

    `level` is "strong" (bubblewrap), "weak" (the fallback, asked for) or "unavailable" (programs
    would be refused); the other entries say what each layer is, and tests check each claim
    against what a probe program can actually do."""
    uids = f"{SANDBOX_UIDS.start}-{SANDBOX_UIDS.stop - 1}"
    try:
        report = _confinement().report(uids)
    except SandboxUnavailable as err:
        report = {"level": "unavailable", "backend": str(err)}
    return report


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(stdout: str) -> float | None:
    """The last number printed ("-3", "2.5", "1e3"), or None; metrics compare it to the gold answer."""
    found = _NUMBER.findall(stdout)
    return float(found[-1]) if found else None

"""The weak confinement, used only when bubblewrap cannot run and the user asked for it anyway.

`sandbox.py` refuses to run untrusted programs without bubblewrap unless
SOUPBENCH_ALLOW_WEAK_SANDBOX=1 is set; then this does what the machine allows, and the run's
provenance says how little that is:

- network: `unshare --net` where it works (as root, or with user namespaces), else a Python
  `socket` guard (weak: `_socket` and `ctypes` still reach the network);
- processes: `unshare --pid --mount-proc` where it works, and as root a per-run uid whose
  processes `kill(-1)` reaps; else a process-group kill that a `setsid` child escapes;
- files: the program sees the whole host filesystem. As root it runs as a uid without an account
  (Unix permissions still let it read every world-readable file); as another user it runs as that
  user and can read and write all of the user's files. With a pid namespace, /tmp, /var/tmp and
  /dev/shm are private small tmpfs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.sandbox import SandboxLimits

_PROBE_LOCK = threading.Lock()

# As root inside the namespaces: private tmpfs, limits, drop to the sandbox uid, then the program
# in this same interpreter (see sandbox_bwrap._LAUNCHER for why). 6 = nosuid|nodev.
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
    r.setrlimit(res, (soft, hard))
if uid >= 0:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
import site
site.main()
sys.argv[:] = ["-c"]
exec(compile(program, "<string>", "exec"), {"__name__": "__main__"})
"""

# Read from a relative path: python turns a script argument into an absolute path under /tmp,
# which the private tmpfs hides. The socket guard is a subclass rather than a function so that
# stdlib modules subclassing socket (ssl) still import.
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


def pids(uid: int, zombies: bool = False) -> list[int]:
    """Processes whose real, effective or saved uid is `uid`."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line[:4] in ("Stat", "Uid:"))
        except (OSError, ValueError):
            continue
        alive = not fields.get("State", "Z").strip().startswith("Z")
        if (alive or zombies) and str(uid) in fields.get("Uid", "").split()[:3]:
            found.append(int(name))
    return found


class Weak:
    """What runs the program when bubblewrap cannot (see the module docstring)."""

    strong = False

    def __init__(self, as_root: bool, probe_uid: int, missing: str) -> None:
        self.as_root, self.probe_uid, self.missing = as_root, probe_uid, missing

    @functools.cached_property
    def unshare(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """The strongest `unshare` wrapper that works here (empty if none), and its flags."""
        exe = shutil.which("unshare")
        user = () if self.as_root else ("--map-root-user",)  # unprivileged: a user namespace first
        for flags in (("--net", "--pid", "--fork", "--kill-child", "--mount-proc"), ("--net",)):
            cmd = (exe, *user, *flags) if exe else ()
            if cmd and _output([*cmd, sys.executable, "-S", "-c", "print(1)"]) == "1":
                return cmd, frozenset(flags)
        return (), frozenset()

    @functools.cached_property
    def interpreter(self) -> str:
        """A Python that the sandbox uid can run with the same stdlib that root sees.

        A root-only install (pyenv under a 0700 /root) may still start as another uid but silently
        fall back to a different stdlib, so compare sys.prefix as root and as the sandbox uid."""
        if not self.as_root:
            return sys.executable
        probe = ["-I", "-c", "import sys; print(sys.prefix)"]
        with _PROBE_LOCK:  # the first scoring batch asks from several threads at once
            for cand in dict.fromkeys([os.path.realpath(sys.executable), "/usr/bin/python3"]):
                prefix = _output([cand, *probe])
                if prefix and prefix == _output([cand, *probe], uid=self.probe_uid):
                    return cand
        raise RuntimeError(f"no Python runnable by uid {self.probe_uid}; install one world-readable")

    def clean(self, uid: int) -> bool:
        """Killed processes may linger as zombies until init reaps them (no pid namespace), and
        they still count against a uid's RLIMIT_NPROC: a leased uid must have none."""
        return not pids(uid, zombies=True)

    @contextlib.contextmanager
    def launch(self, code: str, limits: SandboxLimits, uid: int | None,
               env: dict[str, str]) -> Iterator[subprocess.Popen]:
        wrapper, flags = self.unshare
        with tempfile.TemporaryDirectory(prefix="soupbench-sbx-") as work:
            with open(os.path.join(work, "prog.py"), "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(code)
            if uid is not None:
                os.chown(work, uid, uid)
            program = _RUN if "--net" in flags else _SOCKET_GUARD + _RUN
            ints = (-1 if uid is None else uid, limits.memory_mb << 20, int(limits.timeout_s) + 2,
                    limits.max_processes, limits.max_file_mb << 20, "--mount-proc" in flags)
            cmd = [*wrapper, self.interpreter, "-I", "-S", "-c", _LAUNCHER, *map(str, map(int, ints)), program]
            proc = subprocess.Popen(cmd, cwd=work, env={**env, "HOME": work, "TMPDIR": work},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
            try:
                yield proc
            finally:
                if proc.returncode is None:  # not reaped by `exited`: before the folder and uid are given back
                    self._kill(proc, uid)
                proc.stdout.close()
                proc.stderr.close()

    def exited(self, proc: subprocess.Popen, uid: int | None) -> None:
        """The program exited: background children must not hold the pipes open."""
        self._kill(proc, uid)

    @staticmethod
    def returncode(rc: int) -> int:
        return rc

    def _kill(self, proc: subprocess.Popen, uid: int | None) -> None:
        """Kill the program and everything it started, then reap it."""
        for _ in range(20 if uid is not None else 0):
            if not pids(uid):
                break
            # kill(-1) from the run's uid reaches every process of that uid and nothing else, even
            # those that left the process group; run it before the group kill so that unshare can
            # still reap its child (else it lingers as a zombie of init).
            _output([self.interpreter, "-I", "-S", "-c", "import os\ntry: os.kill(-1, 9)\nexcept OSError: pass"],
                    uid=uid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5 if uid is not None else 0)
        if proc.returncode is None:  # not reaped yet, so its pid cannot name another group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def report(self, uids: str) -> dict[str, str]:
        wrapper, flags = self.unshare
        pidns, root = "--pid" in flags, self.as_root
        mapped = " (root of a user namespace, no host privileges)" if wrapper and not root else ""
        return {
            "level": "weak",
            "backend": f"weak fallback (SOUPBENCH_ALLOW_WEAK_SANDBOX=1): {self.missing}",
            "network": "network namespace (unshare --net): no interface up" if "--net" in flags
            else "python socket guard only (weak: _socket and ctypes still reach the network)",
            "filesystem": "the host's files: own temp dir"
            + (", private tmpfs /tmp /var/tmp /dev/shm" if pidns else "")
            + ("; elsewhere Unix permissions (world-readable files readable)" if root
               else "; elsewhere this user's own files readable and writable"),
            "processes": ("pid namespace, " if pidns else "host pid namespace (harness visible), ")
            + ("kill(-1) as the run's uid" if root else "process-group kill"),
            "user": f"per-run uid in {uids}, dropped from root" if root
            else f"uid {os.getuid()}, not dropped{mapped}: RLIMIT_NPROC counts all of this user's processes",
            "ipc": "the host's IPC namespace",
            "limits": "wall timeout, RLIMIT_AS/CPU/NPROC/FSIZE (per file only, not in total), "
                      "RLIMIT_CORE=0, capped output",
            "interpreter": f"{self.interpreter} -I, minimal env, stdin closed",
        }

"""The strong confinement: bubblewrap shows a program the interpreter and nothing else of the host.

The program's whole filesystem is a new empty root holding `/usr` (and the top-level links into
it), the interpreter's own prefix, read-only, a fresh `/proc` of its own pid namespace, a minimal
read-only `/dev`, and one writable place: `/tmp`, a tmpfs whose size caps everything it can write.
Its interpreter's site-packages are covered by empty read-only folders, so that a score cannot
depend on (or read) what the harness happens to have installed, SoupBench's own task builders
included. No cache, database, home, `/work`, `/run`, `/etc` or filesystem socket is there to find.
It gets new pid, network (only its own loopback), IPC, UTS and cgroup namespaces, a new session
(no TIOCSTI into the harness's terminal), and dies with its parent.

Why bubblewrap and not mount namespaces of our own: building that root by hand (tmpfs, bind mounts,
remounting each read-only, pivot_root, a reaping pid 1, dropping capabilities, user namespaces for
a user who is not root) is a few hundred lines of mount(2) code where one missed flag leaks the
host. bwrap is the small audited tool Flatpak runs every application in, does all of it the same
way for root and, through user namespaces, for an ordinary user, and costs a few milliseconds a
start. It is one Debian package (`bubblewrap`), not setuid.

- As root, bwrap runs without a user namespace (it could not map the per-run uid to a real one)
  and keeps only CAP_SETUID/CAP_SETGID, which the launcher spends dropping to the run's own uid:
  RLIMIT_NPROC is not enforced for uid 0, and is per run with a uid of its own.
- As another user, bwrap makes a user namespace and drops every capability; RLIMIT_NPROC is then
  counted per sandbox (per user namespace), not over all of the user's processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.sandbox import SandboxLimits

WORKDIR = "/tmp"  # the program's working folder, HOME and TMPDIR: its only writable place
_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # links into /usr, or real folders

# Runs as the sandbox's first process, before any program code: limits, then (as root) the drop to
# the run's uid, then the program in this same interpreter (one interpreter start per run, not
# two). -I -S and only these imports, so the program finds the state a fresh `python -I` gives it:
# site runs after the drop, sys.argv is ["-c"], its globals a new __main__.
_LAUNCHER = """
import os, resource as r, sys
uid, mem, cpu, nproc, fsize = map(int, sys.argv[1:6])
for res, soft, hard in ((r.RLIMIT_AS, mem, mem), (r.RLIMIT_CPU, cpu, cpu + 1),
                        (r.RLIMIT_NPROC, nproc, nproc), (r.RLIMIT_FSIZE, fsize, fsize), (r.RLIMIT_CORE, 0, 0)):
    r.setrlimit(res, (soft, hard))  # CPU: SIGXCPU at the soft limit, SIGKILL one second later
if uid >= 0:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
import site
site.main()
sys.argv[:] = ["-c"]
with open("prog.py", encoding="utf-8") as f:
    source = f.read()
exec(compile(source, "prog.py", "exec"), {"__name__": "__main__"})
"""

# What the interpreter says about itself when run on the host (to know what to bind and hide),
# and inside a trial sandbox (to know that it works there, after the drop, with its stdlib).
_DESCRIBE = "import json, site, sys; print(json.dumps([sys.prefix, sys.exec_prefix, site.getsitepackages()]))"
_TRIAL = "import decimal, fractions, json, math, socket, sys; print(sys.prefix)"


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


@dataclass(frozen=True)
class Bubblewrap:
    """A working bubblewrap set-up: the interpreter, what to bind, what to hide."""

    exe: str
    version: str
    interpreter: str
    binds: tuple[str, ...]  # host trees bound read-only besides /usr
    hidden: tuple[str, ...]  # site-packages folders covered by an empty read-only tmpfs
    as_root: bool
    strong = True

    def mounts(self) -> list[str]:
        """The fixed part of the command line: namespaces, capabilities and the read-only view."""
        argv = [self.exe, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--hostname", "sandbox", "--die-with-parent", "--new-session"]
        if self.as_root:
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv += ["--unshare-user", "--cap-drop", "ALL"]
        argv += ["--ro-bind", "/usr", "/usr"]
        for name in _TOP_LEVEL:
            path = "/" + name
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        made: set[str] = set()
        for tree in self.binds:
            parts = tree.strip("/").split("/")[:-1]
            for depth in range(1, len(parts) + 1):  # bwrap would make them 0700: unreadable after the drop
                folder = "/" + "/".join(parts[:depth])
                if folder not in made:
                    made.add(folder)
                    argv += ["--perms", "0755", "--dir", folder]
            argv += ["--ro-bind", tree, tree]
        for folder in self.hidden:
            argv += ["--perms", "0555", "--size", "4096", "--tmpfs", folder, "--remount-ro", folder]
        return argv + ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]

    def command(self, uid: int | None, limits: SandboxLimits, program_fd: int) -> list[str]:
        """The full command line of one run; the program's source is read from `program_fd`."""
        ints = (-1 if uid is None else uid, limits.memory_mb << 20, int(limits.timeout_s) + 2,
                limits.max_processes, limits.max_file_mb << 20)
        return [*self.mounts(),
                "--perms", "1777", "--size", str(limits.max_disk_mb << 20), "--tmpfs", WORKDIR,
                "--perms", "0644", "--file", str(program_fd), f"{WORKDIR}/prog.py",
                "--chdir", WORKDIR, "--remount-ro", "/",
                self.interpreter, "-I", "-S", "-c", _LAUNCHER, *map(str, ints)]

    @contextlib.contextmanager
    def launch(self, code: str, limits: SandboxLimits, uid: int | None,
               env: dict[str, str]) -> Iterator[subprocess.Popen]:
        """Start `code` in a fresh sandbox; on leaving, make sure it and its children are gone.

        The source travels through a pipe into the sandbox's tmpfs (bwrap --file): the host
        never holds a file of the run."""
        read_end, write_end = os.pipe()
        try:
            # No preexec_fn (unsafe with run_programs' threads): the launcher does the set-up.
            proc = subprocess.Popen(self.command(uid, limits, read_end), cwd="/", env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, pass_fds=(read_end,))
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        try:
            _send(write_end, code.encode("utf-8", "surrogatepass"))
            yield proc
        finally:
            _stop(proc)
            proc.stdout.close()
            proc.stderr.close()

    def clean(self, uid: int) -> bool:
        """A uid is free once its run's lease ends: `_stop` returns only when its processes are gone."""
        return True

    def exited(self, proc: subprocess.Popen, uid: int | None) -> None:
        """Nothing to kill once the program has exited: its pid namespace died with it."""

    @staticmethod
    def returncode(rc: int) -> int:
        """bwrap reports a program killed by signal N as exit 128 + N; give it back as -N."""
        return -(rc - 128) if 128 < rc < 128 + signal.NSIG else rc

    def report(self, uids: str) -> dict[str, str]:
        user = (f"per-run uid in {uids}, dropped from root; no capabilities" if self.as_root
                else f"user namespace, as uid {os.getuid()}; no capabilities")
        return {
            "level": "strong",
            "backend": f"bubblewrap {self.version}",
            "network": "own network namespace: only its own loopback; the host's network and "
                       "abstract sockets unreachable",
            "filesystem": "only /usr and the interpreter, read-only (site-packages hidden); "
                          "writable: a private size-capped tmpfs at /tmp; no host files, sockets or /run",
            "processes": "own pid namespace (host processes invisible; everything dies with the program)",
            "user": user,
            "ipc": "own IPC and UTS namespaces, new session",
            "limits": "wall timeout, RLIMIT_AS/CPU/NPROC/FSIZE, RLIMIT_CORE=0, all writes capped by "
                      "the tmpfs size, capped output",
            "interpreter": f"{self.interpreter} -I, minimal env, stdin closed",
        }


def _describe(interpreter: str) -> tuple[list[str], list[str]] | None:
    """(prefixes, site-packages folders) of an interpreter, asked on the host; None if it fails."""
    try:
        done = subprocess.run([interpreter, "-I", "-S", "-c", _DESCRIBE], capture_output=True, text=True,
                              timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
        prefix, exec_prefix, site_dirs = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return [prefix, exec_prefix], site_dirs


def _trial(setup: Bubblewrap, uid: int | None) -> str | None:
    """Run a small program in the set-up, as a real run would; None when it works, else why not."""
    drop = f"import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n" if uid is not None else ""
    argv = [*setup.mounts(), "--tmpfs", WORKDIR, "--chdir", WORKDIR, "--remount-ro", "/",
            setup.interpreter, "-I", "-c", drop + _TRIAL]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/",
                              env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as err:
        return f"bubblewrap did not start: {err}"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {done.returncode}"


def probe(as_root: bool, probe_uid: int) -> Bubblewrap | str:
    """The working set-up on this machine, or one line saying what is missing."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        version = "?"
    failures = []
    for interpreter in dict.fromkeys(map(os.path.realpath, [sys.executable, "/usr/bin/python3"])):
        described = _describe(interpreter) if os.path.exists(interpreter) else None
        if described is None:
            continue
        prefixes, site_dirs = described
        binds = sorted({os.path.realpath(p) for p in prefixes if not _inside(os.path.realpath(p), ["/usr"])})
        if not _inside(interpreter, ["/usr", *binds]):
            binds.append(os.path.dirname(interpreter))
        binds = [b for b in binds if not _inside(b, [o for o in binds if o != b])]  # no nested binds
        hidden = tuple(d for d in dict.fromkeys(map(os.path.realpath, site_dirs))
                       if os.path.isdir(d) and _inside(d, ["/usr", *binds]))
        setup = Bubblewrap(exe, version, interpreter, tuple(binds), hidden, as_root)
        why = _trial(setup, probe_uid if as_root else None)
        if why is None:
            return setup
        if why.startswith("bwrap:"):  # bubblewrap itself cannot start here: another Python will not help
            failures = [why]
            break
        failures.append(f"{interpreter}: {why}")
    hint = "" if as_root else " (are user namespaces disabled? see user.max_user_namespaces)"
    return "bubblewrap cannot run a sandboxed Python here" + hint + ": " + ("; ".join(failures) or "no interpreter")


def _init_pids(outer: int) -> list[int]:
    """The sandbox's pid 1 (the outer bwrap's only child), as the host numbers it."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{outer}/task/{outer}/children") as f:
            return [int(pid) for pid in f.read().split()]
    return []


def _stop(proc: subprocess.Popen) -> None:
    """Kill the program and everything it started, then reap.

    Killing the sandbox's pid 1 makes the kernel kill every process of its pid namespace, and the
    outer bwrap exits only once they are gone: when this returns, nothing of the run is left.
    (Killing the outer bwrap alone would leave that to --die-with-parent, a moment later.)"""
    for pid in _init_pids(proc.pid) if proc.poll() is None else []:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2.0)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _send(fd: int, data: bytes) -> None:
    """Write all of `data` to a pipe and close it; a sandbox that died early just misses it."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)

"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary folder, reached over
a Unix socket in that folder only (no TCP port to collide with), stopped and deleted at the end.

`initdb` refuses to run as root, so under root the cluster belongs to an unprivileged account
(Debian's `postgres`, else `nobody`) and its commands run through `runuser`. The binaries are
Debian's (`/usr/lib/postgresql/<version>/bin`), or wherever `SOUPBENCH_PG_BIN`, `pg_config` or
PATH say.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

ROLE = "soupbench"


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when no PostgreSQL server is installed."""
    candidates = []
    if os.environ.get("SOUPBENCH_PG_BIN"):
        candidates.append(Path(os.environ["SOUPBENCH_PG_BIN"]))
    if shutil.which("pg_config"):
        done = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            candidates.append(Path(done.stdout.strip()))
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                      if p.parent.name.isdigit() else 0, reverse=True)
    candidates.extend(versions)
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


class PostgresServer:
    """One cluster; `url(name)` is SQLAlchemy's URL of database `name` in it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="soupbench-pg-"))
        self.data = self.folder / "data"
        self.account = None
        if os.geteuid() == 0:
            self.account = next(name for name in ("postgres", "nobody") if _account_exists(name))
            self.folder.chmod(0o755)
            shutil.chown(self.folder, user=self.account)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.account is not None:
            command = ["runuser", "-u", self.account, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses='' -c unix_socket_directories={self.folder} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{ROLE}@/{database}?host={self.folder}"

    def _admin(self):
        import psycopg

        return psycopg.connect(host=str(self.folder), dbname="postgres", user=ROLE, autocommit=True)

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self._admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False

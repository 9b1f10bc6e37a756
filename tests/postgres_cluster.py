"""A throwaway PostgreSQL server on 127.0.0.1 for the storage tests: initdb and pg_ctl in a temp dir, removed after.

Needs Debian's ``postgresql`` package (server binaries in /usr/lib/postgresql/*/bin) and the psycopg driver
(``pip install 'vocable[postgres]'``); without either, the tests that use it are skipped, saying which is missing.
As root the server runs as the ``postgres`` OS user the package creates (PostgreSQL refuses to run as root).

Local (socket) connections are trusted, for the set-up; TCP connections need a password (scram-sha-256), so the
tests go through the same password authentication a real deployment does.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from vocable.testing.server import free_port

ROLE = "vocable_test"
PASSWORD = "pg-S3cret/w@rd:x"  # '/', '@' and ':' must be percent-encoded in a URL: the redaction is tested on it


def server_bindir() -> str | None:
    """The newest installed PostgreSQL server's bin directory (Debian keeps initdb and pg_ctl off PATH)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        newest = max(found, key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
        return str(Path(newest).parent)
    initdb = shutil.which("initdb")
    return str(Path(initdb).resolve().parent) if initdb else None


@dataclass
class PostgresCluster:
    root: Path
    bindir: str
    port: int
    as_user: list[str]
    password: str = PASSWORD
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    def run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, f"{self.bindir}/{tool}", *args], cwd=self.root, check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def admin(self, dbname: str = "postgres") -> Any:
        """A superuser connection over the Unix socket (trusted), for set-up and for looking behind the store."""
        import psycopg

        return psycopg.connect(host=str(self.root), port=self.port, user="postgres", dbname=dbname, autocommit=True)

    def url(self, dbname: str, *, scheme: str = "postgresql", password: str | None = None) -> str:
        secret = quote(self.password if password is None else password, safe="")
        return f"{scheme}://{ROLE}:{secret}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        name = f"vocable_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{ROLE}"')
        return name

    def query(self, dbname: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.admin(dbname) as conn:
            return list(conn.execute(sql, params or None).fetchall())


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    for module in ("psycopg", "psycopg_pool"):
        pytest.importorskip(module, reason="the PostgreSQL driver is not installed: pip install 'vocable[postgres]'")
    bindir = server_bindir()
    if bindir is None or not Path(bindir, "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries are not installed (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no 'postgres' OS user to run the PostgreSQL server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="vocable-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = PostgresCluster(root, bindir, free_port(), as_user)
    started = False
    try:
        cluster.run("initdb", "-D", str(cluster.data), "-U", "postgres", "-E", "UTF8", "--no-sync",
                    "--auth-local=trust", "--auth-host=scram-sha-256")
        cluster.run("pg_ctl", "-D", str(cluster.data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
                    f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1", "start")
        started = True
        with cluster.admin() as conn:
            conn.execute(f"CREATE ROLE \"{ROLE}\" LOGIN PASSWORD '{cluster.password}'")
        yield cluster
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        raise RuntimeError(f"{exc.cmd[-1]} failed:\n{exc.stdout.decode(errors='replace')}\n"
                           f"{log.read_text(errors='replace') if log.exists() else ''}") from exc
    finally:
        if started:
            cluster.run("pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database owned by the test role, for one test."""
    return postgres_cluster.create_database()

"""A throwaway PostgreSQL cluster: for tests and benchmarks that freeze, stop or restart one.

Never the shared server: ``initdb`` into a temporary folder, ``pg_ctl`` on a free loopback
port, and on exit (a failure included) resumed if frozen, stopped and removed. As root (this
machine, CI) the server runs as the ``postgres`` user, which owns the folder.

    with ThrowawayCluster() as cluster:
        url = cluster.url()          # postgresql://postgres@127.0.0.1:PORT/postgres
        cluster.freeze()             # SIGSTOP the postmaster and every backend
        cluster.thaw()
        cluster.stop(); cluster.start()
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["ThrowawayCluster", "postgres_bin"]


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayCluster:
    """A PostgreSQL cluster of its own (see the module)."""

    def __init__(self, *, fsync: bool = False, settings: dict[str, str] | None = None) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise FileNotFoundError("no initdb: install PostgreSQL's server binaries")
        self.bin = binaries
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fraudscore-pg-"))
        self.data = self.root / "data"
        self._settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "fsync": "on" if fsync else "off",
            "max_connections": "200",
            **(settings or {}),
        }
        self._frozen: list[int] = []

    def url(self, dbname: str = "postgres") -> str:
        """A URL of the cluster (trust authentication, user postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def __enter__(self) -> ThrowawayCluster:
        try:
            self._as_owner(["chown", "postgres", str(self.root)], root_only=True)
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                       "-A", "trust", "--no-sync", "-E", "UTF8"])  # fmt: skip
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.writelines(f"{k} = '{v}'\n" for k, v in self._settings.items())
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = self.root / "server.log"
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w",
                   "-t", "60", "start"])  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back and disconnect; ``immediate``: no shutdown)."""
        self.thaw()
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self, mode: str = "fast") -> None:
        """Stop then start."""
        self.stop(mode)
        self.start()

    def postmaster_pid(self) -> int | None:
        """The server's main process, or None when it is not running."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def processes(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        main = self.postmaster_pid()
        if main is None:
            return []
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == main:
                    children.append(int(entry))
        return [main, *children]

    def freeze(self) -> None:
        """SIGSTOP every process of the server: connections stay open, nothing answers (as a
        half-open connection behind a NAT does). :meth:`thaw` resumes them."""
        self._frozen = self.processes()
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what :meth:`freeze` stopped."""
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = []

    def remove(self) -> None:
        """Resume, stop (immediately) and delete the cluster; safe to call twice."""
        self.thaw()
        if self.postmaster_pid() is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, command: list[str]) -> None:
        self._as_owner(command)

    def _as_owner(self, command: list[str], *, root_only: bool = False) -> None:
        if os.geteuid() == 0:
            if not root_only:
                command = ["runuser", "-u", "postgres", "--", *command]
        elif root_only:
            return
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise subprocess.CalledProcessError(
                done.returncode, command, done.stdout, f"{done.stderr}\n{tail}"
            )

"""The tests' PostgreSQL: the configured server when it answers, else a throwaway one.

The session fixture `postgres_url` (tests/conftest.py) calls `start_postgres` / `stop_postgres`, and
only when a PostgreSQL variant of a test runs (a SQLite-only selection never starts anything):

- `EASEL_TEST_POSTGRES_URL` (default `postgresql+psycopg://root@127.0.0.1:5432/test`) is used when a
  server answers there.
- Otherwise a throwaway server is started for the session: `initdb` (trust auth) in a fresh temporary
  folder, `postgres` on a free port of 127.0.0.1 with its Unix socket in that folder, a database
  `test`; it is stopped and the folder removed when the session ends. The server is the session's
  child and is told to die with it (Linux PR_SET_PDEATHSIG), so a killed run leaves no server behind;
  the next session removes such a run's folder. Server binaries are looked for in
  EASEL_TEST_POSTGRES_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/<newest>/bin,
  /usr/local/pgsql/bin, /opt/homebrew and then PATH. As root, the server runs as the `postgres` user
  (or `nobody`): PostgreSQL refuses to run as root.
- No binaries at all: as root (or with passwordless sudo) on Debian/Ubuntu, Debian's `postgresql`
  package is installed with apt-get, once, like scripts/ceph-rgw.sh installs Ceph
  (EASEL_TEST_POSTGRES_NO_INSTALL=1 forbids it). When that is not possible the PostgreSQL variants FAIL
  with a message saying what to do; EASEL_TEST_SKIP_POSTGRES=1 skips them knowingly.

An explicitly configured URL whose server answers but refuses us (wrong role, password, database) is a
failure, not a reason to start another server: only "nothing listens there" is.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
CONFIGURED_URL = os.environ.get("EASEL_TEST_POSTGRES_URL")
SKIP_PG = os.environ.get("EASEL_TEST_SKIP_POSTGRES") == "1"
DB_NAME = "test"
DB_USER = "easel"
START_TIMEOUT = 60.0


@dataclass
class Throwaway:
    """A server this session started."""

    dir: Path
    bindir: Path
    user: str | None  # the system user it runs as (None: ours)
    port: int
    process: subprocess.Popen[bytes] | None = None  # the postmaster, our child


def _version_key(path: str) -> tuple[float, ...]:
    return tuple(float(p) for p in re.findall(r"\d+(?:\.\d+)?", path)[:1]) or (0.0,)


def find_bindir() -> Path | None:
    """A folder holding initdb and postgres, or None."""
    candidates: list[str] = []
    if os.environ.get("EASEL_TEST_POSTGRES_BINDIR"):
        candidates.append(os.environ["EASEL_TEST_POSTGRES_BINDIR"])
    else:
        if shutil.which("pg_config"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
                candidates.append(out.stdout.strip())
        candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
        candidates += ["/usr/local/pgsql/bin", *glob.glob("/opt/homebrew/opt/postgresql*/bin")]
        if shutil.which("initdb"):
            candidates.append(str(Path(shutil.which("initdb") or "").resolve().parent))
    for c in candidates:
        if c and all((Path(c) / t).is_file() for t in ("initdb", "postgres")):
            return Path(c)
    return None


def _answers(url: str) -> Exception | None:
    """None when we can connect to `url`, else the error."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as e:
        return e
    finally:
        engine.dispose()


def _listening(url: str) -> bool:
    """Whether anything accepts TCP connections at the URL's host and port."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    try:
        with socket.create_connection((u.host or "127.0.0.1", u.port or 5432), timeout=3):
            return True
    except OSError:
        return False


def _install() -> None:
    """Debian's PostgreSQL server, with apt-get (root or passwordless sudo)."""
    why = "no PostgreSQL server binaries (initdb, postgres) found"
    if os.environ.get("EASEL_TEST_POSTGRES_NO_INSTALL") == "1":
        raise RuntimeError(f"{why} and EASEL_TEST_POSTGRES_NO_INSTALL=1")
    if os.environ.get("EASEL_TEST_POSTGRES_BINDIR"):
        raise RuntimeError(f"{why} in EASEL_TEST_POSTGRES_BINDIR={os.environ['EASEL_TEST_POSTGRES_BINDIR']}")
    if not shutil.which("apt-get"):
        raise RuntimeError(f"{why}; install PostgreSQL's server by hand (only apt-get is automated)")
    sudo: list[str] = []
    if os.geteuid() != 0:
        ok = (
            shutil.which("sudo")
            and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
        )
        if not ok:
            raise RuntimeError(f"{why}; installing needs root: run 'apt-get install postgresql' as root")
        sudo = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("PostgreSQL: installing Debian's postgresql package (apt-get)")
    for cmd in (
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-qq"],
        [
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "postgresql",
        ],
    ):
        proc = subprocess.run([*sudo, *cmd], capture_output=True, text=True, env=env, timeout=1500)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def _run_as() -> str | None:
    """The user the server runs as: ours, or (as root) postgres, else nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and there is neither a 'postgres' nor a 'nobody' user")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as(user: str | None) -> dict[str, object]:
    """subprocess keyword arguments that run a command as `user` (with its own primary group)."""
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/"}


def _traversable(path: Path) -> bool:
    """Whether every folder above `path` lets any user through (the server may run as another user)."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _base_dir(user: str | None) -> Path:
    """A fresh folder for the cluster: in the temp dir, or /tmp when the server's user could not reach
    it or its socket path would be too long (108 bytes on Linux)."""
    parent = Path(tempfile.gettempdir())
    if (user is not None and not _traversable(parent)) or len(str(parent)) > 60:
        parent = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix="easel-pg-", dir=parent))


def _die_with_us() -> None:
    """In the server's process before exec: SIGQUIT (immediate shutdown) when this session dies, so a
    killed test run leaves no server behind (Linux; elsewhere a no-op)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG


def sweep_leftovers() -> None:
    """Remove the folders of throwaway servers whose session died (its pid in `owner` is gone)."""
    for d in Path(tempfile.gettempdir()).glob("easel-pg-*"), Path("/tmp").glob("easel-pg-*"):
        for base in d:
            try:
                pid = int((base / "owner").read_text())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(base, ignore_errors=True)
            except PermissionError:
                pass


def start_throwaway() -> tuple[str, Throwaway]:
    """initdb + start a server in a temporary folder; its URL (database `test`)."""
    bindir = find_bindir()
    if bindir is None:
        _install()
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("installed PostgreSQL but still found no initdb/postgres")
    sweep_leftovers()
    user = _run_as()
    base = _base_dir(user)
    (base / "owner").write_text(str(os.getpid()))
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data, log = base / "data", base / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C", "TZ": "UTC"}
    t0 = time.monotonic()
    proc = subprocess.run(
        [bindir / "initdb", "-D", data, "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        **_as(user),  # type: ignore[arg-type]
    )
    if proc.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(
            f"initdb failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        )
    server = Throwaway(base, bindir, user, 0)
    # A throwaway cluster: no durability (fsync off), room for the multi-process tests' connections.
    options = [
        *("-c", "listen_addresses=127.0.0.1", "-k", str(base), "-c", "max_connections=300"),
        *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
    ]
    for _ in range(5):  # a free port can be taken between our check and the server's bind
        server.port = _free_port()
        with log.open("ab") as out:
            server.process = subprocess.Popen(
                [bindir / "postgres", "-D", data, "-p", str(server.port), *options],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_us,
                **_as(user),  # type: ignore[arg-type]
            )
        url = f"postgresql+psycopg://{DB_USER}@127.0.0.1:{server.port}/postgres"
        deadline = time.monotonic() + START_TIMEOUT
        while server.process.poll() is None and _answers(url) is not None:
            if time.monotonic() > deadline:
                stop_throwaway(server)
                raise RuntimeError(f"postgres did not answer in {START_TIMEOUT:g} s:\n{_tail(log)}")
            time.sleep(0.1)
        if server.process.poll() is None:
            break
        if "already in use" not in _tail(log):
            stop_throwaway(server)
            raise RuntimeError(f"postgres exited with {server.process.returncode}:\n{_tail(log)}")
    else:
        stop_throwaway(server)
        raise RuntimeError("postgres: no free port after 5 tries")
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    finally:
        engine.dispose()
    print(
        f"PostgreSQL: throwaway server {bindir} on 127.0.0.1:{server.port} ({base}), "
        f"ready after {time.monotonic() - t0:.1f} s"
    )
    return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{server.port}/{DB_NAME}", server


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


def stop_throwaway(server: Throwaway) -> None:
    """Stop the server (fast shutdown: it is thrown away) and delete its folder."""
    p = server.process
    if p is not None and p.poll() is None:
        p.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, no checkpoint wait
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
    shutil.rmtree(server.dir, ignore_errors=True)


def start_postgres() -> tuple[str, Throwaway | None]:
    """The URL the PostgreSQL variants use, and the throwaway server behind it (None: a configured one)."""
    if SKIP_PG:
        pytest.skip("EASEL_TEST_SKIP_POSTGRES=1")
    url = CONFIGURED_URL or DEFAULT_URL
    error = _answers(url)
    if error is None:
        return url, None
    if CONFIGURED_URL and _listening(url):
        pytest.fail(
            f"EASEL_TEST_POSTGRES_URL={url}: the server there refuses us: {error}\n"
            "Fix the URL, unset it (a throwaway server is started when nothing answers), or set "
            "EASEL_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests knowingly.",
            pytrace=False,
        )
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"PostgreSQL: {url} is not usable ({reason}); starting a throwaway server")
    try:
        return start_throwaway()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        pytest.fail(
            f"No PostgreSQL for the tests: nothing usable at {url}, and a throwaway server could not be "
            f"started: {e}\nInstall PostgreSQL's server (Debian: apt-get install postgresql), point "
            "EASEL_TEST_POSTGRES_URL at a server, or set EASEL_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL "
            "tests knowingly.",
            pytrace=False,
        )


def stop_postgres(server: Throwaway | None) -> None:
    if server is not None:
        stop_throwaway(server)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def fresh_database(kind: str, folder: Path, pg_url: str | None) -> Iterator[str]:
    """A database URL of its own: a new SQLite file in `folder`, or a new PostgreSQL schema in the
    server at `pg_url` (dropped afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'easel.db'}"
        return
    from sqlalchemy import create_engine, text

    assert pg_url is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

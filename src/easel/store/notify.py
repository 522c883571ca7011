"""Waking idle workers the moment a job is queued, without polling.

Every worker binds a Unix datagram socket in `<data_dir>/run/`; `ring()` sends one byte to each socket
there. A worker in the server process and `easel worker` processes on the same machine are woken alike.
Sockets of dead workers are removed by the first ring that finds them refusing.

On PostgreSQL, workers on other machines are woken too: creating a job sends `NOTIFY easel_jobs` in the
job's own transaction (delivered on commit), and each worker LISTENs on a dedicated connection whose
socket it waits on together with its doorbell.

A second bell, `CANCELS`, rings a busy worker's cancel watcher (engine/worker.py) when a job is canceled:
its sockets are named `c-*.sock` and its channel is `easel_cancels`, so a cancel wakes no idle worker and a
create wakes no watcher.

A third, `FINISHED`, carries job events to the API processes (`f-*.sock`, channel `easel_finished`): a
worker rings it with the ids of the jobs it completed or failed (message `F<id>,<id>...`) and with the
previews of jobs in progress (`P<json header>\n<image bytes>`), skipping the socket of the EventHub it
publishes to directly (the API process it runs in: the socket is tagged with the hub's `tag`); on
PostgreSQL every transaction that ends a job notifies the channel with the job's id (store/outbox.py).
So a `Prefer: wait`, an OpenAI request or an event stream in any API process learns at once that its
job ended, whichever process or host ran it, and sees the previews of workers on its host
(`FinishedRelay`, easel/runtime.py). NOTIFY payloads are limited to 8,000 bytes, so previews do not
travel between hosts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import tempfile
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

PG_RECONNECT_SECONDS = 2.0  # a lost LISTEN connection is opened again at most this often

JOBS = "jobs"  # a job was queued (or given back): idle workers claim
CANCELS = "cancels"  # a job was canceled: busy workers' watchers look at their jobs
FINISHED = "finished"  # job events for API processes: jobs that ended (their ids), previews
_SOCKET_PREFIX = {JOBS: "w", CANCELS: "c", FINISHED: "f"}
MAX_MESSAGE = 200_000  # bytes of one datagram at most (a larger message is not sent)
ENDED, PREVIEW = b"F", b"P"  # the kinds of FINISHED messages (their first byte)


class Doorbell:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        # AF_UNIX paths are limited to ~107 bytes; fall back to a short private dir for deep data dirs.
        if len(str(run_dir.resolve())) > 70:
            digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
            self.run_dir = Path(tempfile.gettempdir()) / f"easel-{digest}"
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def ring(self, bell: str = JOBS, message: bytes = b"!", *, skip: str | None = None) -> int:
        """Wake every listener of `bell` (JOBS: idle workers; CANCELS: cancel watchers; FINISHED: API
        processes, with `message`) but those tagged `skip` (`listener(tag=)`: an API process's EventHub,
        which the worker beside it publishes to directly); returns how many were reached. A message
        over MAX_MESSAGE bytes reaches nobody."""
        reached = 0
        if len(message) > MAX_MESSAGE:
            return 0
        own = f"{_SOCKET_PREFIX[bell]}-{skip}-" if skip else None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE + 4096)
            for path in self.run_dir.glob(f"{_SOCKET_PREFIX[bell]}-*.sock"):
                if own is not None and path.name.startswith(own):
                    continue
                try:
                    s.sendto(message, str(path))
                    reached += 1
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        path.unlink()
                except BlockingIOError:
                    reached += 1  # its buffer is full of rings: it is already awake
        return reached

    def others(self, bell: str, skip: str | None = None) -> int:
        """How many listeners of `bell` not tagged `skip` there are (sockets; dead ones included)."""
        own = f"{_SOCKET_PREFIX[bell]}-{skip}-" if skip else None
        paths = self.run_dir.glob(f"{_SOCKET_PREFIX[bell]}-*.sock")
        return sum(1 for p in paths if own is None or not p.name.startswith(own))

    def listener(self, bell: str = JOBS, tag: str | None = None) -> DoorbellListener:
        """A listener of `bell`; `tag` (letters and digits) names it for `ring(skip=)`."""
        name = f"{_SOCKET_PREFIX[bell]}-{tag or os.getpid()}-{uuid.uuid4().hex[:12]}.sock"
        return DoorbellListener(self.run_dir / name)


class DoorbellListener:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self._r, self._w = os.pipe()  # lets close()/interrupt() wake a waiting thread
        self.pg: PgListener | None = None
        self._pg_url: str | None = None
        self._pg_channel = CHANNEL
        self._pg_retry_at = 0.0

    def wait(self, timeout: float) -> bool:
        """Block until rung (doorbell or NOTIFY), interrupted, or `timeout` seconds; True if rung.

        A lost LISTEN connection (the database restarted) is dropped and opened again, at most every
        PG_RECONNECT_SECONDS; meanwhile the wait is capped at that, and a reconnect counts as a ring
        (notifications may have been missed)."""
        return self._poll(timeout, None)

    def receive(self, timeout: float) -> list[bytes] | None:
        """Like `wait`, but the messages: each datagram, and each NOTIFY's payload after ENDED (one entry
        each), [] when interrupted or timed out, None after a reconnect (messages may have been missed)."""
        got: list[bytes] = []
        rung = self._poll(timeout, got)
        return None if rung and not got else got

    def _poll(self, timeout: float, keep: list[bytes] | None) -> bool:
        rung = False
        if self.pg is None and self._pg_url is not None and time.monotonic() >= self._pg_retry_at:
            rung = self._reconnect()
        pg_fd = self.pg.fileno() if self.pg is not None else None
        if self._pg_url is not None and pg_fd is None:
            timeout = min(timeout, PG_RECONNECT_SECONDS)
        fds = [self.sock.fileno(), self._r] + ([pg_fd] if pg_fd is not None else [])
        ready, _, _ = select.select(fds, [], [], 0.0 if rung else max(0.0, timeout))
        if self.sock.fileno() in ready:
            rung = True
            with contextlib.suppress(BlockingIOError):
                while True:
                    message = self.sock.recv(MAX_MESSAGE if keep is not None else 16)
                    if keep is not None:
                        keep.append(message)
        if self.pg is not None and pg_fd in ready:
            try:
                rung = self.pg.drain(keep) or rung
            except Exception as e:
                log.warning("the LISTEN connection was lost (%s); opening it again", e)
                self.pg.close()
                self.pg = None
                rung = self._reconnect() or rung
        return rung

    def _reconnect(self) -> bool:
        assert self._pg_url is not None
        try:
            self.pg = PgListener(self._pg_url, self._pg_channel)
        except Exception as e:
            log.warning("could not LISTEN on the database (%s); retrying in %g s", e, PG_RECONNECT_SECONDS)
            self._pg_retry_at = time.monotonic() + PG_RECONNECT_SECONDS
            return False
        return True

    def listen_postgres(self, url: str, channel: str | None = None, *, connect: bool = True) -> None:
        """Also wake on `NOTIFY <channel>` (default `easel_jobs`) from the database at `url` (a
        SQLAlchemy URL). With `connect=False` the connection is opened by the first `wait` (which counts
        it as a ring, as after any reconnect)."""
        self._pg_url = url
        self._pg_channel = channel or CHANNEL
        if connect:
            self.pg = PgListener(url, self._pg_channel)

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._w, b"x")

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
        self.sock.close()
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.path.unlink()


CHANNEL = "easel_jobs"
CANCEL_CHANNEL = "easel_cancels"
FINISHED_CHANNEL = "easel_finished"


class PgListener:
    """A dedicated autocommit connection LISTENing on one channel (default: the jobs channel)."""

    def __init__(self, url: str, channel: str = CHANNEL) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        if channel not in (CHANNEL, CANCEL_CHANNEL, FINISHED_CHANNEL):
            raise ValueError(f"unknown channel {channel!r}")
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(f"LISTEN {channel}")

    def fileno(self) -> int:
        return int(self.conn.fileno())

    def drain(self, keep: list[bytes] | None = None) -> bool:
        """Consume pending notifications (their payloads, after ENDED, appended to `keep`); True if
        there was one."""
        pg = self.conn.pgconn
        pg.consume_input()
        got = False
        while (note := pg.notifies()) is not None:
            got = True
            if keep is not None:
                keep.append(ENDED + note.extra)
        return got

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

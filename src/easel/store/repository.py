"""Reads and writes of records. Every state change is one transaction; no SQL lives outside store/."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, bindparam, func, select, text, true, update

from easel.domain.errors import NotFound
from easel.domain.generation import FINISHED, Generation, Image, ImageFile, ListQuery, Served, Status
from easel.domain.pages import Page, PageRequest
from easel.domain.scheduling import DEADLINE_EXCEEDED, deadline_message
from easel.domain.spec import GenerationSpec
from easel.domain.webhooks import EventRenderer
from easel.store import pages, scheduling
from easel.store.credits import CHARGED, QueueCaps, admit, read_limits, refund
from easel.store.db import reading
from easel.store.outbox import record_generation_event
from easel.store.tables import generation_keys, generations, images, projects, task_numbers, utcnow

UNFINISHED = (Status.QUEUED.value, Status.RUNNING.value)


def _period_start(ts: datetime, period: str) -> str:
    if period == "hour":
        return ts.strftime("%Y-%m-%dT%H:00:00Z")
    if period == "month":
        return ts.strftime("%Y-%m-01")
    return ts.strftime("%Y-%m-%d")


def notify_workers(conn: Connection) -> None:
    """On PostgreSQL, wake LISTENing workers on every machine when this transaction commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify('easel_jobs', '')"))


def notify_cancel(conn: Connection) -> None:
    """On PostgreSQL, wake the cancel watchers of busy workers on every machine when this transaction
    commits (a running job was canceled: its worker stops it at the next step)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify('easel_cancels', '')"))


def new_id() -> str:
    return str(uuid.uuid4())


def image_row(
    img: ImageFile,
    *,
    project_id: str,
    generation_id: str | None,
    folder: str | None,
    uploaded: bool,
    now: datetime,
) -> dict[str, Any]:
    """The images-table row for a new image."""
    return {
        "id": img.id,
        "project_id": project_id,
        "generation_id": generation_id,
        "index": img.index,
        "seed": img.seed,
        "storage_key": img.storage_key,
        "mime": img.mime,
        "width": img.width,
        "height": img.height,
        "bytes": img.bytes,
        "sha256": img.sha256,
        "folder": folder,
        "uploaded": uploaded,
        "created_at": now,
    }


def ended(
    status: Status, now: datetime, code: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """Column values of a job that has just ended: its status, times, error, and no lease."""
    return {
        "status": status.value,
        "finished_at": now,
        "updated_at": now,
        "error_code": code,
        "error_message": None if message is None else message[:2000],
        "lease_token": None,
        "lease_owner": None,
        "lease_expires_at": None,
    }


def image_from_row(row: Row[Any]) -> Image:
    m = row._mapping
    return Image(
        id=m["id"],
        project_id=m["project_id"],
        generation_id=m["generation_id"],
        index=m["index"],
        seed=m["seed"],
        storage_key=m["storage_key"],
        mime=m["mime"],
        width=m["width"],
        height=m["height"],
        bytes=m["bytes"],
        sha256=m["sha256"],
        folder=m["folder"],
        created_at=m["created_at"],
    )


def generation_from_row(
    row: Row[Any], imgs: Sequence[Image] = (), position: int | None = None, eta: float | None = None
) -> Generation:
    m = row._mapping
    return Generation(
        id=m["id"],
        project_id=m["project_id"],
        status=Status(m["status"]),
        spec=GenerationSpec.model_validate(m["spec"]),
        attempts=m["attempts"],
        max_attempts=m["max_attempts"],
        progress_step=m["progress_step"],
        progress_total=m["progress_total"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        credits=m["credits"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        processing_ms=m["processing_ms"],
        deleted_at=m["deleted_at"],
        images=list(imgs),
        queue_position=position,
        eta_seconds=eta,
        served=None
        if m["served_by"] is None
        else Served(m["served_by"], m["provider"], m["upstream_request_id"]),
    )


def expire_overdue(
    conn: Connection,
    now: datetime,
    render: EventRenderer,
    *,
    project_id: str | None = None,
    generation_id: str | None = None,
) -> list[str]:
    """End the queued jobs whose deadline has passed (canceled, `deadline_exceeded`, never run, not
    charged), with their webhooks, in this transaction; their ids. On PostgreSQL rows another
    transaction holds are skipped (that one is ending or claiming them)."""
    g = generations.c
    q = select(g.id).where(g.status == Status.QUEUED.value, g.deadline_at < now)
    if project_id is not None:
        q = q.where(g.project_id == project_id)
    if generation_id is not None:
        q = q.where(g.id == generation_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    ids = [r.id for r in conn.execute(q.limit(1000))]
    if not ids:
        return []
    message = deadline_message()
    ended_rows = conn.execute(
        update(generations)
        .where(g.id.in_(ids), g.status == Status.QUEUED.value)
        .values(**ended(Status.CANCELED, now, DEADLINE_EXCEEDED, message))
        .returning(g.id, g.project_id, g.spec, g.credits)
    ).all()
    refund(conn, ended_rows)
    for r in ended_rows:
        record_generation_event(
            conn,
            Status.CANCELED,
            render=render,
            generation_id=r.id,
            project_id=r.project_id,
            spec=GenerationSpec.model_validate(r.spec),
            error_code=DEADLINE_EXCEEDED,
            error_message=message,
            now=now,
        )
    return [r.id for r in ended_rows]


def _by_id(with_project: bool, include_deleted: bool) -> Any:
    q = select(generations).where(generations.c.id == bindparam("gid"))
    if with_project:
        q = q.where(generations.c.project_id == bindparam("pid"))
    if not include_deleted:
        q = q.where(generations.c.deleted_at.is_(None))
    return q


# A generation by id, and the images of some generations: built once (every GET, list and create reads
# them; building a Select per call costs more CPU than the query).
_BY_ID = {(p, d): _by_id(p, d) for p in (True, False) for d in (True, False)}
_INSERT_GENERATION = generations.insert().returning(*generations.c)
_INSERT_GENERATION_KEY = generation_keys.insert()
_IMAGES_OF = (
    select(images)
    .where(images.c.generation_id.in_(bindparam("gids", expanding=True)), images.c.deleted_at.is_(None))
    .order_by(images.c.generation_id, images.c.index)
)


class Repository:
    """Records of projects, generations and images."""

    def __init__(
        self,
        engine: Engine,
        *,
        render_event: EventRenderer,
        live_within: timedelta = timedelta(seconds=30),
    ) -> None:
        self.engine = engine
        self.render_event = render_event  # webhook bodies (api/native/protocol.webhook_payload)
        self.live_within = live_within  # a worker seen this recently is live (queue estimates)

    # -- projects ----------------------------------------------------------------------------------

    def ensure_project(self, name: str) -> str:
        """The id of the project called `name`, created if missing (safe under concurrency)."""
        with self.engine.begin() as conn:
            found = conn.execute(select(projects.c.id).where(projects.c.name == name)).scalar()
            if found:
                return str(found)
            pid = new_id()
            conn.execute(projects.insert().values(id=pid, name=name, created_at=utcnow()))
            return pid

    def receipt(self, project_id: str, gid: str) -> dict[str, Any] | None:
        """The receipt of a generation of this project (None: it has none); NotFound for no such id."""
        g = generations.c
        with reading(self.engine) as conn:
            row = conn.execute(
                select(g.receipt).where(g.id == gid, g.project_id == project_id, g.deleted_at.is_(None))
            ).first()
        if row is None:
            raise NotFound("generation", gid)
        return None if row.receipt is None else dict(row.receipt)

    def project_name(self, project_id: str) -> str:
        with reading(self.engine) as conn:
            name = conn.execute(select(projects.c.name).where(projects.c.id == project_id)).scalar()
        if name is None:
            raise NotFound("project", project_id)
        return str(name)

    def records_parameters(self, project_id: str) -> bool:
        """Whether this project wants generation parameters written into its image files."""
        with reading(self.engine) as conn:
            value = conn.execute(
                select(projects.c.record_parameters).where(projects.c.id == project_id)
            ).scalar()
        return value is not False

    # -- generations -------------------------------------------------------------------------------

    def create_generation(
        self,
        project_id: str,
        spec: GenerationSpec,
        *,
        max_attempts: int,
        credits: float,
        key_id: str | None = None,
        uploads: Sequence[ImageFile] = (),
        caps: QueueCaps = QueueCaps(),
        estimate: bool = True,
    ) -> Generation:
        """Queue a generation, with the rows of its uploaded image inputs (their bytes already stored),
        in one transaction: the limits and the job's round in one read, the rows, then the budgets (the
        project's, and the key's) charged and the caps on queued jobs checked last (store/credits.py), so
        concurrent creates can neither overspend nor overfill the queue and hold a row lock only from
        there to the commit; over budget raises QuotaExceeded, over a cap QueueFull, and nothing is
        written. The answer is built from the inserted row; its queue position and ETA are read after the
        commit, outside the write transaction, and only when `estimate` (a caller that waits for the job
        answers with its final state instead)."""
        now = utcnow()
        gid = new_id()
        with self.engine.begin() as conn:
            limits = read_limits(conn, project_id, key_id, spec.priority)
            for img in uploads:  # the request's image inputs, in the same transaction
                self._insert_upload(conn, project_id, img, None, now)
            row = conn.execute(
                _INSERT_GENERATION,
                dict(
                    id=gid,
                    project_id=project_id,
                    status=Status.QUEUED.value,
                    model=spec.model,
                    batch_key=spec.batch_key,
                    priority=spec.priority,
                    fair_tag=limits.round,
                    deadline_at=spec.deadline,
                    spec=spec.model_dump(mode="json"),
                    n=spec.n,
                    attempts=0,
                    max_attempts=max_attempts,
                    progress_step=0,
                    progress_total=spec.steps or 0,
                    credits=credits,
                    created_at=now,
                    updated_at=now,
                ),
            ).one()
            if key_id is not None:
                conn.execute(_INSERT_GENERATION_KEY, {"generation_id": gid, "key_id": key_id})
            admit(conn, limits, credits, caps, "this API key", live_within=self.live_within, now=now)
            notify_workers(conn)
        position, eta = None, None
        if estimate:
            with reading(self.engine) as conn:
                position, eta = scheduling.estimates(conn, [row], utcnow(), self.live_within)[gid]
        return generation_from_row(row, (), position, eta)

    def ping(self) -> str:
        """Run a trivial query; the database's dialect name (for the health check)."""
        with reading(self.engine) as conn:
            conn.execute(text("SELECT 1"))
        return self.engine.dialect.name

    def usage(
        self, project_id: str, since: datetime | None, until: datetime | None, period: str
    ) -> list[dict[str, Any]]:
        """Rows of (model, period start, generations, images, credits) over charged generations."""
        where = [generations.c.project_id == project_id, generations.c.status.in_(CHARGED)]
        if since is not None:
            where.append(generations.c.created_at >= since)
        if until is not None:
            where.append(generations.c.created_at < until)
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(
                    generations.c.model, generations.c.created_at, generations.c.n, generations.c.credits
                ).where(*where)
            ).all()
        buckets: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            start = _period_start(r.created_at, period)
            b = buckets.setdefault(
                (r.model, start),
                {"model": r.model, "period": start, "generations": 0, "images": 0, "credits": 0.0},
            )
            b["generations"] += 1
            b["images"] += r.n
            b["credits"] = round(b["credits"] + r.credits, 6)
        return sorted(buckets.values(), key=lambda b: (b["period"], b["model"]))

    def get_generation(
        self, project_id: str, gid: str, *, include_deleted: bool = False, estimate: bool = True
    ) -> Generation:
        """One generation; a queued one past its deadline is ended first (the sweep runs on reads too,
        so a deadline holds even while no worker claims). `estimate` False leaves its queue position and
        ETA out (None), saving their queries (a waiter that only needs the status)."""
        with reading(self.engine) as conn:
            gen = self._load(conn, project_id, gid, include_deleted=include_deleted, estimate=estimate)
        if gen.status is Status.QUEUED and gen.spec.deadline is not None and gen.spec.deadline <= utcnow():
            with self.engine.begin() as conn:
                expire_overdue(conn, utcnow(), self.render_event, generation_id=gid)
                gen = self._load(conn, project_id, gid, include_deleted=include_deleted)
        return gen

    def _load(
        self,
        conn: Connection,
        project_id: str | None,
        gid: str,
        *,
        include_deleted: bool,
        estimate: bool = True,
    ) -> Generation:
        q = _BY_ID[(project_id is not None, include_deleted)]
        row = conn.execute(q, {"gid": gid, "pid": project_id}).first()
        if row is None:
            raise NotFound("generation", gid)
        imgs = self._images_of(conn, [gid]).get(gid, [])
        position, eta = None, None
        if estimate:
            position, eta = scheduling.estimates(conn, [row], utcnow(), self.live_within).get(
                gid, (None, None)
            )
        return generation_from_row(row, imgs, position, eta)

    def _images_of(self, conn: Connection, gids: Iterable[str]) -> dict[str, list[Image]]:
        ids = list(gids)
        out: dict[str, list[Image]] = {g: [] for g in ids}
        if not ids:
            return out
        rows = conn.execute(_IMAGES_OF, {"gids": ids})
        for r in rows:
            out[r.generation_id].append(image_from_row(r))
        return out

    def list_generations(self, project_id: str, query: ListQuery) -> Page[Generation]:
        """A page of the project's generations, newest first (store/pages.py: by cursor or offset, on
        the indexes of migration 0010), their images in one query."""
        g = generations.c
        where = [g.project_id == project_id]
        # One index range per status (ix_generations_project_status_list), merged: pages.page_rows_of_any.
        statuses = sorted({s.value for s in query.statuses})
        alternatives = [g.status == s for s in statuses] or [true()]
        if not query.include_deleted:
            where.append(g.deleted_at.is_(None))
        # One read (one connection, one transaction); a queued job of the project past its deadline is
        # swept first, as on GET, and the page read again.
        for attempt in range(2):
            now = utcnow()
            with reading(self.engine) as conn:
                overdue = (
                    attempt == 0
                    and conn.execute(
                        select(g.id)
                        .where(
                            g.project_id == project_id, g.status == Status.QUEUED.value, g.deadline_at < now
                        )
                        .limit(1)
                    ).first()
                )
                if not overdue:
                    found = pages.read(conn, generations, where, query.page, alternatives=alternatives)
                    imgs = self._images_of(conn, [r.id for r in found.items])
                    estimates = scheduling.estimates(conn, found.items, now, self.live_within)
                    break
            with self.engine.begin() as conn:
                expire_overdue(conn, now, self.render_event, project_id=project_id)
        items = [generation_from_row(r, imgs[r.id], *estimates.get(r.id, (None, None))) for r in found.items]
        return dataclasses.replace(found, items=items)

    def changed_since(self, project_id: str, since: datetime, limit: int = 100) -> list[Generation]:
        """The project's generations (deleted ones too) whose record changed at or after `since`, in the
        order they last changed (updated_at, id): a range scan of ix_generations_updated (every
        project's changes since then, this project's kept), their images in one query, no queue
        estimates (the project-wide event stream)."""
        g = generations.c
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(generations)
                .where(g.project_id == project_id, g.updated_at >= since)
                .order_by(g.updated_at, g.id)
                .limit(limit)
            ).all()
            imgs = self._images_of(conn, [r.id for r in rows])
        return [generation_from_row(r, imgs[r.id], None, None) for r in rows]

    def cancel(self, project_id: str, gid: str) -> Generation:
        """Queued or running -> canceled. A running job's worker sees it at its next step and stops."""
        with self.engine.begin() as conn:
            gen = self._load(conn, project_id, gid, include_deleted=False)  # 404 for others' ids
            res = conn.execute(
                update(generations)
                .where(generations.c.id == gid, generations.c.status.in_(UNFINISHED))
                .values(**ended(Status.CANCELED, utcnow(), "canceled", "Canceled by request"))
            )
            if res.rowcount and gen.status is Status.RUNNING:
                notify_cancel(conn)
            if res.rowcount:  # its credits back, and its webhooks, in this same transaction
                refund(conn, [gen])
                record_generation_event(
                    conn,
                    Status.CANCELED,
                    render=self.render_event,
                    generation_id=gid,
                    project_id=project_id,
                    spec=gen.spec,
                    error_code="canceled",
                    error_message="Canceled by request",
                )
            return self._load(conn, project_id, gid, include_deleted=False)

    def soft_delete(self, project_id: str, gid: str) -> list[Image]:
        """Mark a generation deleted (canceling it if still unfinished); returns the images to remove."""
        now = utcnow()
        with self.engine.begin() as conn:
            gen = self._load(conn, project_id, gid, include_deleted=False)
            values: dict[str, Any] = {"deleted_at": now, "updated_at": now}
            if gen.status not in FINISHED:
                values |= ended(Status.CANCELED, now, "canceled", "Deleted by request")
            conn.execute(update(generations).where(generations.c.id == gid).values(**values))
            conn.execute(update(images).where(images.c.generation_id == gid).values(deleted_at=now))
            if gen.status is Status.RUNNING:
                notify_cancel(conn)
            if gen.status not in FINISHED:  # deleting an unfinished job cancels it: credits, webhooks
                refund(conn, [gen])
                record_generation_event(
                    conn,
                    Status.CANCELED,
                    render=self.render_event,
                    generation_id=gid,
                    project_id=project_id,
                    spec=gen.spec,
                    error_code="canceled",
                    error_message="Deleted by request",
                    now=now,
                )
            return gen.images

    # -- images ------------------------------------------------------------------------------------

    def get_image(self, project_id: str | None, image_id: str) -> Image:
        q = select(images).where(images.c.id == image_id, images.c.deleted_at.is_(None))
        if project_id is not None:
            q = q.where(images.c.project_id == project_id)
        with reading(self.engine) as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFound("image", image_id)
        return image_from_row(row)

    def add_upload(self, project_id: str, img: ImageFile, folder: str | None) -> Image:
        with self.engine.begin() as conn:
            self._insert_upload(conn, project_id, img, folder, utcnow())
        return self.get_image(project_id, img.id)

    @staticmethod
    def _insert_upload(
        conn: Connection, project_id: str, img: ImageFile, folder: str | None, now: datetime
    ) -> None:
        row = image_row(img, project_id=project_id, generation_id=None, folder=folder, uploaded=True, now=now)
        conn.execute(images.insert().values(**row))

    # -- integer task numbers (dialects with integer ids) --------------------------------------------

    def task_number(self, project_id: str, gid: str) -> int:
        """The integer number of a generation, assigned on first use."""
        with self.engine.begin() as conn:
            self._load(conn, project_id, gid, include_deleted=True)
            found = conn.execute(
                select(task_numbers.c.number).where(task_numbers.c.generation_id == gid)
            ).scalar()
            if found is None:
                res = conn.execute(task_numbers.insert().values(generation_id=gid, project_id=project_id))
                key = res.inserted_primary_key
                assert key is not None
                found = key[0]
            return int(found)

    def generation_by_number(self, project_id: str, number: int) -> str:
        """The generation id behind a task number of this project (404 otherwise)."""
        with reading(self.engine) as conn:
            gid = conn.execute(
                select(task_numbers.c.generation_id).where(
                    task_numbers.c.number == number, task_numbers.c.project_id == project_id
                )
            ).scalar()
        if gid is None:
            raise NotFound("task", str(number))
        return str(gid)

    # -- retry -------------------------------------------------------------------------------------

    def retry(
        self, project_id: str, gid: str, *, extra_attempts: int, caps: QueueCaps = QueueCaps()
    ) -> Generation:
        """Failed or canceled -> queued again: the same generation (same id, spec and seed, so the same
        picture), error and progress cleared. `attempts` keeps counting; `max_attempts` grows by
        `extra_attempts`, so the new run has a full rescue budget. Budgets and queue caps are checked
        again, like a create (a failed or canceled job was not charged); the job joins its project's
        turns in a new round, and its deadline, if it had one, is dropped. 409 in any other state."""
        from easel.domain.errors import Conflict
        from easel.store.tables import api_keys

        now = utcnow()
        retryable = (Status.FAILED.value, Status.CANCELED.value)
        with self.engine.begin() as conn:
            gen = self._load(conn, project_id, gid, include_deleted=False)
            if gen.status.value not in retryable:
                raise Conflict(
                    f"Only a failed or canceled generation can be retried; this one is {gen.status.value}",
                    "not_retryable",
                )
            key = conn.execute(
                select(api_keys.c.id, api_keys.c.max_queued)
                .join(generation_keys, generation_keys.c.key_id == api_keys.c.id)
                .where(generation_keys.c.generation_id == gid)
            ).first()
            limits = read_limits(conn, project_id, key.id if key is not None else None, gen.spec.priority)
            if key is not None and key.max_queued is not None:
                caps = QueueCaps(per_key=key.max_queued, per_project=caps.per_project)
            spec = gen.spec.model_copy(update={"deadline": None, "cancel_after": None})
            res = conn.execute(
                update(generations)
                .where(
                    generations.c.id == gid,
                    generations.c.status.in_(retryable),
                    generations.c.deleted_at.is_(None),
                )
                .values(
                    status=Status.QUEUED.value,
                    fair_tag=limits.round,
                    deadline_at=None,
                    spec=spec.model_dump(mode="json"),
                    max_attempts=generations.c.attempts + extra_attempts,
                    progress_step=0,
                    error_code=None,
                    error_message=None,
                    started_at=None,
                    finished_at=None,
                    processing_ms=None,
                    lease_token=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            if not res.rowcount:
                raise Conflict("The generation changed while being retried; try again", "not_retryable")
            admit(conn, limits, gen.credits, caps, "its API key", live_within=self.live_within, now=now)
            notify_workers(conn)
        return self.get_generation(project_id, gid)

    # -- media library -----------------------------------------------------------------------------

    def folders(self, project_id: str) -> list[tuple[str | None, int]]:
        """(folder, image count) of a project's images, by name; None (no folder) first."""
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(images.c.folder, func.count())
                .where(images.c.project_id == project_id, images.c.deleted_at.is_(None))
                .group_by(images.c.folder)
            ).all()
        found = [(r[0], int(r[1])) for r in rows]
        return sorted(found, key=lambda f: (f[0] is not None, f[0] or ""))

    def list_images(
        self,
        project_id: str,
        *,
        folder: str | None,
        any_folder: bool,
        page: PageRequest,
        model: str | None = None,
    ) -> Page[Image]:
        """A page of the project's images (uploaded and generated), newest first: all of them when
        `any_folder`, else those in `folder` (None: those in no folder); with `model`, only those a
        generation of that (canonical) model made."""
        i = images.c
        where = [i.project_id == project_id, i.deleted_at.is_(None)]
        if not any_folder:
            where.append(i.folder.is_(None) if folder is None else i.folder == folder)
        if model is not None:
            made_by = select(generations.c.id).where(
                generations.c.project_id == project_id, generations.c.model == model
            )
            where.append(i.generation_id.in_(made_by))
        with reading(self.engine) as conn:
            found = pages.read(conn, images, where, page, with_index=True)
        return dataclasses.replace(found, items=[image_from_row(r) for r in found.items])

    def move_image(self, project_id: str, image_id: str, folder: str | None) -> Image:
        """File an image of this project in `folder` (None: no folder); 404 for others' images."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(images)
                .where(
                    images.c.id == image_id,
                    images.c.project_id == project_id,
                    images.c.deleted_at.is_(None),
                )
                .values(folder=folder)
            )
            if not res.rowcount:
                raise NotFound("image", image_id)
        return self.get_image(project_id, image_id)

    def unfile_folder(self, project_id: str, folder: str) -> int:
        """Delete a folder: its images (this project's) are moved to no folder; how many there were."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(images)
                .where(
                    images.c.project_id == project_id,
                    images.c.folder == folder,
                    images.c.deleted_at.is_(None),
                )
                .values(folder=None)
            )
        return int(res.rowcount or 0)

    def delete_image(self, project_id: str, image_id: str) -> Image:
        """Mark an image of this project deleted; returns it (its bytes are the caller's to remove)."""
        img = self.get_image(project_id, image_id)
        with self.engine.begin() as conn:
            res = conn.execute(
                update(images)
                .where(images.c.id == image_id, images.c.deleted_at.is_(None))
                .values(deleted_at=utcnow())
            )
            if not res.rowcount:
                raise NotFound("image", image_id)
        return img

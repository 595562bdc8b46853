"""The extract engine: run_extract streams a connector's pages into the store, page-checked and resumable."""
from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from portal import alerts, audit, deletions, lifecycle, permissions, staff_access, store
from portal.connectors import (
    CHANGES_RESTARTED,
    RECORD_TYPES,
    AuthorisationLost,
    CategoryOutcome,
    Checkpoint,
    ConnectorError,
    SyncState,
)
from portal.extensions import db
from portal.extract import plan
from portal.jobs import claims, get_executor
from portal.jobs.limits import request_gate
from portal.jobs.runner import Heartbeat, beating
from portal.models import EXTRACTABLE_STATES, Connection, ConnectionState, ErrorKind, JobRun, RunStatus, User
from portal.models.base import utcnow
from portal.plugins.manager import get_plugins
from portal.retention.calendar import london_date

log = logging.getLogger(__name__)

__all__ = ["RunStopped", "approve_held_run", "held_runs", "job_id_for", "reject_held_run", "run_extract"]

# Plain-English messages for staff (no personal data, R65).
MESSAGES = {
    "not_authorised": "The connection is not approved (or is paused), so nothing was extracted.",
    "nothing_authorised": "No product the school has authorised needs data from its MIS, so nothing was extracted.",
    "connection_revoked": "Stopped because the connection was revoked or paused during the run.",
    "mass_removal_hold": (
        "The provider stopped returning {removed} of {live} pupils. Nothing was removed: "
        "support staff must confirm the removals before they are applied."
    ),
    "mass_removal_rejected": "Support staff rejected the removals; the next full extract will propose them again.",
    "internal_error": "The extract stopped because of a fault in the portal; support staff have been told.",
}
KIND_CATEGORY = {kind: cls.category for kind, cls in RECORD_TYPES.items()}
# Records that are a subject of their own (an erased one must not come back, R50); rows about a
# pupil follow the pupil, so only these are checked against the suppression list.
SUBJECT_KINDS = frozenset({"pupil", "staff"})
_RUNS = JobRun.__table__
Progress = Callable[[dict[str, Any]], None]


class RunStopped(Exception):
    """The connection was revoked or paused, or the run cancelled, while the run was going (R4)."""


def job_id_for(connection_id: int) -> str:
    """Return the stable job id of a connection's extract runs."""
    return f"extract:{connection_id}"


def _lease() -> timedelta:
    return timedelta(seconds=current_app.config.get("JOB_LEASE_SECONDS", 300))


# ---------------------------------------------------------------- claiming


class RunTakenOver(Exception):
    """Another process took this run over (it found this one dead): stop without writing anything."""


def _claim(connection: Connection, run_id: int | None) -> tuple[JobRun, JobRun | None]:
    """Return (the run to work in, a given run folded into it) through portal.jobs.claims.

    A run whose process died is resumed from its last checkpoint, or closed as superseded when a
    newer completed run did its work; a live run of the same connection refuses the claim.
    """
    if run_id is not None:
        given = db.session.get(JobRun, run_id)
        if given is None or given.connection_id != connection.id:
            raise plan.ExtractRefused("unknown_run", f"There is no extract run {run_id} for this connection.")
    try:
        return claims.claim_extract(connection.id, owner=claims.owner_id(), run_id=run_id)
    except claims.RunBusy as busy:
        raise plan.ExtractRefused(
            "already_running", f"Run {busy.run_id} of this connection is still running; this one was not started."
        ) from None


# ---------------------------------------------------------------- the run


class _Attempt:
    """One attempt at one run: holds the writer, the counts and the page bookkeeping."""

    def __init__(self, run: JobRun, connection: Connection, progress: Progress | None) -> None:
        self.run = run
        self.connection = connection
        # Ids and categories kept as plain values: the writer thread must not touch the ORM objects
        # of the engine's session (an expired attribute would be loaded through it).
        self.run_id = run.id
        self.connection_id = connection.id
        self.categories: list[str] = list(run.params.get("categories", []))
        self.progress = progress
        self.batch_size = int(current_app.config.get("EXTRACT_BATCH_SIZE", 5000))
        stats = dict(run.stats or {})
        self.base = {c: Counter(v) for c, v in stats.get("categories", {}).items()}
        self.base_skipped = Counter(stats.get("skipped", {}))
        self.pages = stats.get("pages", 0)
        self.base_requests = stats.get("requests", 0)
        self.base_retries = stats.get("retries", 0)
        self.completed: list[str] = list(stats.get("completed", []))
        self.checkpoint: dict | None = stats.get("checkpoint")
        self.window = stats.get("session_window") or [None, None]
        self.since: dict[str, str | None] = stats.get("since", {})
        self.high_water: dict[str, str] = stats.get("high_water", {})
        # Per category: our clock when the run first asked for it, and the watermark it earned once read
        # to the end (plan.read_to); a resumed run keeps the first attempt's, which are earlier.
        self.asked_at: dict[str, str] = dict(stats.get("asked_at") or {})
        self.read_to: dict[str, str] = dict(stats.get("read_to") or {})
        # Connector positions (SyncState) this run reached; stored for the connection when it succeeds.
        self.sync_state: dict[str, str | None] = dict(stats.get("sync_state") or {})
        # What the provider answered instead of data, per category (CategoryOutcome as dicts).
        self.outcomes: list[dict[str, Any]] = list(stats.get("outcomes", []))
        self.started = time.monotonic()
        self.seconds_before = stats.get("seconds", 0.0)
        self.pending = 0
        self.historic_leavers = 0
        self.connector = None
        self.writer: store.Writer | None = None
        self.committer: _Committer | None = None
        self._page_check = None
        # Between commits the cheap check runs at a page once this long has passed since the last check
        # (0: at every page). Commits always check, locked (R4); see _Attempt.page_done.
        self.check_every = float(current_app.config.get("EXTRACT_PAGE_CHECK_SECONDS", 0.25))
        self.checked_at = time.monotonic()
        self.owner = getattr(run, "claimed_as", None) or run.claimed_by

    # -- stats

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for category in self.categories:
            total = Counter({k: 0 for k in store.COUNT_KEYS})
            total.update(self.base.get(category, {}))
            if self.writer:
                total.update(self.writer.counts.get(category, {}))
            out[category] = dict(total)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Return the stats the engine thread keeps, as they are now (copied: the writer thread commits them later)."""
        connector_stats = self.connector.stats
        window = list(self.window)
        if self.writer:
            for day in self.writer.session_window:
                if day is not None:
                    iso = day.isoformat()
                    window = [min(window[0] or iso, iso), max(window[1] or iso, iso)]
        high_water = dict(self.high_water)
        if self.writer:
            for category, at in self.writer.high_water.items():
                iso = at.astimezone(timezone.utc).isoformat()
                high_water[category] = max(high_water.get(category, iso), iso)
        return {
            "high_water": high_water,
            "asked_at": dict(self.asked_at),
            "read_to": dict(self.read_to),
            "pages": self.pages,
            "requests": self.base_requests + connector_stats.get("requests", 0),
            "retries": self.base_retries + connector_stats.get("retries", 0),
            "completed": list(self.completed),
            "checkpoint": self.checkpoint,
            "session_window": window,
            "since": self.since,
            "sync_state": dict(self.sync_state),
            "outcomes": list(self.outcomes),
            "seconds": round(self.seconds_before + time.monotonic() - self.started, 3),
            "historic_leavers": self.historic_leavers,
        }

    def stats(self, snapshot: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Return the run's stats: the engine's (``snapshot``, else now) with the writer's counts."""
        snap = dict(snapshot or self.snapshot())
        skipped = Counter(self.base_skipped)
        if self.writer:
            skipped.update(self.writer.skipped)
        historic = snap.pop("historic_leavers")
        if historic:
            skipped["historic_leaver"] += historic
        stats = {"categories": self.counts(), "high_water": snap.pop("high_water"), "skipped": dict(skipped), **snap}
        stats.update(extra)
        return stats

    def settle_read_to(self) -> None:
        """Turn each category's asked time into the provider time it was read to, with the best clock offset measured."""
        offset = self.connector.clock_offset
        for category, asked in self.asked_at.items():
            if category in self.completed and category not in self.read_to:
                self.read_to[category] = plan.read_to(datetime.fromisoformat(asked), offset).isoformat()

    def stats_committed(self) -> dict[str, Any]:
        """Return the stats as last committed (after a rollback, the run row holds them)."""
        self.run = db.session.get(JobRun, self.run.id)
        db.session.refresh(self.run)
        stats = dict(self.run.stats or {})
        stats["seconds"] = round(self.seconds_before + time.monotonic() - self.started, 3)
        return stats

    # -- page checks

    def check_still_allowed(self, *, lock: bool = True) -> None:
        """Raise RunStopped unless the connection is still approved, not paused, and the run not cancelled (R4).

        Before a commit it locks both rows until the commit, so a revocation landing now waits
        for this page, and one already committed is seen here: no page is committed after it.
        """
        self.checked_at = time.monotonic()
        if not lock:
            # Between commits: one round trip for both rows, a Core statement built once (the ORM's
            # per-statement work was a tenth of a large extract's time).
            if self._page_check is None:
                conn_t, run_t = Connection.__table__, JobRun.__table__
                self._page_check = (
                    select(conn_t.c.state, conn_t.c.paused, run_t.c.status, run_t.c.claimed_by)
                    .join(run_t, run_t.c.id == self.run_id)
                    .where(conn_t.c.id == self.connection_id)
                )
            row = db.session.connection().execute(self._page_check).one()
            self._check_owner(row.status, row.claimed_by)
            if row.state not in EXTRACTABLE_STATES or row.paused or row.status != RunStatus.running:
                raise RunStopped()
            return
        conn_q = select(Connection.state, Connection.paused).where(Connection.id == self.connection_id)
        run_q = select(JobRun.status, JobRun.claimed_by).where(JobRun.id == self.run_id)
        conn_q, run_q = conn_q.with_for_update(read=True), run_q.with_for_update()
        state = db.session.execute(conn_q).one()
        run_row = db.session.execute(run_q).one()
        self._check_owner(run_row.status, run_row.claimed_by)
        if state.state not in EXTRACTABLE_STATES or state.paused or run_row.status != RunStatus.running:
            raise RunStopped()

    def _check_owner(self, status: RunStatus, claimed_by: str | None) -> None:
        # A process found dead (e.g. stalled past its heartbeat) that wakes up must not write over its successor.
        if status == RunStatus.running and claimed_by != self.owner:
            raise RunTakenOver()

    def page_done(self, checkpoint: Checkpoint) -> None:
        """At a page boundary: commit once a batch has built up, else hand over what is read and check now and then.

        Whether a page may be committed is decided by the locked check before every commit (R4: a
        revocation committed before it stops the run, and one landing after it waits for the
        commit). The unlocked check between commits only stops the reading early; made at every page
        it cost a PostgreSQL round trip a page (a fifth of a large extract's time on a busy host), so
        it runs once ``check_every`` seconds have passed: a revoked run reads at most that long more,
        and commits nothing of it.
        """
        if self.pending >= self.batch_size:
            self.commit_page(checkpoint)
            return
        self.hand_over()
        if time.monotonic() - self.checked_at >= self.check_every:
            self.check_still_allowed(lock=False)

    def hand_over(self) -> None:
        """At a page boundary without a commit: let the writer thread write the pages read so far (uncommitted)."""
        if self.committer is None:
            return
        self.committer.raise_error()  # a page the writer thread failed to write stops the reading too
        if self.writer.buffered:
            self.committer.submit(self.writer.take_batch(), None)

    def commit_page(self, checkpoint: Checkpoint | None) -> None:
        """Write what is buffered, store the checkpoint with it and commit, after the page check.

        With a writer thread (PostgreSQL) the pages of the batch were written while the next ones
        were read, and the commit is handed over too: the engine reads on while the writer thread
        makes the locked check (R4) and commits. What a commit holds is decided at the hand-over
        (the pages before the checkpoint, the stats as they were), so a resumed run starts exactly
        at the last committed checkpoint, and pages read after it belong to the next commit. A
        commit refused (a revocation, a takeover) or failed stops the reading at the next page.
        Waiting here for each commit left the engine idle while PostgreSQL committed, 200 times a
        large school's full run (issue 19). The commit that ends a category (no ``checkpoint``) is
        waited for: the next category is asked for only once this one is committed as done, so a
        refused commit stops the run before it reads another category.
        """
        self.checkpoint = None if checkpoint is None else {"category": checkpoint.category, "cursor": checkpoint.cursor}
        batch = self.writer.take_batch()
        if self.committer is not None:
            self.committer.submit(batch, self.snapshot())
            if checkpoint is None:
                self.committer.drain()
        else:
            self.write_and_commit(batch, self.snapshot())
        self.pending = 0

    def write_and_commit(self, batch: store.Batch, snapshot: dict[str, Any] | None) -> None:
        """Write a batch; with a ``snapshot`` of the stats, also check the run may still write (locking
        its rows), store the stats and checkpoint, and commit everything written since the last commit.

        Runs on the thread that owns the current session: the engine's, or the writer thread's.
        """
        self.writer.write_batch(batch)
        if snapshot is None:
            return
        self.check_still_allowed()
        now = utcnow()
        # One UPDATE of the row locked just above, not a load of it (with its stats) into this session first.
        db.session.execute(
            update(_RUNS).where(_RUNS.c.id == self.run_id)
            .values(stats=self.stats(snapshot), heartbeat_at=now, lease_expires_at=now + _lease())
        )
        db.session.commit()

    def add_outcome(self, outcome: CategoryOutcome) -> None:
        """Keep one provider answer about a category (once: a resumed run may meet it again)."""
        entry = {"category": outcome.category, "code": outcome.code, "message": outcome.message,
                 "withheld": outcome.withheld, "confirmed": outcome.confirmed, "endpoint": outcome.endpoint,
                 "fields": list(outcome.fields)}
        if entry not in self.outcomes:
            self.outcomes.append(entry)
            log.info("extract run %s: %s for %s", self.run.id, outcome.code, outcome.category)
        self.tell(event="outcome", category=outcome.category, code=outcome.code)

    def owed(self) -> dict[str, int]:
        """What this incremental run found that only a full run catches up on, by stats key (plan.OWED_KEYS).

        Pupils and classes it brought back (the writer counts none on a full run), and reads whose
        provider sent everything again instead of the changes (a full run starts every read afresh).
        """
        owed = dict(self.writer.restored)
        restarted = sum(o["code"] == CHANGES_RESTARTED for o in self.outcomes)
        if restarted and self.run.params["mode"] != "full":
            owed[CHANGES_RESTARTED] = restarted
        return owed

    def withheld(self) -> set[str]:
        """Categories not read in full: never reconciled, so nothing is removed for not being seen."""
        return {o["category"] for o in self.outcomes if o.get("withheld")}

    def tell(self, **event: Any) -> None:
        if self.progress:
            self.progress(event)


class _Committer:
    """Writes the engine's pages on a thread of its own, in order, on a session of its own, and commits them.

    The engine hands over every page as it finishes it; the pages are written (one upsert a kind,
    uncommitted) while the engine reads and maps the next ones, so PostgreSQL's time overlaps ours.
    Pages that arrived while a write ran are written together in the next one (one upsert a kind
    for all of them): a busy database gets fewer, larger statements, an idle one each page at once.
    At a commit point the engine hands over the rest with the stats and reads on: the locked
    revocation check, the checkpoint and the commit happen here exactly as on the engine thread,
    in order, so each commit holds the pages before its checkpoint and nothing after it. The
    database is kept busy while the engine reads (it is the slower of the two on a large run). The
    first error stops the writing (the open transaction is rolled back); the engine raises it at
    its next hand-over. The queue's bound keeps the engine at most a few pages ahead.
    """

    def __init__(self, app: Any, state: _Attempt) -> None:
        self.app = app
        self.state = state
        # A few pages may wait while a write runs: memory stays at a handful of pages.
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.error: BaseException | None = None
        self.abandon = False
        self.thread = threading.Thread(target=self._work, name=f"extract-writer-{state.run_id}", daemon=True)
        self.thread.start()

    def submit(self, batch: store.Batch, snapshot: dict[str, Any] | None) -> None:
        """Hand over a batch to write; with a stats ``snapshot`` it is also committed (see _Attempt.write_and_commit)."""
        self.raise_error()
        self.queue.put((batch, snapshot))

    def drain(self) -> None:
        """Wait until every batch handed over is written (and committed if asked); raise the writer's error."""
        self.settle()
        self.raise_error()

    def settle(self) -> None:
        """Wait until every batch handed over is dealt with (written, committed, or passed over after an error)."""
        self.queue.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self, *, abandon: bool = False) -> BaseException | None:
        """Stop the thread once the batch in hand is done and return its error (None when all went well).

        ``abandon``: the engine stopped with an error: batches still waiting are not written, and
        what was written since the last commit is rolled back.
        """
        self.abandon = abandon
        self.queue.put(None)
        self.thread.join()
        return self.error

    def _take(self) -> list[tuple[store.Batch, dict[str, Any] | None] | None]:
        """Wait for the next hand-over, then take those queued behind it, up to the first that commits (or the end)."""
        items = [self.queue.get()]
        while items[-1] is not None and items[-1][1] is None:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _work(self) -> None:
        with self.app.app_context():
            try:
                while True:
                    items = self._take()
                    handed = [item for item in items if item is not None]
                    try:
                        if handed and self.error is None and not self.abandon:
                            self.state.write_and_commit(store.Batch.merge([b for b, _ in handed]), handed[-1][1])
                    except BaseException as exc:  # noqa: BLE001 - handed to the engine thread, which decides
                        self.error = exc
                        db.session.rollback()
                    finally:
                        for _ in items:
                            self.queue.task_done()
                    if items[-1] is None:
                        return
            finally:
                db.session.rollback()  # anything written but not committed (the engine stopped) is dropped
                db.session.remove()


def _commit_keeping() -> None:
    """Commit without expiring what the session holds: the run as just written and its connection as
    read are what the run goes on with (not two more reads of the rows). Everything that decides
    whether the run may go on is read afresh anyway (the page checks, the locked check).
    """
    session = db.session()
    expire = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire


def _uses_writer_thread() -> bool:
    """PostgreSQL only: SQLite has one writer at a time, so a second connection would only wait for locks."""
    setting = current_app.config.get("EXTRACT_WRITER_THREAD", True)
    return bool(setting) and db.session.get_bind().dialect.name == "postgresql"


def run_extract(
    connection_id: int,
    mode: str = "auto",
    categories: list[str] | None = None,
    run_id: int | None = None,
    *,
    progress: Progress | None = None,
) -> JobRun:
    """Extract one connection's granted categories into the store and return the finished run row.

    ``mode`` is "full", "incremental" or "auto" (R21 decides; a pending hold makes it incremental).
    Claims go through portal.jobs.claims: with ``run_id`` the engine works in that already-claimed
    row (resuming from its last checkpoint), unless a dead run of the connection is resumed instead;
    without it, it resumes a dead run or claims a new one. A live run elsewhere refuses the claim.
    """
    connection = db.session.get(Connection, connection_id)
    if connection is None:
        raise plan.ExtractRefused("unknown_connection", f"There is no connection {connection_id}.")
    try:
        connector_cls = get_plugins().connector(connection.connector)
    except KeyError:
        raise plan.ExtractRefused("connector_not_enabled", "This connector is not enabled on this portal.") from None
    try:
        run, folded = _claim(connection, run_id)
    except plan.ExtractRefused as exc:
        if run_id is None:
            raise
        # A firing (scheduler, worker) while another process runs this connection: recorded, not run.
        given = db.session.get(JobRun, run_id)
        if given.status in (RunStatus.running, RunStatus.queued):
            return _finish(given, RunStatus.cancelled, None, exc.code, message=exc.message)
        return given
    if folded is not None:
        log.info("extract run %s folded into interrupted run %s, resumed", folded.id, run.id)
    if run.status in (RunStatus.queued,):
        run.status = RunStatus.running
    resuming = bool((run.stats or {}).get("checkpoint") or (run.stats or {}).get("completed"))
    if not connection.can_extract:
        return _finish(run, RunStatus.cancelled, ErrorKind.school_action, "not_authorised")
    now = utcnow()
    if not resuming:
        try:
            wanted = plan.categories_for(connection, connector_cls, categories)
        except plan.ExtractRefused as exc:
            run.error_message = exc.message
            return _finish(run, RunStatus.failed, ErrorKind.school_action, exc.code, message=exc.message)
        if not wanted:
            return _finish(run, RunStatus.failed, ErrorKind.school_action, "nothing_authorised")
        if categories is None:
            # R18: a run that names no category takes only those due today (weekly ones on their day).
            wanted = plan.due_categories(connection, wanted, now)
        chosen, reason, since = plan.choose_mode(connection, mode, wanted, now, hold=plan.pending_hold(connection))
        run.params = {
            **{k: v for k, v in (run.params or {}).items() if k not in ("mode", "categories")},
            "mode_requested": mode, "mode": chosen, "mode_reason": reason, "categories": wanted,
            "started_at": now.isoformat(),
        }
        run.started_at = run.started_at or now
        run.stats = {"since": {c: (s.isoformat() if s else None) for c, s in since.items()}}
        run.status = RunStatus.running
        _commit_keeping()
    elif folded is not None or run.attempts > 1:
        audit.record(
            "extract.resumed", organisation_id=connection.school_id, target=run,
            details={"connection_id": connection.id, "attempt": run.attempts,
                     "checkpoint_category": ((run.stats or {}).get("checkpoint") or {}).get("category")},
            actor="system",
        )
        db.session.commit()
    state = _Attempt(run, connection, progress)
    log.info("extract run %s for connection %s: %s %s", run.id, connection.id, run.params["mode"], run.params["categories"])

    # Started unless the runner (execute) already extends this run's lease for this owner.
    heart = None if beating(run.id, state.owner) else Heartbeat(current_app._get_current_object(), run.id, state.owner)
    if heart is not None:
        heart.start()
    try:
        return _work(state)
    except RunTakenOver:
        db.session.rollback()
        log.warning("extract run %s was taken over by another process; this one stopped", run.id)
        return db.session.get(JobRun, run.id)
    except RunStopped:
        db.session.rollback()
        return _stopped(state)
    except ConnectorError as exc:
        db.session.rollback()
        return _failed(state, exc)
    except Exception as exc:  # noqa: BLE001 - any fault must end the run with a typed error
        db.session.rollback()
        # The exception text may carry values (e.g. SQL parameters): log only its type and frames.
        log.error(
            "extract run %s failed with %s\n%s", run.id, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__))
        )
        stats = state.stats_committed()
        store.discard_removals(connection, run.id)
        return _finish(state.run, RunStatus.failed, ErrorKind.internal, "internal_error", stats=stats)
    finally:
        if heart is not None:
            heart.stop()


def _work(state: _Attempt) -> JobRun:
    run, connection = state.run, state.connection
    full = run.params["mode"] == "full"
    state.connector = lifecycle.connector_instance(connection)
    # The provider's requests-per-second limit, shared by every run (and worker) using this connector.

    state.connector.request_gate = request_gate(connection.connector)
    # A full run starts every changeset again; other runs carry on from where the last successful one got to.
    state.connector.sync_state = {} if full else plan.sync_state(connection)
    state.connector.run_categories = tuple(state.categories)
    state.connector.run_since = {c: datetime.fromisoformat(s) if s else None for c, s in state.since.items()}
    # Full runs only: an incremental run's few records are written faster on this thread than a
    # second thread, session and hand-over per page cost (a fifth of a national worker's CPU went
    # to them, issue 19); a large one still commits whenever a batch fills.
    threaded = full and _uses_writer_thread()
    # With the writer thread, batches are taken at page boundaries only (never written from the engine thread).
    state.writer = store.Writer(connection, run.id, full=full, batch_size=state.batch_size, flush_when_full=not threaded)
    # R23: the first import of a school brings no leaver whose deletion deadline has already passed.
    first_import = full and plan.last_success(connection) is None
    today = london_date(utcnow())
    started_asking = utcnow().isoformat()
    if threaded:
        state.committer = _Committer(current_app._get_current_object(), state)
        try:
            _read(state, connection, full, first_import, today, started_asking)
            state.committer.drain()
        except BaseException:
            # Commits handed over before the error still land, each after its own locked check (R4):
            # they hold pages read before it, as they would had the engine waited for them. What was
            # handed over after the last of them is rolled back. All of it is done before the run is
            # marked ended, so a commit never lands after that.
            state.committer.settle()
            failed = state.committer.close(abandon=True)
            state.committer = None
            if failed is not None:
                raise failed from None
            raise
        state.committer.close()
        state.committer = None
    else:
        _read(state, connection, full, first_import, today, started_asking)
    return _complete(state)


def _read(state: _Attempt, connection: Connection, full: bool, first_import: bool, today: date, started_asking: str) -> None:
    """Read every category from the connector into the writer, committing a batch at page boundaries."""
    remaining = [c for c in state.categories if c not in state.completed]
    for category in remaining:
        since_iso = state.since.get(category)
        since = datetime.fromisoformat(since_iso) if since_iso else None
        resume = None
        if state.checkpoint and state.checkpoint.get("category") == category:
            resume = Checkpoint(category, state.checkpoint.get("cursor"))
        state.tell(event="category", category=category)
        # One time for every category this attempt reads (earlier is safe), so they share one watermark.
        state.asked_at.setdefault(category, started_asking)
        for item in state.connector.extract(connection, [category], since, resume):
            if isinstance(item, Checkpoint):
                state.pages += 1
                state.page_done(item)
                state.tell(event="page", category=category, pages=state.pages, records=state.writer.written)
                continue
            if isinstance(item, SyncState):
                # Committed with the pages before it (in the run's stats), kept for the connection on success.
                state.sync_state[item.key] = item.value
                continue
            if isinstance(item, CategoryOutcome):
                state.add_outcome(item)
                continue
            kind = item.kind
            if kind in SUBJECT_KINDS and plan.is_suppressed(connection.school_id, kind, item.external_id):
                continue
            if first_import and kind in ("pupil", "staff") and plan.is_historic_leaver(item, today):
                state.historic_leavers += 1
                continue
            state.writer.add(item)
            state.pending += 1
        state.completed.append(category)
        # A full run commits at the end of every category. An incremental run's categories (a quiet day
        # brings a few records each) share one commit: the next one a full batch makes, with each
        # category marked done in it, or else the run's end (_complete writes the rest and commits it
        # with the watermarks and the finished run, after the locked check); a run stopped before it
        # asks those categories again from the same time. Its pages were checked as they came.
        if full or (state.committer is not None and state.pending and category == remaining[-1]):
            state.commit_page(None)
        else:
            state.hand_over()


def _complete(state: _Attempt) -> JobRun:
    """Reconcile (complete full pulls only), apply the hold rule, apply removals and finish."""
    run, connection = state.run, state.connection
    state.writer.finish()
    state.settle_read_to()
    full = run.params["mode"] == "full"
    categories = run.params["categories"]
    # A category the provider withheld (or partly withheld) is not reconciled: a permission it stopped
    # granting becomes a tracked withdrawal with its own deletion order, never an overwrite.
    permissions.apply_run_outcomes(connection, run.id, categories, state.outcomes)
    hold = plan.pending_hold(connection)
    if hold is not None and hold.id != run.id:
        return _complete_under_hold(state, hold)
    if full:
        withheld = state.withheld()
        kinds = [k for k, c in KIND_CATEGORY.items() if c in categories and c not in withheld]
        window = state.stats()["session_window"]
        session_window = (date.fromisoformat(window[0]), date.fromisoformat(window[1])) if window[0] else None
        # Rows any run wrote or saw since this one started (e.g. while it lay dead) are not proposed for removal.
        store.stage_reconciliation(
            connection, run.id, kinds, session_window=session_window, since=_started(run),
        )
    removing = store.pending_pupil_removals(connection, run.id)
    # No pupil removed (nearly every run): the share is 0 whatever the count, so it is not counted.
    live = store.live_pupil_count(connection) if removing else 0
    threshold = float(current_app.config.get("MASS_REMOVAL_THRESHOLD", 0.10))
    state.check_still_allowed()
    if live and removing / live > threshold:
        message = MESSAGES["mass_removal_hold"].format(removed=removing, live=live)
        audit.record(
            "extract.held", organisation_id=connection.school_id, target=run,
            details={"connection_id": connection.id, "pupils_removed": removing, "pupils_live": live}, actor="system",
        )
        return _finish(
            run, RunStatus.held, None, "mass_removal_hold", message=message,
            stats=state.stats(hold={"pupils_removed": removing, "pupils_live": live}),
        )
    tombstoned = store.apply_removals(connection, run.id, publish=deletions.publish_provider_deletion)
    # R59: staff the MIS no longer shows as employed (or a full extract no longer returns) lose access in this run.
    suspended = staff_access.suspend_leavers(connection.school_id, run.id) if "staff_basic" in categories else 0
    stats = state.stats()
    # Committed with the run: the next run is a full one (plan.full_run_owed) should the queue below not happen.
    owed = state.owed()
    stats.update(owed)
    for category, n in tombstoned.items():
        stats["categories"].setdefault(category, {k: 0 for k in store.COUNT_KEYS})["tombstoned"] += n
    plan.save_watermarks(connection, _watermarks(run, stats), run.id, fallback=datetime.fromisoformat(run.params["started_at"]))
    plan.save_sync_state(connection, stats.get("sync_state") or {}, run.id)
    message = " ".join(dict.fromkeys(o["message"] for o in state.outcomes)) or None
    # As the run read it (no further read): a connection that was not failing needs no recovery. Only
    # a run of this connection makes it failing, and its runs run one at a time.
    failing = connection.state == ConnectionState.failing
    # Kept as written: the runner and the plugins read the ended run and its connection, not two more reads.
    finished = _finish(run, RunStatus.succeeded, None, None, stats=stats, message=message, keep=True)
    if failing:
        lifecycle.mark_healthy(connection)
    _tell_staff_left(connection, suspended)
    if owed:
        try:
            _resync(connection, finished, owed)
        except Exception as exc:  # the run itself succeeded; the next run is a full one (plan.full_run_owed)
            db.session.rollback()
            log.error("queueing a full run owed by connection %s's run failed with %s", connection.id, type(exc).__name__)
    return finished


def _resync(connection: Connection, run: JobRun, owed: dict[str, int]) -> None:
    """Queue a full run now for what this incremental run found only a full run catches up on (plan.OWED_KEYS).

    A restored pupil (Wonde's restored_at) comes back with their older records (registers, results)
    as they were, and a restored class with its lessons, stamped before the watermark, so no
    incremental run asks for them again: their rows stay removed until a full run. A changeset the
    provider started again (Groupcall forgot the saved position) sent every row but none of the
    deletions since the last run: rows deleted meanwhile stay live until a full run reconciles them.
    The run that found it queues that full run at once (the executor starts it, as it does
    support's); if one is already claimed, that run does it. ``owed``: counts by stats key.
    """
    reason = plan.owed_reason(owed)
    queued = get_executor().queue_extract(connection.id, owner=claims.owner_id(), mode="full", reason=reason)
    audit.record("extract.resync_queued", organisation_id=connection.school_id, target=run, actor="system",
                 details={"connection_id": connection.id, **owed,
                          "queued_run_id": queued.id if queued is not None else None})
    db.session.commit()


def _tell_staff_left(connection: Connection, suspended: int) -> None:
    """After the commit that suspended them (R59): tell the school admins how many staff lost access."""
    if not suspended:
        return
    try:
        alerts.staff_access_suspended(connection.school, suspended)
    except Exception as exc:  # an email failure never undoes the suspension
        log.error("staff-left alert for school %s failed with %s", connection.school_id, type(exc).__name__)


def _started(run: JobRun) -> datetime:
    """When the run first started (a resumed run keeps its first start)."""
    started = (run.params or {}).get("started_at")
    return datetime.fromisoformat(started) if started else (run.started_at or run.created_at)


def _complete_under_hold(state: _Attempt, hold: JobRun) -> JobRun:
    """Finish a run while another is held for review: upserts only, no reconciliation and no second hold.

    Removals the provider reported during this run wait with the held run and are decided with it.
    """
    run, connection = state.run, state.connection
    state.check_still_allowed()
    carried = store.carry_removals(connection, run.id, hold.id)
    stats = state.stats(hold_pending={"run_id": hold.id, "removals_carried": carried})
    # No full run is queued while a run is held (every run is incremental then): the first run after the
    # decision is a full one (plan.full_run_owed) if this one found one owed.
    stats.update(state.owed())
    plan.save_watermarks(connection, _watermarks(run, stats), run.id, fallback=_started(run))
    # R59 in this run too: a staff record that now says they left is a fact, not a removal waiting
    # for review (staff gone from a full extract wait with the held run's removals).
    suspended = staff_access.suspend_leavers(connection.school_id, run.id) if "staff_basic" in run.params["categories"] else 0
    finished = _finish(run, RunStatus.succeeded, None, None, stats=stats)
    lifecycle.mark_healthy(connection)
    _tell_staff_left(connection, suspended)
    return finished


def held_runs(connection_id: int | None = None) -> list[JobRun]:
    """Return the extract runs held for review (newest first), of one connection or all."""
    query = select(JobRun).where(JobRun.kind == "extract", JobRun.status == RunStatus.held)
    if connection_id is not None:
        query = query.where(JobRun.connection_id == connection_id)
    return list(db.session.scalars(query.order_by(JobRun.id.desc())))


def _watermarks(run: JobRun, stats: dict[str, Any]) -> dict[str, datetime | None]:
    """Per category, the provider time the run read it to (plan.read_to); None where unknown.

    By the provider's clock, not ours: the updated-after filter is compared with its clock. Not the
    newest ``updated_at`` seen, which a drop stamped with one time would pin (issue 19); stats of a
    run from before ``read_to`` existed fall back to it. A category the provider withheld (in part)
    keeps its watermark: the next run asks again for what this one could not read. Not for a
    secondary read skipped (a leavers list the server lacks or the school does not grant): the
    category's own lists were read in full, and a category that never had a watermark would make
    every run of the connection a full one for as long as the secondary read fails; the periodic full
    run reads it again. Such a category is still not reconciled (_Attempt.withheld).
    """
    high = stats.get("high_water", {})
    read = stats.get("read_to") or {}
    withheld = {o["category"] for o in stats.get("outcomes", ())
                if o.get("withheld") and o.get("code") != "optional_read_skipped"}
    marks = {}
    for c in run.params["categories"]:
        if c in withheld:
            continue
        at = read.get(c) or high.get(c)
        marks[c] = datetime.fromisoformat(at) if at else None
    return marks


def _stopped(state: _Attempt) -> JobRun:
    run = db.session.get(JobRun, state.run.id)
    db.session.refresh(run)
    if run.status == RunStatus.running:
        return _finish(run, RunStatus.cancelled, ErrorKind.school_action, "connection_revoked", stats=state.stats_committed())
    # Cancelled by the lifecycle (revoke, pause): it already wrote the reason; keep it.
    run.stats = state.stats_committed()
    db.session.commit()
    _notify(run)
    return run


def _failed(state: _Attempt, exc: ConnectorError) -> JobRun:
    run = db.session.get(JobRun, state.run.id)
    stats = state.stats_committed()
    connector_stats = state.connector.stats
    stats["requests"] = state.base_requests + connector_stats.get("requests", 0)
    stats["retries"] = state.base_retries + connector_stats.get("retries", 0)
    stats["failed_at"] = {"endpoint": exc.endpoint, "page": exc.page}
    # Removals found so far come from an incomplete run: they are never applied (R20).
    store.discard_removals(state.connection, run.id)
    log.warning("extract run %s failed: %s (%s)", run.id, exc.code, exc.kind)
    finished = _finish(run, RunStatus.failed, ErrorKind(exc.kind), exc.code, message=exc.message, stats=stats)
    if isinstance(exc, AuthorisationLost):
        lifecycle.mark_revoked_by_provider(state.connection, exc.code)
    elif exc.kind == ErrorKind.provider_problem.value:
        lifecycle.mark_failing(state.connection, error_code=exc.code, run=finished)
    return finished


def _finish(
    run: JobRun,
    status: RunStatus,
    kind: ErrorKind | None,
    code: str | None,
    *,
    message: str | None = None,
    stats: dict[str, Any] | None = None,
    keep: bool = False,
) -> JobRun:
    """Record how the run ended and commit; ``keep``: the session keeps its objects as written (see _commit_keeping)."""
    now = utcnow()
    run.status = status
    run.finished_at = now
    run.started_at = run.started_at or now
    run.lease_expires_at = None
    run.error_kind = kind
    run.error_code = code
    run.error_message = message or (MESSAGES.get(code) if code else None)
    if stats is not None:
        stats = dict(stats)
        stats["checkpoint"] = None if status == RunStatus.succeeded else stats.get("checkpoint")
        run.stats = stats
    if keep:
        _commit_keeping()
    else:
        db.session.commit()
    _notify(run)
    return run


def _notify(run: JobRun) -> None:
    get_plugins().extract_finished(run)


# ---------------------------------------------------------------- the mass-removal hold


def _held(run_id: int, user: User | None) -> tuple[JobRun, Connection]:
    # user None: an operator at the server's shell (`flask portal holds`), audited as "cli".
    if user is not None and not getattr(user, "is_support", False):
        raise plan.ExtractRefused("not_support", "Only support staff can review a held extract run.")
    run = db.session.get(JobRun, run_id)
    if run is None or run.kind != "extract" or run.status != RunStatus.held:
        raise plan.ExtractRefused("not_held", f"Extract run {run_id} is not held for review.")
    return run, db.session.get(Connection, run.connection_id)


def _actor(user: User | None) -> dict[str, Any]:
    return {"actor": f"user:{user.id}", "actor_user_id": user.id} if user is not None else {"actor": "cli"}


def approve_held_run(run_id: int, user: User | None) -> JobRun:
    """Support staff confirm a held run's removals: apply them and finish the run as succeeded."""
    run, connection = _held(run_id, user)
    tombstoned = store.apply_removals(connection, run.id, publish=deletions.publish_provider_deletion, **_actor(user))
    # R59: staff whose removal waited with the run (gone from its full extract) lose access with it.
    suspended = staff_access.suspend_leavers(connection.school_id, run.id)
    stats = dict(run.stats or {})
    categories = {c: dict(v) for c, v in stats.get("categories", {}).items()}
    for category, n in tombstoned.items():
        categories.setdefault(category, {k: 0 for k in store.COUNT_KEYS})["tombstoned"] += n
    stats["categories"] = categories
    stats["hold"] = {**stats.get("hold", {}), "decision": "approved", "by_user_id": user.id if user else None}
    audit.record(
        "extract.hold_approved", organisation_id=connection.school_id, target=run,
        details={"connection_id": connection.id, "tombstoned": tombstoned}, **_actor(user),
    )
    plan.save_watermarks(connection, _watermarks(run, stats), run.id, fallback=datetime.fromisoformat(run.params["started_at"]))
    plan.save_sync_state(connection, stats.get("sync_state") or {}, run.id)
    run.error_code = run.error_message = run.error_kind = None
    run.status = RunStatus.succeeded
    run.stats = stats
    db.session.commit()
    _tell_staff_left(connection, suspended)
    return run


def reject_held_run(run_id: int, user: User | None) -> JobRun:
    """Support staff refuse a held run's removals: drop them; the run ends failed so the school sees it."""
    run, connection = _held(run_id, user)
    discarded = store.discard_removals(connection, run.id, **_actor(user))
    stats = dict(run.stats or {})
    stats["hold"] = {**stats.get("hold", {}), "decision": "rejected", "by_user_id": user.id if user else None,
                     "discarded": discarded}
    audit.record(
        "extract.hold_rejected", organisation_id=connection.school_id, target=run,
        details={"connection_id": connection.id, "discarded": discarded}, **_actor(user),
    )
    run.status = RunStatus.failed
    run.error_kind = ErrorKind.provider_problem
    run.error_code = "mass_removal_rejected"
    run.error_message = MESSAGES["mass_removal_rejected"]
    run.stats = stats
    db.session.commit()
    return run

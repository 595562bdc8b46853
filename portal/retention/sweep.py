"""The daily retention sweep: plan what is due, delete it in bounded batches, and write one proof per rule and school."""
from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from datetime import date, datetime, time

from flask import current_app
from sqlalchemy import delete, func, select, update

from portal import audit, deletions, store
from portal.jobs import claims
from portal.errors import code_location
from portal.extensions import db
from portal.models import ErrorKind, JobRun, RunStatus
from portal.models.mis import MisPupil
from portal.models.base import utcnow
from portal.models.retention import DeletionOrder, RetentionProof, RetentionWorkItem
from portal.privacy.export import erase_expired
from portal.retention.calendar import LONDON, london_date
from portal.retention.deadlines import RetentionContext
from portal.retention import anonymise, fields, ledger
from portal.retention.delete import delete_records
from portal.retention.plan import iter_due

__all__ = ["JOB_ID", "SweepStopped", "run_sweep"]

JOB_ID = "retention:sweep"
log = logging.getLogger(__name__)


class SweepStopped(Exception):
    """The run was cancelled or taken over by another process while this one was deleting."""


def run_sweep(as_of: date | None = None, run_id: int | None = None) -> JobRun | None:
    """Sweep everything due on the as-of date (default: today in London); resume the run when it was cut short.

    With ``run_id`` the sweep uses a run the scheduler already claimed; without it, it claims its own.
    Returns the finished run, or None when another process holds the claim.
    """
    run = _run_for(as_of, run_id)
    if run is None:
        return None
    as_of = date.fromisoformat(run.params["as_of"])
    batch = int(current_app.config.get("RETENTION_BATCH_SIZE", 500))
    try:
        if ledger.status()[0] == "behind":
            # A restored backup, or a batch whose ledger line was written but whose commit was lost (R35).
            ledger.replay()
        _seal_abandoned(run)
        if run.stats.get("phase") not in ("deleting", "proving"):
            _plan(run, as_of, batch)
        _delete(run, batch)
        _clear_fields(run, as_of, batch)
        _prove(run, as_of)
        _erase_expired_exports(as_of)
    except SweepStopped:
        db.session.rollback()
        _settle_ledger()
        log.warning("retention sweep %s stopped: the run was cancelled or taken over", run.id)
        return db.session.get(JobRun, run.id)
    except Exception as exc:
        db.session.rollback()
        _settle_ledger()
        # Exception text may quote values; the log gets the type and code location only (R65).
        log.error("retention sweep %s stopped with an unexpected %s at %s", run.id, type(exc).__name__, code_location(exc))
        run = db.session.get(JobRun, run.id)
        _finish(run, RunStatus.failed, error=type(exc).__name__)
        return run
    _finish(run, RunStatus.succeeded)
    return run


def _settle_ledger() -> None:
    """After a rolled-back batch whose ledger line was already written: delete its (due) records again now (R35).

    Otherwise the database stays behind the ledger and every process refuses to serve until a replay.
    """
    try:
        if ledger.status()[0] == "behind":
            ledger.replay()
    except Exception as exc:  # the sweep's own failure is what gets reported; the next sweep replays first
        db.session.rollback()
        log.error("retention sweep could not replay the deletion ledger after stopping (%s)", type(exc).__name__)


# ---------------------------------------------------------------- the run row


def _run_for(as_of: date | None, run_id: int | None) -> JobRun | None:
    """Return the running run row: the claimed one given, or a new claim under the current time."""
    if run_id is not None:
        run = db.session.get(JobRun, run_id)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        as_of = as_of or london_date(run.scheduled_for)
    else:
        as_of = as_of or london_date(utcnow())
        run = claims.claim_run(JOB_ID, utcnow(), kind="retention", owner=claims.owner_id(),
                               params={"as_of": as_of.isoformat()})
        if run is None:
            return None
    if "as_of" not in (run.params or {}):
        run.params = {**(run.params or {}), "as_of": as_of.isoformat()}
    run.stats = dict(run.stats or {})
    db.session.commit()
    return run


def _erase_expired_exports(as_of: date) -> None:
    """R34: access exports whose link has expired go, content and row (by the start of the as-of day for a later date)."""
    erase_expired(max(utcnow(), datetime.combine(as_of, time(0), tzinfo=LONDON)))
    db.session.commit()


def _finish(run: JobRun, status: RunStatus, *, error: str | None = None) -> None:
    if error is None:
        claims.finish(run, status)
        return
    # Plain English, no personal data; the work items left let the next attempt resume.
    claims.finish(run, status, error_kind=ErrorKind.internal, error_code="retention_sweep_failed",
                  error_message=f"The retention sweep stopped ({error}); running it again resumes where it stopped.")


# ---------------------------------------------------------------- 1. plan


def _plan(run: JobRun, as_of: date, batch: int) -> None:
    """Write a work item for every record due today, grouped under one proof per rule, school and connection."""
    # A plan cut short is planned again from scratch: nothing was deleted yet.
    db.session.execute(delete(RetentionWorkItem).where(RetentionWorkItem.run_id == run.id))
    db.session.execute(delete(RetentionProof).where(RetentionProof.run_id == run.id, RetentionProof.status == "in_progress"))
    ctx = RetentionContext.load(as_of)
    proofs: dict[tuple, RetentionProof] = {}
    pending: list[dict] = []
    held = 0
    for item in iter_due(ctx, as_of, include_held=True):
        if item.held and item.due.due_on > as_of:
            held += 1
            continue
        key = (item.due.rule_id, item.school_id, item.connection_id, item.order_id)
        proof = proofs.get(key)
        if proof is None:
            proof = RetentionProof(
                run_id=run.id, rule_id=item.due.rule_id, school_id=item.school_id, connection_id=item.connection_id,
                order_id=item.order_id, trigger_on=item.due.trigger_on, deadline=item.due.deadline, as_of=as_of,
                late_days=0, records=0, counts={}, status="in_progress",
            )
            db.session.add(proof)
            db.session.flush()
            proofs[key] = proof
        proof.trigger_on = min(proof.trigger_on, item.due.trigger_on)
        proof.deadline = min(proof.deadline, item.due.deadline)
        proof.late_days = max(proof.late_days, (as_of - item.due.deadline).days)
        pending.append({"run_id": run.id, "proof_id": proof.id, "record_table": item.table, "record_id": item.id,
                        "category": item.category, "done": False})
        if len(pending) >= batch:
            db.session.execute(RetentionWorkItem.__table__.insert(), pending)
            pending.clear()
    if pending:
        db.session.execute(RetentionWorkItem.__table__.insert(), pending)
    _empty_order_proofs(run, ctx, as_of, {k[3] for k in proofs if k[3] is not None})
    # R36: an "anonymise" rule's aggregates are taken now, while the pupils are still there.
    cells = anonymise.aggregate_planned(run)
    # R27: DfE pupil data without a date of birth cannot be timed; every sweep lists it until resolved.
    untimed = db.session.execute(
        select(func.count()).select_from(MisPupil)
        .where(MisPupil.data_type == "government", MisPupil.date_of_birth.is_(None))
    ).scalar_one()
    run.stats = {**run.stats, "phase": "deleting", "held": held, "exceptions": untimed, "proofs": len(proofs),
                 "aggregate_cells": cells}
    db.session.commit()


def _empty_order_proofs(run: JobRun, ctx: RetentionContext, as_of: date, seen: set[int]) -> None:
    """Give every deletion order due today a proof, even when the connection held nothing, so the school gets a receipt."""
    for orders in ctx.orders.values():
        for order in orders:
            if order.id in seen or order.due_on > as_of:
                continue
            deadline = order.due_on
            db.session.add(RetentionProof(
                run_id=run.id, rule_id=order.rule_id, school_id=order.school_id, connection_id=order.connection_id,
                order_id=order.id, trigger_on=order.trigger_on, deadline=deadline, as_of=as_of,
                late_days=max(0, (as_of - deadline).days), records=0, counts={}, status="in_progress",
            ))


# ---------------------------------------------------------------- 2. delete


def _delete(run: JobRun, batch: int) -> None:
    """Delete the planned records one bounded batch per transaction; a pupil goes with all their rows."""
    items = RetentionWorkItem.__table__
    while True:
        rows = db.session.execute(
            select(items.c.id, items.c.proof_id, items.c.record_table, items.c.record_id, items.c.category)
            .where(items.c.run_id == run.id, items.c.done.is_(False))
            .order_by(items.c.id)
            .limit(batch)
        ).all()
        if not rows:
            break
        # R42: the products that received these records are told, in this batch's transaction.
        deletions.publish_sweep_batch(rows)
        by_table: dict[str, list] = defaultdict(list)
        for row in rows:
            by_table[row.record_table].append(row)
        counts: dict[int, Counter] = defaultdict(Counter)
        records: Counter = Counter()
        for table, group in by_table.items():
            deleted = delete_records(table, [r.record_id for r in group], run_id=run.id)
            for r in group:
                if r.record_id in deleted:
                    counts[r.proof_id].update(deleted[r.record_id])
                    records[r.proof_id] += 1
        db.session.execute(update(items).where(items.c.id.in_([r.id for r in rows])).values(done=True))
        _to_ledger(rows, run)
        for proof_id, per_category in counts.items():
            proof = db.session.get(RetentionProof, proof_id)
            merged = Counter(proof.counts or {})
            merged.update(per_category)
            proof.counts = dict(sorted(merged.items()))
            proof.records += records[proof_id]
        if not claims.heartbeat(run):
            # Cancelled or taken over: what is done is committed, the rest belongs to whoever holds the run now.
            raise SweepStopped
        # One transaction per batch: the records, their rows and the "done" marks commit together.
        db.session.commit()
    run.stats = {**run.stats, "phase": "proving"}
    db.session.commit()


def _clear_fields(run: JobRun, as_of: date, batch: int) -> None:
    """Run the field-set orders due today: clear their columns on the connection's live rows, which stay (R42 notices first).

    One bounded batch per transaction; the last row cleared per order and table is kept in the run's
    stats, so a resumed run goes on from there. Rows under a legal hold keep their values, and their
    order stays open until a sweep after the hold clears them (R40). Each batch is listed in the
    deletion ledger with its columns before it commits (R35): a restored backup clears them again.
    """
    due = fields.due_orders(as_of)
    if not due:
        return
    holds = RetentionContext.load(as_of).holds
    progress = {k: dict(v) for k, v in (run.stats.get("fields_progress") or {}).items()}
    held_orders: set[int] = set()
    for order in due:
        proof = db.session.execute(select(RetentionProof).where(
            RetentionProof.run_id == run.id, RetentionProof.order_id == order.id)).scalar()
        if proof is None:
            proof = RetentionProof(
                run_id=run.id, rule_id=order.rule_id, school_id=order.school_id, connection_id=order.connection_id,
                order_id=order.id, trigger_on=order.trigger_on, deadline=order.due_on, as_of=as_of,
                late_days=max(0, (as_of - order.due_on).days), records=0, counts={}, status="in_progress",
            )
            db.session.add(proof)
            db.session.commit()
        if proof.status != "in_progress":
            continue
        for _, table, columns in fields.each_target([order]):
            done = progress.setdefault(str(order.id), {})
            while True:
                ids = fields.live_rows(table, order, after=int(done.get(table, 0)), batch=batch)
                if not ids:
                    break
                free = [i for i in ids if holds.get((table, i)) is None or holds[(table, i)] < as_of]
                if len(free) < len(ids):
                    held_orders.add(order.id)
                deletions.publish_fields_cleared(table, free, order.rule_id)
                if free:
                    ledger.append({(table, order.school_id): free}, run_id=run.id, columns=columns)
                cleared = store.clear_fields(table, free, columns, run_id=run.id)
                if free:
                    category = order.categories[0] if order.categories else ""
                    db.session.execute(RetentionWorkItem.__table__.insert(), [
                        {"run_id": run.id, "proof_id": proof.id, "record_table": table, "record_id": i,
                         "category": category, "done": True} for i in free])
                    # Counted per field set ("student_basic:upn"), as the withdrawal names it.
                    merged = Counter(proof.counts or {})
                    merged[f"{category}:{','.join(columns)}"] += cleared
                    proof.counts = dict(sorted(merged.items()))
                    proof.records += cleared
                done[table] = ids[-1]
                run.stats = {**run.stats, "fields_progress": progress}
                if not claims.heartbeat(run):
                    raise SweepStopped
                db.session.commit()
        finished = [o for o in run.stats.get("fields_done", []) if o != order.id]
        if order.id not in held_orders:
            finished.append(order.id)
        run.stats = {**run.stats, "fields_done": finished}
        db.session.commit()


def _to_ledger(rows, run: JobRun) -> None:
    """R35: list the batch in the deletion ledger (keyed hashes, per table and school) before it commits."""
    schools = dict(db.session.execute(
        select(RetentionProof.id, RetentionProof.school_id).where(RetentionProof.id.in_({r.proof_id for r in rows}))
    ).all())
    groups: dict[tuple, list[int]] = defaultdict(list)
    for r in rows:
        groups[(r.record_table, schools.get(r.proof_id))].append(r.record_id)
    ledger.append(groups, run_id=run.id)


# ---------------------------------------------------------------- 3. prove


def _seal_abandoned(current: JobRun) -> None:
    """Seal the proofs of sweeps that failed or were cancelled part-way: what they deleted is proven, the rest re-planned."""
    abandoned = db.session.execute(
        select(JobRun).where(
            JobRun.id != current.id, JobRun.job_id == JOB_ID,
            JobRun.status.in_([RunStatus.failed, RunStatus.cancelled]),
            JobRun.id.in_(select(RetentionProof.run_id).where(RetentionProof.status == "in_progress")),
        )
    ).scalars().all()
    for run in abandoned:
        db.session.execute(delete(RetentionWorkItem).where(RetentionWorkItem.run_id == run.id, RetentionWorkItem.done.is_(False)))
        _prove(run, date.fromisoformat(run.params["as_of"]), final=False)


def _prove(run: JobRun, as_of: date, *, final: bool = True) -> None:
    """Seal each proof: hash the sorted record ids, audit it, drop the work items, complete finished orders."""
    items = RetentionWorkItem.__table__
    proofs = db.session.execute(
        select(RetentionProof).where(RetentionProof.run_id == run.id, RetentionProof.status == "in_progress")
    ).scalars().all()
    for proof in proofs:
        digest = hashlib.sha256()
        ids = db.session.execute(
            select(items.c.record_table, items.c.record_id)
            .where(items.c.proof_id == proof.id, items.c.done.is_(True))
            .order_by(items.c.record_table, items.c.record_id)
            .execution_options(yield_per=5000)
        )
        for table, record_id in ids:
            digest.update(f"{table}:{record_id}\n".encode())
        proof.ids_sha256 = digest.hexdigest()
        proof.status = "done"
        proof.done_at = utcnow()
        db.session.execute(delete(items).where(items.c.proof_id == proof.id))
        if proof.order_id is not None:
            order = db.session.get(DeletionOrder, proof.order_id)
            # A field-set order is done only once every row it clears was cleared (none held, the run not cut short).
            if order is not None and order.completed_at is None and (
                    order.fields is None or order.id in (run.stats or {}).get("fields_done", ())):
                order.completed_at = proof.done_at
        audit.record(
            "retention.deleted",
            organisation_id=proof.school_id,
            target=proof,
            details={"rule": proof.rule_id, "records": proof.records, "counts": proof.counts,
                     "late_days": proof.late_days, "run_id": run.id},
            actor="system",
        )
        db.session.commit()
    if not final:
        return
    done = db.session.execute(select(RetentionProof).where(RetentionProof.run_id == run.id)).scalars().all()
    run.stats = {
        **run.stats,
        "phase": "done",
        "as_of": as_of.isoformat(),
        "proofs": len(done),
        "records": sum(p.records for p in done),
        "deleted": dict(sorted(sum((Counter(p.counts) for p in done), Counter()).items())),
        "late": sum(1 for p in done if p.late_days > 0),
    }
    db.session.commit()

"""/metrics for Prometheus (prometheus_client): off unless METRICS_ENABLED, and only with the METRICS_TOKEN bearer token.

Every figure is read from the database at scrape time, so it is the same whichever web process answers
and needs no multi-process registry. Labels are ids, providers, categories and statuses: no personal data.
"""
from __future__ import annotations

import hmac
from collections import Counter
from datetime import date, timedelta

from flask import Blueprint, Response, abort, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Connection, DeletionNotice, ExtractRemoval, JobRun, RunStatus, SubjectRequest
from portal.models.base import utcnow
from portal.models.connections import EXTRACTABLE_STATES
from portal.models.dsr import OPEN_STATUSES
from portal.ops.heartbeat import last_heartbeat_age

bp = Blueprint("ops_metrics", __name__)

RECENT = timedelta(hours=24)


def _age(now, then) -> float:
    return max(0.0, (now - then).total_seconds())


class PortalCollector:
    """Collects the portal's figures from the database when Prometheus scrapes."""

    def collect(self):
        now = utcnow()
        provider = func.coalesce(Connection.connector, "none")

        runs = CounterMetricFamily("portal_runs", "Job runs recorded, by provider, kind and status.",
                                   labels=["provider", "kind", "status"])
        for prov, kind, status, n in db.session.execute(
            select(provider, JobRun.kind, JobRun.status, func.count())
            .select_from(JobRun).outerjoin(Connection, JobRun.connection_id == Connection.id)
            .group_by(provider, JobRun.kind, JobRun.status)
        ):
            runs.add_metric([prov, kind, getattr(status, "value", status)], n)
        yield runs

        recent = GaugeMetricFamily("portal_runs_recent", "Runs created in the last 24 hours, by provider, category and status.",
                                   labels=["provider", "category", "status"])
        counts: Counter = Counter()
        for prov, kind, status, params in db.session.execute(
            select(provider, JobRun.kind, JobRun.status, JobRun.params)
            .select_from(JobRun).outerjoin(Connection, JobRun.connection_id == Connection.id)
            .where(JobRun.created_at >= now - RECENT)
        ):
            for category in (params or {}).get("categories") or [kind]:
                counts[(prov, category, getattr(status, "value", status))] += 1
        for labels, n in sorted(counts.items()):
            recent.add_metric(list(labels), n)
        yield recent

        duration = GaugeMetricFamily("portal_last_run_duration_seconds", "Duration of each connection's last finished extract run.",
                                     labels=["connection_id", "provider"])
        records = GaugeMetricFamily("portal_last_run_records", "Records each connection's last finished extract run read.",
                                    labels=["connection_id", "provider"])
        last_finished = (
            select(JobRun.connection_id, func.max(JobRun.finished_at).label("at"))
            .where(JobRun.kind == "extract", JobRun.finished_at.is_not(None))
            .group_by(JobRun.connection_id).subquery()
        )
        for run, connector in db.session.execute(
            select(JobRun, Connection.connector)
            .join(last_finished, (JobRun.connection_id == last_finished.c.connection_id) & (JobRun.finished_at == last_finished.c.at))
            .join(Connection, Connection.id == JobRun.connection_id)
        ):
            labels = [str(run.connection_id), connector]
            if run.duration_seconds is not None:
                duration.add_metric(labels, run.duration_seconds)
            read = sum(int(c.get(k, 0)) for c in (run.stats or {}).get("categories", {}).values() if isinstance(c, dict)
                       for k in ("inserted", "updated", "unchanged"))
            records.add_metric(labels, read)
        yield duration
        yield records

        success = GaugeMetricFamily("portal_connection_last_success_age_seconds",
                                    "Seconds since each extractable connection's last successful extract run.",
                                    labels=["connection_id", "provider"])
        last_ok = (
            select(JobRun.connection_id, func.max(JobRun.finished_at).label("at"))
            .where(JobRun.kind == "extract", JobRun.status == RunStatus.succeeded)
            .group_by(JobRun.connection_id).subquery()
        )
        for cid, connector, at, created in db.session.execute(
            select(Connection.id, Connection.connector, last_ok.c.at, Connection.created_at)
            .outerjoin(last_ok, last_ok.c.connection_id == Connection.id)
            .where(Connection.state.in_(EXTRACTABLE_STATES))
        ):
            # Never succeeded: counted from the connection's creation, so a new stuck connection shows up too.
            success.add_metric([str(cid), connector], _age(now, _aware(at or created)))
        yield success

        held = GaugeMetricFamily("portal_held_removals", "Removals staged in extract runs held for review.")
        held.add_metric([], db.session.scalar(
            select(func.count()).select_from(ExtractRemoval).join(JobRun, JobRun.id == ExtractRemoval.run_id)
            .where(JobRun.status == RunStatus.held)) or 0)
        yield held
        held_runs = GaugeMetricFamily("portal_held_runs", "Extract runs held for review.")
        held_runs.add_metric([], db.session.scalar(select(func.count()).where(JobRun.status == RunStatus.held)) or 0)
        yield held_runs

        pending = GaugeMetricFamily("portal_deletions_pending_acknowledgement",
                                    "Deletion notices products have not acknowledged, by product id.", labels=["product_id"])
        for product_id, n in db.session.execute(
            select(DeletionNotice.product_id, func.count()).where(DeletionNotice.acknowledged_at.is_(None))
            .group_by(DeletionNotice.product_id)
        ):
            pending.add_metric([str(product_id)], n)
        yield pending

        due = GaugeMetricFamily("portal_requests_due_within_7_days", "Open rights requests whose deadline is within 7 days (or passed).")
        due.add_metric([], db.session.scalar(
            select(func.count()).select_from(SubjectRequest)
            .where(SubjectRequest.status.in_(OPEN_STATUSES), SubjectRequest.deadline_on <= date.today() + timedelta(days=7))) or 0)
        yield due

        lag = GaugeMetricFamily("portal_job_lag_seconds", "How long the oldest queued run has waited past its scheduled time.")
        oldest = db.session.scalar(select(func.min(JobRun.scheduled_for)).where(JobRun.status == RunStatus.queued))
        lag.add_metric([], _age(now, _aware(oldest)) if oldest else 0.0)
        yield lag
        queued = GaugeMetricFamily("portal_jobs_queued", "Runs claimed but not started yet.")
        queued.add_metric([], db.session.scalar(select(func.count()).where(JobRun.status == RunStatus.queued)) or 0)
        yield queued

        beat = GaugeMetricFamily("portal_scheduler_heartbeat_age_seconds", "Seconds since a scheduler last beat (-1: never).")
        age = last_heartbeat_age()
        beat.add_metric([], -1.0 if age is None else age)
        yield beat


def _aware(at):
    from datetime import timezone

    return at.replace(tzinfo=timezone.utc) if at is not None and at.tzinfo is None else at


@bp.get("/metrics")
def metrics():
    """Prometheus text format, for a scraper that sends ``Authorization: Bearer <METRICS_TOKEN>``."""
    if not current_app.config.get("METRICS_ENABLED"):
        abort(404)
    token = current_app.config.get("METRICS_TOKEN") or ""
    given = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        resp = jsonify({"error": {"code": "metrics_token_required",
                                  "message": "Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'."}})
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return resp
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    resp = Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    resp.headers["Cache-Control"] = "no-store"
    return resp

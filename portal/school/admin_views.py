"""Support operations in flask-admin: find a school, failing connections first, held runs, run now, resync, pause."""
from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_admin import expose
from flask_login import current_user
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import selectinload

from portal import deletions, lifecycle
from portal.admin.views import SecureBaseView
from portal.connectors import CATEGORIES
from portal.converters import parse_id
from portal.extensions import db
from portal.extract import ExtractRefused, approve_held_run, reject_held_run
from portal.jobs import get_executor
from portal.jobs.claims import BROKER_UNAVAILABLE
from portal.models import Connection, ConnectionState, JobRun, Organisation, OrgKind, RunStatus
from portal.school import queries

PER_PAGE = 50


def _int(value: str | None) -> int | None:
    # An id past the id columns' range names no row (and PostgreSQL would refuse to compare it): None.
    return parse_id(value) if value is not None else None


class OperationsView(SecureBaseView):
    """One page for support staff to run the service; every action goes through lifecycle or the extract engine."""

    @expose("/")
    def index(self):
        q = (request.args.get("q") or "").strip()[:200]
        page_no = _int(request.args.get("page")) or 1
        # Failing first, then held/awaiting states, then the rest; paged.
        order = case(
            (Connection.state == ConnectionState.failing, 0),
            (Connection.state.in_([ConnectionState.pending, ConnectionState.requested]), 1),
            (Connection.state == ConnectionState.approved, 2),
            else_=3,
        )
        conns = (
            select(Connection)
            .join(Organisation, Connection.school_id == Organisation.id)
            .options(selectinload(Connection.school))
            .order_by(order, Organisation.name, Connection.id)
        )
        if q:
            like = f"%{q.lower()}%"
            conns = conns.where(
                or_(func.lower(Organisation.name).like(like), Organisation.urn == q, Organisation.dfe_number == q.replace("/", ""))
            )
        page = queries.paginate(conns, page_no, PER_PAGE)
        runs = queries.latest_runs([c.id for c in page.items])
        held = list(
            db.session.execute(
                select(JobRun)
                .where(JobRun.status == RunStatus.held, JobRun.job_id.startswith(queries.EXTRACT_PREFIX))
                .options(selectinload(JobRun.connection).selectinload(Connection.school))
                .order_by(JobRun.id)
                .limit(100)
            ).scalars()
        )
        schools_without = []
        if q:
            schools_without = list(
                db.session.execute(
                    select(Organisation)
                    .where(
                        Organisation.kind == OrgKind.school,
                        or_(func.lower(Organisation.name).like(f"%{q.lower()}%"), Organisation.urn == q, Organisation.dfe_number == q),
                        ~select(Connection.id).where(Connection.school_id == Organisation.id).exists(),
                    )
                    .order_by(Organisation.name)
                    .limit(PER_PAGE)
                ).scalars()
            )
        return self.render(
            "admin/operations.html", q=q, page=page, runs=runs, held=held, categories=CATEGORIES,
            schools_without=schools_without, overdue_deletions=deletions.overdue_summary(),
        )

    def _connection(self) -> Connection | None:
        conn = db.session.get(Connection, _int(request.form.get("connection_id")) or 0)
        if conn is None:
            flash("That connection no longer exists.", "error")
        return conn

    def _back(self):
        return redirect(url_for(".index", q=request.form.get("q") or None))

    @expose("/run", methods=["POST"])
    def run_now(self):
        conn = self._connection()
        if conn is None:
            return self._back()
        category = request.form.get("category") or None
        if category is not None and category not in CATEGORIES:
            flash("Choose one of the six categories to resync.", "error")
            return self._back()
        if not conn.can_extract:
            flash(f"Connection {conn.id} is {conn.state.label.lower()}{' and paused' if conn.paused else ''}: no extract can run.", "error")
            return self._back()
        mode, categories = ("full", [category]) if category else ("incremental", None)
        what = f"Resync of {category}" if category else "Extract"
        try:
            # In-process: runs here and comes back finished. Celery: claimed as queued for the workers, never run here.
            run = get_executor().extract_now(conn.id, mode=mode, categories=categories)
        except ExtractRefused as exc:
            flash(exc.message, "error")
            return self._back()
        if run is None:
            flash(f"An extract of connection {conn.id} was queued at this same moment; see the run history.", "error")
        elif run.status == RunStatus.queued and run.error_code == BROKER_UNAVAILABLE:
            flash(f"{what} for connection {conn.id} is queued as run {run.id}. {run.error_message}", "error")
        elif run.status == RunStatus.queued:
            flash(f"{what} for connection {conn.id} queued as run {run.id}: a worker will run it; see the run history.")
        else:
            flash(f"{what} for connection {conn.id} finished as run {run.id}: {run.status.value}.")
        return self._back()

    @expose("/pause", methods=["POST"])
    def pause(self):
        conn = self._connection()
        if conn is not None:
            paused = request.form.get("paused") == "1"
            lifecycle.set_paused(conn, current_user, paused)
            flash(f"Connection {conn.id} {'paused' if paused else 'resumed'}.")
        return self._back()

    @expose("/hold", methods=["POST"])
    def hold(self):
        run_id = _int(request.form.get("run_id"))
        decision = request.form.get("decision")
        if run_id is None or decision not in ("approve", "reject"):
            flash("Choose approve or reject for a held run.", "error")
            return self._back()
        try:
            run = (approve_held_run if decision == "approve" else reject_held_run)(run_id, current_user)
        except ExtractRefused as exc:
            flash(exc.message, "error")
            return self._back()
        flash(f"Held run {run.id} {'approved: the removals were applied' if decision == 'approve' else 'rejected: nothing was removed'}.")
        return self._back()

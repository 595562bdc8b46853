"""Pages for school, trust and LA users: schools overview, connections, terms, data use, run history, audit history."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from portal import deletions, lifecycle
from portal.connectors import CATEGORIES
from portal.extensions import db
from portal.models import ConnectionState, JobRun, Organisation, OrgKind, Product, RunStatus
from portal.plugins.manager import get_plugins
from portal.school import labels, queries
from portal.school.chart import Point, bar_chart
from portal.school.forms import AuthoriseForm, RevokeForm, TermsForm
from portal.school.messages import ERROR_KINDS, PROVIDER_ACTIONS, action_label
from portal.scope import Action, can, organisations_of, school_ids, school_or_404, schools_query

bp = Blueprint("school", __name__)
labels.register(bp)

SCHOOLS_PER_PAGE = 50
RUNS_PER_PAGE = 25
HISTORY_PER_PAGE = 50
CHART_DAYS = 60


@bp.app_template_filter("london_time")
def london_time(moment: datetime) -> str:
    """Format a timestamp in UK time, as schools read it."""
    return moment.astimezone(queries.LONDON).strftime("%-d %B %Y, %H:%M")


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _page_arg() -> int:
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        return 1


def _enabled_connectors() -> dict:
    return dict(get_plugins().connectors())


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("school.home"))
    return redirect(url_for("auth.login"))


@bp.route("/home")
@login_required
def home():
    """Every school in scope, paged, with each connection's state and last run: the trust and LA view too."""
    page = queries.paginate(schools_query(current_user, Action.view).order_by(Organisation.name, Organisation.id), _page_arg(), SCHOOLS_PER_PAGE)
    organisations = organisations_of(current_user)
    if page.total == 1 and page.items and organisations and all(o.kind == OrgKind.school for o in organisations):
        # School staff of one school land on their school's front page, not on a one-row list.
        return connections(page.items[0].id)
    ids = [s.id for s in page.items]
    conns = queries.connections_by_school(ids)
    runs = queries.latest_runs([c.id for per in conns.values() for c in per.values()])
    return render_template(
        "school/home.html",
        organisations=organisations,
        schools=page.items,
        page=page,
        connections=conns,
        runs=runs,
        connectors=_enabled_connectors(),
    )


@bp.route("/schools/<int:school_id>")
@login_required
def school(school_id: int):
    """A school's front page is its connections page."""
    return connections(school_id)


# ---------------------------------------------------------------- connections


@bp.route("/schools/<int:school_id>/connections")
@login_required
def connections(school_id: int):
    school = school_or_404(current_user, school_id, Action.view)
    connectors = _enabled_connectors()
    conns = queries.connections_by_school([school.id])[school.id]
    runs = queries.latest_runs([c.id for c in conns.values()])
    users = queries.users_by_id({c.state_changed_by_id for c in conns.values()})
    return render_template(
        "school/connections.html",
        school=school,
        connectors=connectors,
        connections=conns,
        runs=runs,
        users=users,
        terms=lifecycle.terms_acceptance(school),
        terms_version=lifecycle.current_terms_version(),
        terms_updated=current_app.config["TERMS_UPDATED"],
        can_authorise=can(current_user, Action.authorise, school),
        error_kinds=ERROR_KINDS,
    )


@bp.route("/schools/<int:school_id>/terms", methods=["GET", "POST"])
@login_required
def terms(school_id: int):
    school = school_or_404(current_user, school_id, Action.authorise)
    version = lifecycle.current_terms_version()
    form = TermsForm(version=version)
    error = None
    if form.validate_on_submit():
        try:
            lifecycle.accept_terms(school, current_user, form.version.data)
        except lifecycle.LifecycleError as exc:
            error = exc.message
        else:
            flash(f"You accepted the terms (version {version}) for {school.name}.")
            return redirect(url_for("school.connections", school_id=school.id))
    return render_template(
        "school/terms.html", school=school, form=form, error=error, version=version,
        updated=current_app.config["TERMS_UPDATED"], acceptance=lifecycle.terms_acceptance(school),
    ), (400 if request.method == "POST" else 200)


def _connector_or_404(name: str):
    cls = _enabled_connectors().get(name)
    if cls is None:
        abort(404)
    return cls


@bp.route("/schools/<int:school_id>/connections/<connector>/authorise", methods=["GET", "POST"])
@login_required
def authorise(school_id: int, connector: str):
    school = school_or_404(current_user, school_id, Action.authorise)
    cls = _connector_or_404(connector)
    form = AuthoriseForm()
    if request.method == "GET" and not form.contact_email.data:
        form.contact_name.data, form.contact_email.data = current_user.name, current_user.email
    error = None
    accepted = lifecycle.terms_acceptance(school)
    if accepted is None:
        error = "Accept the current terms before you authorise a connection."
    elif form.validate_on_submit():
        conn = lifecycle.connection_for(school, connector)
        try:
            lifecycle.request_access(
                conn, current_user, lifecycle.Contact(form.contact_name.data.strip(), form.contact_email.data.strip())
            )
        except lifecycle.LifecycleError as exc:
            db.session.rollback()
            error = exc.message
        else:
            flash(f"{cls.title}: {conn.state.label}. We will show here when {cls.title} approves access.")
            return redirect(url_for("school.connections", school_id=school.id))
    status = 400 if request.method == "POST" else 200
    return render_template(
        "school/authorise.html", school=school, connector=cls, form=form, error=error, terms_accepted=accepted
    ), status


@bp.route("/schools/<int:school_id>/connections/<connector>/revoke", methods=["GET", "POST"])
@login_required
def revoke(school_id: int, connector: str):
    school = school_or_404(current_user, school_id, Action.authorise)
    cls = _connector_or_404(connector)
    conn = queries.connections_by_school([school.id])[school.id].get(connector)
    if conn is None or conn.state not in (
        ConnectionState.requested, ConnectionState.pending, ConnectionState.approved, ConnectionState.failing
    ):
        flash(f"{cls.title} is not connected, so there is nothing to revoke.")
        return redirect(url_for("school.connections", school_id=school.id))
    form = RevokeForm()
    error = None
    if form.validate_on_submit():
        try:
            lifecycle.revoke(conn, current_user, delete_now=form.deletion.data == "now")
        except lifecycle.LifecycleError as exc:
            db.session.rollback()
            error = exc.message
        else:
            flash(f"The {cls.title} connection is revoked. No more data will be extracted through it.")
            return redirect(url_for("school.connections", school_id=school.id))
    today = queries.today_london()
    return render_template(
        "school/revoke.html",
        school=school,
        connector=cls,
        connection=conn,
        form=form,
        error=error,
        features=queries.features_using(school),
        deletion_date=lifecycle.deletion_date(today),
    ), (400 if request.method == "POST" else 200)


# ---------------------------------------------------------------- data use


def _data_use_context(school: Organisation) -> dict:
    uses, categories, used = queries.data_use(school)
    fresh = queries.freshness(school, list(categories) or list(CATEGORIES))
    return {"school": school, "uses": uses, "categories": categories, "used": used, "fresh": fresh,
            "today": queries.today_london()}


@bp.route("/schools/<int:school_id>/data-use")
@login_required
def data_use(school_id: int):
    school = school_or_404(current_user, school_id, Action.view)

    # R42: products that have not confirmed, within 7 days, that they deleted what the portal deleted.
    return render_template("school/data_use.html", overdue_deletions=deletions.overdue_summary(school.id),
                           **_data_use_context(school))


@bp.route("/schools/<int:school_id>/data-use/statement")
@login_required
def statement(school_id: int):
    school = school_or_404(current_user, school_id, Action.view)
    return render_template("school/statement.html", location=current_app.config["DATA_LOCATION"], **_data_use_context(school))


# ---------------------------------------------------------------- runs


def _chart(school_id: int) -> dict:
    end = queries.today_london()
    since = datetime.now(timezone.utc) - timedelta(days=CHART_DAYS)
    runs = queries.runs_since(school_id, since)
    finished = [r for r in runs if r.finished_at]
    records = [Point(queries.london_date(r.created_at), queries.run_records(r), r.status == RunStatus.failed) for r in finished]
    durations = [Point(queries.london_date(r.created_at), r.duration_seconds or 0, r.status == RunStatus.failed) for r in finished]
    return {
        "records_chart": bar_chart("chart-records", f"Records per day, last {CHART_DAYS} days", "records", records, end, CHART_DAYS),
        "duration_chart": bar_chart("chart-duration", f"Extract seconds per day, last {CHART_DAYS} days", "seconds", durations, end, CHART_DAYS),
        "chart_runs": list(reversed(finished)),
    }


@bp.route("/schools/<int:school_id>/runs")
@login_required
def runs(school_id: int):
    school = school_or_404(current_user, school_id, Action.view)
    ids_query = schools_query(current_user, Action.view).where(Organisation.id == school.id).with_only_columns(Organisation.id)
    page = queries.paginate(queries.extract_runs_query(ids_query), _page_arg(), RUNS_PER_PAGE)
    return render_template(
        "school/runs.html", school=school, page=page, error_kinds=ERROR_KINDS, queries=queries,
        connectors=get_plugins().installed_connectors(), **_chart(school.id),
    )


@bp.route("/runs")
@login_required
def all_runs():
    """Extract runs across every school in scope (trust admins, LA officers)."""
    # The ids first, then the runs of those: given the scope as a subquery, the database expects half of all
    # schools to match (it cannot estimate the school-link clause) and reads every run to count the page.
    page = queries.paginate(queries.extract_runs_query(school_ids(current_user, Action.view)), _page_arg(), RUNS_PER_PAGE)
    return render_template(
        "school/all_runs.html", page=page, error_kinds=ERROR_KINDS, queries=queries,
        connectors=get_plugins().installed_connectors(),
    )


def _run_or_404(school: Organisation, run_id: int) -> JobRun:
    run = db.session.get(JobRun, run_id)
    if run is None or run.connection is None or run.connection.school_id != school.id or not run.job_id.startswith(queries.EXTRACT_PREFIX):
        abort(404)
    return run


@bp.route("/schools/<int:school_id>/runs/<int:run_id>")
@login_required
def run_detail(school_id: int, run_id: int):
    school = school_or_404(current_user, school_id, Action.view)
    run = _run_or_404(school, run_id)
    return render_template(
        "school/run.html", school=school, run=run, counts=queries.run_counts(run), records=queries.run_records(run), error_kinds=ERROR_KINDS,
        connectors=get_plugins().installed_connectors(),
    )


@bp.route("/schools/<int:school_id>/runs/<int:run_id>/progress.json")
@login_required
def run_progress(school_id: int, run_id: int):
    """Live progress of a run, polled by the run page while it is queued or running."""
    school = school_or_404(current_user, school_id, Action.view)
    run = _run_or_404(school, run_id)
    return jsonify(
        {
            "id": run.id,
            "status": run.status.value,
            "finished": run.finished_at is not None,
            "records": queries.run_records(run),
            "categories": queries.run_counts(run),
            "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        }
    )


# ---------------------------------------------------------------- history (R9)


@bp.route("/schools/<int:school_id>/history")
@login_required
def history(school_id: int):
    school = school_or_404(current_user, school_id, Action.view)
    page = queries.paginate(queries.school_history_query(school.id), _page_arg(), HISTORY_PER_PAGE)
    users = queries.users_by_id({e.actor_user_id for e in page.items})
    # Product authorisations and their ends name the product (the entry holds its id only).
    product_ids = {e.details.get("product_id") for e in page.items if e.action.startswith("product.") and e.details} - {None}
    products = {}
    if product_ids:
        products = dict(db.session.execute(select(Product.id, Product.name).where(Product.id.in_(product_ids))).all())
    return render_template("school/history.html", school=school, page=page, users=users, action_label=action_label,
                           products=products, provider_actions=PROVIDER_ACTIONS)

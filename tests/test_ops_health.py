"""/healthz, /readyz, /metrics and request ids, as a load balancer, Prometheus and an operator reading logs see them."""
from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from portal.extensions import db
from portal.models import JobRun, RunStatus, SchedulerHeartbeat
from portal.models.base import utcnow


def test_healthz_answers_json_without_touching_dependencies(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}
    assert resp.headers["Cache-Control"] == "no-store"


def test_readyz_lists_each_dependency_and_is_degraded_without_a_scheduler(client):
    resp = client.get("/readyz")
    body = resp.get_json()
    assert set(body["checks"]) == {"database", "migrations", "scheduler", "ledger"}
    assert body["checks"]["database"]["ok"] and body["checks"]["migrations"]["ok"] and body["checks"]["ledger"]["ok"]
    # No scheduler has beaten: reported, but the web process still takes traffic.
    assert body["checks"]["scheduler"] == {"ok": False, "detail": "no scheduler has ever run", "blocking": False}
    assert resp.status_code == 200 and body["status"] == "degraded"


def test_readyz_is_ready_once_a_scheduler_beats_and_stale_heartbeats_degrade_it(app, client):
    from portal.ops.heartbeat import beat

    beat()
    body = client.get("/readyz").get_json()
    assert body["status"] == "ready" and body["checks"]["scheduler"]["ok"]
    row = db.session.scalars(db.select(SchedulerHeartbeat)).one()
    row.beat_at = utcnow() - timedelta(seconds=3 * app.config["SCHEDULER_HEARTBEAT_SECONDS"] + 5)
    db.session.commit()
    body = client.get("/readyz").get_json()
    assert body["status"] == "degraded" and "more than" in body["checks"]["scheduler"]["detail"]


def test_readyz_is_not_ready_when_the_database_is_behind_the_deletion_ledger(app, client):
    from portal.retention import ledger

    ledger.append({("mis_pupils", None): [1]}, run_id=None)
    db.session.rollback()  # the database never learnt of the line: as after restoring an older backup
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["status"] == "not_ready" and not body["checks"]["ledger"]["ok"]
    assert "replay-ledger" in body["checks"]["ledger"]["detail"]
    # The ledger check that pauses pages leaves the probes answering JSON.
    assert client.get("/healthz").status_code == 200


def test_readyz_is_not_ready_when_migrations_are_not_at_head(app, client):
    from sqlalchemy import text

    head = db.session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    db.session.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    db.session.commit()
    try:
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert resp.get_json()["checks"]["migrations"]["detail"].startswith("database at 0003")
    finally:
        # The version row is not among the reference rows each test gets back: put it back for the next tests.
        db.session.rollback()
        db.session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
        db.session.commit()


def test_metrics_are_off_by_default(client):
    assert client.get("/metrics").status_code == 404


def test_metrics_need_the_token_and_report_runs_lag_and_heartbeat(make_app, make):
    app = make_app(METRICS_ENABLED=True, METRICS_TOKEN="s3cret-token-value")
    with app.app_context():
        school = make.school()
        from portal.models import Connection, ConnectionState

        conn = Connection(school_id=school.id, connector="fake", state=ConnectionState.approved)
        db.session.add(conn)
        db.session.flush()
        now = utcnow()
        db.session.add_all([
            JobRun(job_id=f"extract:{conn.id}", kind="extract", scheduled_for=now - timedelta(hours=2), connection_id=conn.id,
                   status=RunStatus.succeeded, started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=2) + timedelta(seconds=42),
                   params={"categories": ["student_basic"]},
                   stats={"categories": {"student_basic": {"inserted": 5, "updated": 2, "unchanged": 3, "tombstoned": 1}}}),
            JobRun(job_id="retention:sweep", kind="retention", scheduled_for=now - timedelta(seconds=600), status=RunStatus.queued),
        ])
        db.session.commit()
        cid = conn.id
        client = app.test_client()
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        resp = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token-value"})
        assert resp.status_code == 200
        text_ = resp.get_data(as_text=True)
    assert 'portal_runs_total{kind="extract",provider="fake",status="succeeded"} 1.0' in text_
    assert 'portal_runs_recent{category="student_basic",provider="fake",status="succeeded"} 1.0' in text_
    assert f'portal_last_run_duration_seconds{{connection_id="{cid}",provider="fake"}} 42.0' in text_
    assert f'portal_last_run_records{{connection_id="{cid}",provider="fake"}} 10.0' in text_
    age = next(line for line in text_.splitlines() if line.startswith("portal_connection_last_success_age_seconds{"))
    assert 7100 < float(age.split()[-1]) < 7300
    lag = float(next(line for line in text_.splitlines() if line.startswith("portal_job_lag_seconds ")).split()[-1])
    assert 590 < lag < 700
    assert "portal_scheduler_heartbeat_age_seconds -1.0" in text_
    for name in ("portal_held_removals", "portal_deletions_pending_acknowledgement", "portal_requests_due_within_7_days"):
        assert f"# TYPE {name} gauge" in text_


def test_request_id_is_kept_from_the_proxy_or_made_and_returned(client):
    resp = client.get("/healthz", headers={"X-Request-ID": "lb-1234.abc"})
    assert resp.headers["X-Request-ID"] == "lb-1234.abc"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id {\"forged\": 1}"}).headers["X-Request-ID"]
    assert len(made) == 32 and made.isalnum()


def test_json_logs_carry_the_request_id(make_app, capsys):
    app = make_app(LOG_FORMAT="json")

    @app.get("/_log_probe")
    def probe():
        logging.getLogger("portal.test").warning("probe for %s", "run 7")
        return "ok"

    try:
        app.test_client().get("/_log_probe", headers={"X-Request-ID": "req-42"})
        err = capsys.readouterr().err
        line = next(json.loads(x) for x in err.splitlines() if "probe for" in x)
        assert line["request_id"] == "req-42" and line["level"] == "WARNING" and line["message"] == "probe for run 7"
    finally:
        from portal.ops.requestlog import _HANDLER_NAME

        root = logging.getLogger()
        for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
            root.removeHandler(h)


def test_an_unknown_log_format_stops_start_up(make_app):
    from portal.errors import StartupError

    with pytest.raises(StartupError, match="LOG_FORMAT"):
        make_app(LOG_FORMAT="xml")


def test_readyz_and_check_deploy_report_an_unreachable_celery_broker(make_app):
    pytest.importorskip("celery", reason="the Celery extra is not installed")
    from tests.celery_support import free_port

    app = make_app(EXECUTOR="celery", CELERY={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["broker"] == {"ok": False, "detail": "unreachable: OperationalError", "blocking": True}
    from portal.ops.deploycheck import run_checks

    with app.app_context():
        lines = [f.line() for f in run_checks()]
    assert any(line.startswith("ERROR CELERY.broker_url: the Celery broker is unreachable") for line in lines), lines


@pytest.mark.parametrize("setting", [{"SERVE_WORKERS": 0}, {"SERVE_THREADS": "four"}, {"METRICS_ENABLED": "yes"}])
def test_invalid_production_settings_stop_start_up_with_their_name(make_app, setting):
    from portal.errors import StartupError

    (key,) = setting
    with pytest.raises(StartupError, match=f"PORTAL_{key} is invalid"):
        make_app(**setting)

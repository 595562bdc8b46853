"""R65: sentinel personal data sent through a failing page, API call, job and extract reaches no log line, mail or CLI output."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import text

from portal.extensions import db
from portal.jobs import JobSpec
from portal.jobs.runner import fire
from portal.mail import outbox_dir
from portal.models import Role, RunStatus
from tests.extract_helpers import authorise_all_features, connect, extract_config
from tests.plugins import fake_mis
from tests.plugins.fake_mis import World, generate

NAME = "Zebedee-Sentinelname"
UPN = "Z123456789012"
SENTINELS = (NAME, UPN)
AT = datetime(2026, 10, 5, 2, 0, tzinfo=timezone.utc)


def _fails_with_personal_data():
    # A SQLAlchemy error quotes its statement's parameters in its message.
    db.session.execute(text("SELECT * FROM no_such_table WHERE upn = :upn AND surname = :surname"),
                       {"upn": UPN, "surname": NAME})


def _raise(*_args):
    raise ValueError(f"could not map pupil {NAME} ({UPN})")


def test_r65_sentinel_personal_data_reaches_no_log_mail_or_cli_output(make_app, make, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    fake_mis.HOOKS.clear()
    app = make_app(**extract_config())
    app.add_url_rule("/r65-page", "r65_page", _fails_with_personal_data)
    app.add_url_rule("/api/r65", "r65_api", _fails_with_personal_data)
    cli_output = []
    with app.app_context():
        client = app.test_client()
        page = client.get("/r65-page?upn=" + UPN)
        api = client.get("/api/r65", headers={"X-Request-ID": "req-r65-1"})
        assert page.status_code == api.status_code == 500
        assert api.get_json()["error"]["code"] == "internal_error"

        job = fire(JobSpec("r65:job", _raise), AT)
        assert job.status == RunStatus.failed
        job_error = job.error_message

        school = make.school()
        make.user(Role.school_admin, school)
        authorise_all_features(school)
        data = generate(pupils=2)
        for r in data["records"]:
            if r["kind"] == "pupil" and r["fields"]["external_id"] == "P1":
                r["fields"].update(legal_forename=NAME, legal_surname=NAME, upn=UPN)
        world = World(tmp_path / "world.json").save(data)
        fake_mis.HOOKS["r65"] = _raise
        connect(school, world.path, faults=[{"category": "student_demographics", "page": 1, "do": "hook", "name": "r65"}])
        result = app.test_cli_runner().invoke(args=["portal", "extract", "--connector", "fakemis", "--school", school.urn])
        cli_output.append(result.output)
        assert result.exit_code != 0  # the extract failed, as intended
        mails = [p.read_text(errors="replace") for p in outbox_dir().glob("*.eml")] if outbox_dir().exists() else []

    captured = capfd.readouterr()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) >= 4, [r.getMessage() for r in errors]  # page, API call, job, extract
    web = [r.getMessage() for r in errors if r.name == "portal.web_errors"]
    assert any("OperationalError" in m or "ProgrammingError" in m for m in web), web
    assert any("req-r65-1" in m or "/api/r65" in m for m in web), web
    places = {
        "log lines": "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records) + caplog.text,
        "stderr": captured.err,
        "stdout": captured.out,
        "cli output": "\n".join(cli_output),
        "mail": "\n".join(mails),
        "responses": page.get_data(as_text=True) + api.get_data(as_text=True),
        "run errors": job_error,
    }
    for where, content in places.items():
        for sentinel in SENTINELS:
            assert sentinel not in content, f"{sentinel} leaked into {where}"

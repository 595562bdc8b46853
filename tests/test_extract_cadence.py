"""R17/R18 cadence: which categories may be weekly, and a weekly category is extracted on its day only (a real provider sandbox)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from portal import create_app
from portal.configuration import WEEKDAYS
from portal.errors import StartupError
from portal.extract import run_extract
from portal.models import RunStatus
from portal.models.base import utcnow
from portal.retention.calendar import london_date
from portal.sandbox import synthetic
from portal.testing.databases import base_config


@pytest.mark.parametrize("category, cadence", [
    ("student_attendance_exclusions", "weekly"),
    ("student_basic", "weekly"),
    ("staff_basic", "weekly"),
    ("student_assessment", "monthly"),
])
def test_r18_configuration_rejects_a_cadence_below_the_rules(tmp_path, category, cadence):
    cfg = base_config(f"sqlite:///{tmp_path / 'x.sqlite3'}", INSTANCE_PATH=str(tmp_path),
                      EXTRACT_SCHEDULE={category: cadence})
    with pytest.raises(StartupError, match=f"PORTAL_EXTRACT_SCHEDULE__{category} is invalid"):
        create_app(cfg)


def test_r18_configuration_accepts_weekly_assessment(tmp_path):
    cfg = base_config(f"sqlite:///{tmp_path / 'x.sqlite3'}", INSTANCE_PATH=str(tmp_path),
                      EXTRACT_SCHEDULE={"student_assessment": "weekly"})
    assert create_app(cfg).config["EXTRACT_SCHEDULE"] == {"student_assessment": "weekly"}


def test_r18_the_weekly_day_must_be_a_day(tmp_path):
    cfg = base_config(f"sqlite:///{tmp_path / 'x.sqlite3'}", INSTANCE_PATH=str(tmp_path), EXTRACT_WEEKLY_DAY="someday")
    with pytest.raises(StartupError, match="PORTAL_EXTRACT_WEEKLY_DAY is invalid"):
        create_app(cfg)


@pytest.fixture
def weekly_assessment(serve_school):
    """A school on an installed connector's sandbox, with student_assessment set to weekly on a day that is not today."""
    school = synthetic.generate_school(21, pupils=12, days=3, phase="secondary", sixth_form=False)
    tomorrow = WEEKDAYS[(london_date(utcnow()) + timedelta(days=1)).weekday()]
    with serve_school(school, EXTRACT_SCHEDULE={"student_assessment": "weekly"}, EXTRACT_WEEKLY_DAY=tomorrow) as served:
        yield served.app, served.served, served.connection_id


def test_r18_a_weekly_category_is_extracted_first_then_only_on_its_day(weekly_assessment):
    app, served, connection_id = weekly_assessment
    # Never extracted: the first scheduled run takes it, although today is not its day.
    first = run_extract(connection_id)
    assert first.status == RunStatus.succeeded, first.error_message
    assert "student_assessment" in first.params["categories"]
    assert first.stats["categories"]["student_assessment"]["inserted"] > 0

    # The next day's run (not the weekly day): every daily category, no assessment call at all.
    served.sandbox.clear_log()
    second = run_extract(connection_id)
    assert second.status == RunStatus.succeeded, second.error_message
    assert second.params["categories"] == ["student_basic", "student_demographics", "student_timetable",
                                           "student_attendance_exclusions", "staff_basic"]
    assert served.read_count("student_attendance_exclusions") and served.read_count("student_basic")
    assert served.read_count("student_assessment") == 0

    # On the weekly day it comes again.
    app.config["EXTRACT_WEEKLY_DAY"] = WEEKDAYS[london_date(utcnow()).weekday()]
    served.sandbox.clear_log()
    third = run_extract(connection_id)
    assert "student_assessment" in third.params["categories"]
    assert served.read_count("student_assessment")


def test_r18_naming_a_weekly_category_extracts_it_any_day(weekly_assessment):
    app, served, connection_id = weekly_assessment
    run_extract(connection_id)
    served.sandbox.clear_log()
    run = run_extract(connection_id, categories=["student_assessment"])
    assert run.status == RunStatus.succeeded and run.params["categories"] == ["student_assessment"]
    assert served.read_count("student_assessment")

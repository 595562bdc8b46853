"""R30 from facts: a school's last year group confirmed by the school, clocks from the day a pupil was last seen in it."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.extract import run_extract
from portal.models import AuditEntry, Role, RunStatus
from portal.models.mis import MisPupil, PupilYearGroupFact
from portal.retention.deadlines import RetentionContext, earliest
from portal.retention.last_year_group import confirm_last_year_group, suggest_last_year_group
from tests.extract_helpers import authorise_all_features, connect, xapp  # noqa: F401 - fixture
from tests.plugins.fake_mis import World, generate

# Year groups in July 2025 (academic year 2024/25), before the summer.
JULY = {"P1": "11", "P2": "12", "P3": "13", "P4": "13", "P5": "10"}


def _store_clock(monkeypatch, at: datetime) -> None:
    """Set the store's clock (the modules that stamp writes and removals) to ``at``."""
    for module in ("write", "removals", "retention"):
        monkeypatch.setattr(f"portal.store.{module}.utcnow", lambda: at)


def _extract_on(monkeypatch, conn, day: date) -> None:
    """Run a full extract as if on that day (the store dates what it sees by its own clock)."""
    _store_clock(monkeypatch, datetime(day.year, day.month, day.day, 2, 30, tzinfo=timezone.utc))
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message


def _deadlines(as_of: date) -> dict[str, tuple[str, date] | None]:
    ctx = RetentionContext.load(as_of)
    out = {}
    for pupil in db.session.execute(select(MisPupil)).scalars():
        due, _ = earliest(ctx.pupil_dues(pupil))
        out[pupil.external_id] = (due.rule_id, due.deadline) if due else None
    return out


@pytest.fixture
def gap_school(xapp, make, tmp_path, monkeypatch):
    """An 11-18 school GIAS calls "Secondary", extracted on 10 July 2025 and next on 1 October 2025 (a gap across September)."""
    school = make.school(phase="Secondary")
    authorise_all_features(school)
    data = generate(pupils=25)  # enough that one missing pupil is not held as a mass removal
    for r in data["records"]:
        if r["kind"] == "pupil":
            r["fields"]["year_group"] = JULY.get(r["fields"]["external_id"], "8")
    world = World(tmp_path / "world.json").save(data)
    conn = connect(school, world.path)
    _extract_on(monkeypatch, conn, date(2025, 7, 10))
    # September: everyone moves up a year; P3 left on 22 July (the MIS says so), P4 left without a leaving date.
    at = datetime(2025, 9, 20, tzinfo=timezone.utc)
    for pid, year in (("P1", "12"), ("P2", "13"), ("P5", "11")):
        world.update("pupil", pid, at, year_group=year)
    world.update("pupil", "P3", at, leaving_date=date(2025, 7, 22))
    world.delete("pupil", "P4", at, feed=False)
    _extract_on(monkeypatch, conn, date(2025, 10, 1))
    return school


def test_r30_fires_only_once_the_school_confirms_its_last_year_group(gap_school, make):
    before = _deadlines(date(2025, 10, 2))
    # Only R29 acts: P3's leaving date, P4 missing from the full extract of 1 October.
    assert before["P3"] == ("R29", date(2026, 1, 22))
    assert before["P4"] == ("R29", date(2026, 4, 1))
    assert before["P1"] is None and before["P2"] is None and before["P5"] is None


def test_r30_an_extract_gap_across_september_deletes_no_one_still_on_roll(gap_school, make):
    admin = make.user(Role.school_admin, gap_school)
    assert suggest_last_year_group(gap_school).value == 13  # the extract sees Year 13 pupils
    confirm_last_year_group(gap_school, admin, 13)
    db.session.commit()
    dues = _deadlines(date(2025, 10, 2))
    # Sixth-formers and Year 11 are on roll: their clocks start only when they are in Year 13.
    assert dues["P1"] == ("R30", date(2028, 2, 29))  # Year 12 in 2025/26 -> Year 13 in 2026/27
    assert dues["P2"] == ("R30", date(2027, 2, 28))  # Year 13 in 2025/26
    assert dues["P5"] == ("R30", date(2029, 2, 28))  # Year 11 in 2025/26 -> Year 13 in 2027/28
    # Left in July from Year 13: R29 from the leaving date wins.
    assert dues["P3"] == ("R29", date(2026, 1, 22))
    # Last seen in Year 13 on 10 July 2025, gone by October without a leaving date: R30 from 2024/25, not from
    # the October run that noticed the absence (which would give R29's 1 April 2026).
    assert dues["P4"] == ("R30", date(2026, 2, 28))
    facts = {(f.nc_year, f.last_seen_on) for f in db.session.execute(
        select(PupilYearGroupFact).join(MisPupil).where(MisPupil.external_id == "P1")).scalars()}
    assert facts == {(11, date(2025, 7, 10)), (12, date(2025, 10, 1))}
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "retention.last_year_group_confirmed")).scalar()
    assert entry.actor_user_id == admin.id and entry.details["last_year_group"] == 13


def test_r30_a_pupil_who_stays_a_second_year_in_the_last_year_group_restarts_the_clock(xapp, make, tmp_path, monkeypatch):
    school = make.school(phase="Primary")
    authorise_all_features(school)
    world = World(tmp_path / "world.json").save(generate(pupils=1))
    world.update("pupil", "P1", datetime(2025, 1, 1, tzinfo=timezone.utc), year_group="6")
    conn = connect(school, world.path)
    confirm_last_year_group(school, make.user(Role.school_admin, school), 6)
    _extract_on(monkeypatch, conn, date(2025, 6, 1))
    assert _deadlines(date(2025, 6, 2))["P1"] == ("R30", date(2026, 2, 28))
    _extract_on(monkeypatch, conn, date(2025, 11, 3))  # still in Year 6 in 2025/26
    assert _deadlines(date(2025, 11, 4))["P1"] == ("R30", date(2027, 2, 28))


def test_r30_the_demo_swept_at_2028_01_30_deletes_only_pupils_due_as_the_rules_are_written(make_app, monkeypatch):
    """The demo's Wonde schools (a primary and an 11-18 academy GIAS calls "Secondary"), extracted on 7 December 2026."""
    sandbox_module = pytest.importorskip("portal_wonde.sandbox")
    from portal import demo
    from portal.retention.calendar import add_months
    from portal.testing.synthetic import generate_school

    schools = [generate_school(1000 + i, pupils=250, days=10, phase=phase, name=name, urn=urn, la_code=la,
                               establishment_number=estab)
               for i, (urn, la, estab, phase, name) in enumerate(sandbox_module.DEMO_SCHOOLS)]
    sweep_on = date(2028, 1, 30)
    with sandbox_module.WondeSandbox(schools) as sandbox:
        app = make_app(PLUGINS=["portal_wonde.plugin"], ENABLED_CONNECTORS=["wonde"], CONNECTORS={"wonde": sandbox.settings})
        with app.app_context():
            result = demo.build_demo()
            connections = demo.connect_sandbox_schools(result.schools)
            demo.authorise_demo_product(result.schools)
            db.session.commit()
            _store_clock(monkeypatch, datetime(2026, 12, 7, 2, 30, tzinfo=timezone.utc))
            assert all("succeeded" in line for line in demo.first_extracts(connections))
            academy = result.organisations["academy"]
            assert suggest_last_year_group(academy).value == 13  # not 11 from "Secondary"
            for conn in connections:
                school = db.session.get(type(academy), conn.school_id)
                admin = next(u for u, role, key in result.users if role == Role.school_admin and result.organisations[key].id == school.id)
                confirm_last_year_group(school, admin, suggest_last_year_group(school).value)
            db.session.commit()
            last = {conn.school_id: suggest_last_year_group(db.session.get(type(academy), conn.school_id)).value
                    for conn in connections}
            ctx = RetentionContext.load(sweep_on)
            due, expected = set(), set()
            for pupil in db.session.execute(select(MisPupil)).scalars():
                found, _ = earliest(ctx.pupil_dues(pupil))
                if found is not None and found.due_on <= sweep_on:
                    due.add(pupil.id)
                # The rules as written, worked out here: R29 six months after a leaving date that has passed (less
                # the 30-day backup window, R35), or R30 for a pupil in the school's last year group in 2026/27.
                left = pupil.leaving_date is not None and pupil.leaving_date <= sweep_on and \
                    add_months(pupil.leaving_date, 6) - timedelta(days=30) <= sweep_on
                completing = pupil.year_group == str(last[pupil.school_id]) and (
                    pupil.leaving_date is None or pupil.leaving_date >= date(2026, 12, 7))  # on roll when seen
                if left or completing:
                    expected.add(pupil.id)
            assert due == expected and due
            on_roll_sixth_form = db.session.execute(select(MisPupil.id).where(
                MisPupil.school_id == academy.id, MisPupil.year_group == "12", MisPupil.leaving_date.is_(None))).scalars().all()
            assert on_roll_sixth_form and not set(on_roll_sixth_form) & due

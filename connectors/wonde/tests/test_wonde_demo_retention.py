"""R30 on the demo's Wonde schools: swept on a given day, only the pupils the rules make due are deleted."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from sqlalchemy import select

from portal import demo
from portal.extensions import db
from portal.models import Role
from portal.models.mis import MisPupil
from portal.retention.calendar import add_months
from portal.retention.deadlines import RetentionContext, earliest
from portal.retention.last_year_group import confirm_last_year_group, suggest_last_year_group
from portal.sandbox.synthetic import generate_school
from portal_wonde.sandbox import DEMO_SCHOOLS, WondeSandbox


def test_r30_the_demo_swept_at_2028_01_30_deletes_only_pupils_due_as_the_rules_are_written(make_app, monkeypatch):
    """The demo's Wonde schools (a primary and an 11-18 academy GIAS calls "Secondary"), extracted on 7 December 2026."""
    schools = [generate_school(1000 + i, pupils=250, days=10, phase=phase, name=name, urn=urn, la_code=la,
                               establishment_number=estab)
               for i, (urn, la, estab, phase, name) in enumerate(DEMO_SCHOOLS)]
    sweep_on = date(2028, 1, 30)
    with WondeSandbox(schools) as sandbox:
        app = make_app(PLUGINS=["portal_wonde.plugin"], ENABLED_CONNECTORS=["wonde"], CONNECTORS={"wonde": sandbox.settings})
        with app.app_context():
            result = demo.build_demo()
            connections = demo.connect_sandbox_schools(result.schools)
            demo.authorise_demo_product(result.schools)
            db.session.commit()
            for module in ("write", "removals", "retention"):  # the store modules that stamp writes and removals
                monkeypatch.setattr(f"portal.store.{module}.utcnow", lambda: datetime(2026, 12, 7, 2, 30, tzinfo=timezone.utc))
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

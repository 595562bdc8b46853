"""R22: two missed days in a row of a daily category alert the school's admins and the operator's support staff, once."""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from portal import alerts, mail
from portal.connectors import CATEGORIES
from portal.extensions import db
from portal.extract.plan import cadence, granted_categories
from portal.models import EXTRACTABLE_STATES, Connection, FreshnessAlert, Organisation, User
from portal.school import queries

log = logging.getLogger(__name__)

ALERT_AFTER_MISSED_DAYS = 2


def _daily_categories(connection: Connection) -> list[str]:
    granted = granted_categories(connection)
    return [c for c in CATEGORIES if c in granted and cadence(c) == "daily"]


def check(today: date | None = None) -> dict[str, int]:
    """Record and send the alerts due today; an alert already sent for the same gap is never sent again."""
    today = today or queries.today_london()
    connections = db.session.execute(select(Connection).where(Connection.state.in_(EXTRACTABLE_STATES),
                                                              Connection.paused.is_(False))).scalars().all()
    new: dict[int, list[FreshnessAlert]] = defaultdict(list)
    for connection in connections:
        categories = _daily_categories(connection)
        if not categories:
            continue
        fresh = queries.freshness(connection.school, categories, today)
        for category, item in fresh.items():
            # Before the first success, the gap runs from the day the connection became extractable.
            last_day = queries.london_date(item.last_success or connection.state_changed_at)
            missed = max(0, (today - last_day).days - 1)
            if missed < ALERT_AFTER_MISSED_DAYS:
                continue
            alert = FreshnessAlert(school_id=connection.school_id, category=category, last_success_on=last_day,
                                   missed_days=missed)
            try:
                with db.session.begin_nested():  # a second process (or an earlier check) already alerted: skip
                    db.session.add(alert)
            except IntegrityError:
                continue
            new[connection.school_id].append(alert)
    sent = 0
    for school_id, items in new.items():
        school = db.session.get(Organisation, school_id)
        sent += _send(school, items)
    db.session.commit()
    return {"schools": len(new), "alerts": sum(len(v) for v in new.values()), "messages": sent}


def _send(school: Organisation, items: list[FreshnessAlert]) -> int:
    """One message to the school's admins and one to support staff; category names, days and links only (R65)."""
    lines = "\n".join(f"- {i.category}: no successful extract since {i.last_success_on.isoformat()} "
                      f"({i.missed_days} days missed)" for i in items)
    subject = f"Data not updated for {ALERT_AFTER_MISSED_DAYS} days or more: {school.name}"
    base = current_app.config["BASE_URL"].rstrip("/")
    body = (f"The portal has not extracted these daily categories for {school.name}:\n{lines}\n\n"
            "Products are being served older data. Support staff are looking into it; check the connection.\n\n"
            f"Data use: {base}/schools/{school.id}/data-use\n")
    sent = int(alerts._send(school, subject, body, organisation=school.id))
    staff = sorted(set(db.session.execute(select(User.email).where(User.is_support.is_(True), User.active.is_(True))).scalars()))
    if staff:
        mail.send(staff, subject, body.replace(f"{base}/schools/{school.id}/data-use", f"{base}/admin/operations/?q={school.urn or ''}")
                  + alerts._FOOTER)
        sent += 1
    log.info("freshness alert for organisation %s: %s categories", school.id, len(items))
    return sent

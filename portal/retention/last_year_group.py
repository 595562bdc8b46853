"""A school's last year group (R30): suggested from facts, confirmed by a school admin or support, never from a phase label."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import Organisation, User
from portal.models.base import utcnow
from portal.models.mis import MisPupil
from portal.models.retention import SchoolRetentionSetting
from portal.retention.deadlines import LAST_NC_YEAR, last_year_group_for_age, parse_year_group

__all__ = ["Suggestion", "YEAR_GROUP_CHOICES", "confirm_last_year_group", "confirmed_last_year_group", "suggest_last_year_group"]

# The values a school can confirm: Reception (a nursery-and-reception school) to Year 13.
YEAR_GROUP_CHOICES = [(0, "Reception")] + [(n, f"Year {n}") for n in range(1, LAST_NC_YEAR + 1)]


@dataclass(frozen=True)
class Suggestion:
    """What the portal knows about a school's last year group, for the admin to confirm."""

    value: int | None
    highest_seen: int | None  # the highest NC year group among pupils the extracts hold on roll
    from_age_range: int | None  # what the GIAS statutory high age implies


def suggest_last_year_group(school: Organisation) -> Suggestion:
    """Return the pre-fill: the higher of the year groups the extract sees and the GIAS statutory age range.

    The higher one, because a value too low would start deadlines for pupils still on roll (a sixth form
    GIAS records separately from the phase), while one too high only leaves R29 and R31 to act.
    """
    values = db.session.execute(
        select(MisPupil.year_group).where(MisPupil.school_id == school.id, MisPupil.deleted_at.is_(None)).distinct()
    ).scalars()
    years = [y for y in (parse_year_group(v) for v in values) if y is not None and 0 <= y <= LAST_NC_YEAR]
    highest = max(years) if years else None
    from_age = last_year_group_for_age(school.statutory_high_age)
    known = [v for v in (highest, from_age) if v is not None]
    return Suggestion(max(known) if known else None, highest, from_age)


def confirmed_last_year_group(school: Organisation) -> SchoolRetentionSetting | None:
    """Return the school's confirmed setting, or None while R30 waits for it."""
    return db.session.get(SchoolRetentionSetting, school.id)


def confirm_last_year_group(school: Organisation, user: User, value: int) -> SchoolRetentionSetting:
    """Record the school's last year group as confirmed by this user; the next sweep starts R30 clocks from it."""
    if value not in dict(YEAR_GROUP_CHOICES):
        raise ValueError(f"{value} is not a year group")
    setting = confirmed_last_year_group(school)
    previous = setting.last_year_group if setting else None
    if setting is None:
        setting = SchoolRetentionSetting(school_id=school.id, last_year_group=value)
        db.session.add(setting)
    setting.last_year_group = value
    setting.confirmed_by_id = user.id
    setting.confirmed_at = utcnow()
    db.session.flush()
    audit.record("retention.last_year_group_confirmed", organisation_id=school.id, target=school,
                 actor_user_id=user.id, actor=f"user:{user.id}", details={"last_year_group": value, "previous": previous})
    return setting

"""Product feed reads: one page of a school's records of one record type for an allowed read (R11, R13, R51, R68, R73, R74)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import and_, bindparam, func, or_, select, tuple_

from portal import audit
from portal.extensions import db
from portal.models import (
    EXTRACTABLE_STATES, Connection, FlagKind, JobRun, RunStatus, SubjectFlag, SubjectFlagFeature, SubjectKind, mis,
)
from portal.models.base import utcnow
from portal.models.mis import MisPupil


# Every product read of pupil or staff data comes through read_feed(), after portal.api.purpose.check_read()
# has allowed it (R11); each call writes one audit entry with feature, category, school and count, never
# field values (R68). The caller records which subjects the product received (portal.deletions).


# The feed's record types: name in the URL -> (store model, the category it belongs to).
def api_record_types() -> dict[str, tuple[type, str]]:
    """Return each record type the product API serves, with its store model and category."""
    return {
        "pupils": (mis.MisPupil, "student_basic"),
        "demographics": (mis.MisDemographics, "student_demographics"),
        "subjects": (mis.MisSubject, "student_timetable"),
        "groups": (mis.MisGroup, "student_timetable"),
        "memberships": (mis.MisMembership, "student_timetable"),
        "lessons": (mis.MisLesson, "student_timetable"),
        "assessment_results": (mis.MisAssessmentResult, "student_assessment"),
        "attendance_marks": (mis.MisAttendanceMark, "student_attendance_exclusions"),
        "exclusions": (mis.MisExclusion, "student_attendance_exclusions"),
        "staff": (mis.MisStaff, "staff_basic"),
    }


# Columns that locate a row in the portal rather than describe the subject; the envelope carries what consumers need.
API_ENVELOPE_COLUMNS = frozenset(
    {"id", "school_id", "connection_id", "category", "external_id", "provider_updated_at", "extracted_at",
     "deleted_at", "data_type", "content_hash", "seen_run_id"}
)


def api_field_columns(model: type) -> list:
    """Return the columns a record of this model shows in its "fields" object, in table order."""
    return [c for c in model.__table__.columns if c.name not in API_ENVELOPE_COLUMNS]


@dataclass
class FeedPage:
    """One page of a product feed: the records, the position of the last one (None when empty) and the stored rows.

    ``rows`` are the page's rows as stored (ids, pupil ids, tombstones), for the caller to record which
    subjects the product received (R42, ``portal.deletions.record_received``); they never leave the portal.
    """

    records: list[dict]
    last_changed_at: datetime | None
    last_id: int | None
    has_more: bool
    rows: list = field(default_factory=list)


def _is_dated(column) -> bool:
    try:
        return issubclass(column.type.python_type, (date, datetime))
    except NotImplementedError:
        return False


def json_value(value):
    """Return a stored value as JSON carries it: dates and times in ISO 8601, enums by their value."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value
    return value


def _feed_horizon(school_id: int, now: datetime):
    """Return the time before which every stored change of the school is committed.

    A running extract writes rows stamped at or after its start, and may commit them later than rows
    a consumer has already paged past; serving only rows stamped before the earliest running extract
    started keeps the keyset (extracted_at, id) gap-free while extracts write.
    """
    started = db.session.execute(
        select(func.min(func.coalesce(JobRun.started_at, JobRun.claimed_at)))
        .join(Connection, Connection.id == JobRun.connection_id)
        .where(
            Connection.school_id == school_id,
            JobRun.status == RunStatus.running,
            # A run whose lease lapsed has died; its committed rows should not be held back for ever.
            or_(JobRun.lease_expires_at.is_(None), JobRun.lease_expires_at > now),
        )
    ).scalar()
    return min(started, now) if started is not None else now


def read_feed(grant, record_type: str, *, after: tuple[datetime, int] | None = None,
              updated_since: datetime | None = None, limit: int = 1000, now: datetime | None = None) -> FeedPage:
    """Return one page of a school's records of one type for an allowed read (a portal.api.purpose.ReadGrant).

    Rows come in (extracted_at, id) order after ``after``; tombstones are included so consumers delete
    too; rows from connections that are not live, restricted subjects (R51) and, for current-students
    features, pupils not on roll (R13) are left out; special-category fields are withheld without a
    policy document (R73) or after the pupil's written objection (R74). Writes one audit entry.
    """
    model, category = api_record_types()[record_type]
    if category != grant.category_id:
        raise ValueError(f"{record_type} records are not in the category {grant.category_id}")
    now = now or utcnow()
    horizon = _feed_horizon(grant.school_id, now)

    def flagged(kind: FlagKind, subject: SubjectKind):
        query = select(SubjectFlag.external_id).where(
            SubjectFlag.school_id == grant.school_id, SubjectFlag.subject_kind == subject,
            SubjectFlag.kind == kind, SubjectFlag.lifted_at.is_(None),
        )
        if kind is FlagKind.restricted:
            # R51: a restriction naming features holds for those features only; one naming none, for all.
            named = select(SubjectFlagFeature.flag_id).where(SubjectFlagFeature.flag_id == SubjectFlag.id)
            query = query.where(or_(~named.exists(), named.where(SubjectFlagFeature.feature_id == grant.feature_id).exists()))
        return query

    # Core rows, not ORM objects: a 10,000-record page is read several times faster this way.
    table = model.__table__
    # Rows of a live connection, asked per row (EXISTS on the connection's key) rather than as "connection_id IN
    # (the school's live connections)": the database cannot tell that a school's rows are its connections' rows,
    # takes that IN for a filter that leaves a handful, and sorts all of the school's rows for every page
    # instead of reading one page in (school_id, extracted_at, id) order. A row's school is its connection's.
    live_connection = select(Connection.id).where(
        Connection.id == model.connection_id, Connection.state.in_(EXTRACTABLE_STATES)
    ).exists()
    query = select(*table.columns).where(
        model.school_id == grant.school_id,
        live_connection,
        model.extracted_at < horizon,
    )
    if updated_since is not None:
        query = query.where(model.extracted_at >= updated_since)
    if after is not None:
        # A row comparison, not "a > x OR (a = x AND id > y)": the database seeks to the position in the
        # (school_id, extracted_at, id) index instead of reading the school's rows from the start.
        query = query.where(tuple_(model.extracted_at, model.id) > tuple_(
            bindparam(None, after[0], type_=model.extracted_at.type), bindparam(None, after[1], type_=model.id.type)))
    # R51: restricted subjects are kept in sync but never leave to a product.
    if model is MisPupil:
        query = query.where(model.external_id.not_in(flagged(FlagKind.restricted, SubjectKind.pupil)))
    elif hasattr(model, "pupil_external_id"):
        query = query.where(model.pupil_external_id.not_in(flagged(FlagKind.restricted, SubjectKind.pupil)))
    elif record_type == "staff":
        query = query.where(model.external_id.not_in(flagged(FlagKind.restricted, SubjectKind.staff)))
    # R13: on roll means admitted on or before the day and not left on or before it. Tombstones still
    # flow, so a consumer deletes what it holds.
    if grant.on_roll_only and (model is MisPupil or hasattr(model, "pupil_id")):
        on_roll = and_(
            or_(MisPupil.admission_date.is_(None), MisPupil.admission_date <= grant.on),
            or_(MisPupil.leaving_date.is_(None), MisPupil.leaving_date > grant.on),
        )
        if model is not MisPupil:
            query = query.join(MisPupil, MisPupil.id == model.pupil_id)
        query = query.where(or_(model.deleted_at.is_not(None), on_roll))
    rows = list(db.session.execute(query.order_by(model.extracted_at, model.id).limit(limit + 1)).mappings())
    has_more = len(rows) > limit
    rows = rows[:limit]

    special = [c.name for c in model.__table__.columns if c.info.get("special_category")]
    objecting: set[str] = set()
    if special and rows:
        objecting = set(db.session.execute(
            flagged(FlagKind.special_category_objection, SubjectKind.pupil)
            .where(SubjectFlag.external_id.in_({r["pupil_external_id"] for r in rows}))
        ).scalars())
    columns = api_field_columns(model)
    records = []
    tombstones = 0
    # Only date and time columns need converting for JSON; decide per column once, not per value.
    dated = {c.name for c in columns if _is_dated(c)}
    plain = [c.name for c in columns if c.name not in dated]
    for row in rows:
        record = {
            "id": row["id"],
            "external_id": row["external_id"],
            "category": category,
            "data_type": row["data_type"],
            "provider_updated_at": json_value(row["provider_updated_at"]),
            "changed_at": row["extracted_at"].isoformat(),
            "deleted": row["deleted_at"] is not None,
            "deleted_at": json_value(row["deleted_at"]),
        }
        if row["deleted_at"] is not None:
            tombstones += 1
            record["fields"] = None
        else:
            fields = {name: row[name] for name in plain}
            for name in dated:
                value = row[name]
                fields[name] = None if value is None else value.isoformat()
            if special:
                # R73 before R74: without a policy document nobody's fields are served.
                reason = ("no_policy_document" if grant.policy_document is None
                          else "objection" if row["pupil_external_id"] in objecting else None)
                if reason:
                    fields.update(dict.fromkeys(special))
                record["withheld"] = reason
            record["fields"] = fields
        records.append(record)
    audit.record(
        "api.read",
        organisation_id=grant.school_id,
        target_type="products",
        target_id=grant.product_id,
        actor=grant.actor,
        details={"feature": grant.feature_id, "category": category, "record_type": record_type,
                 "count": len(records), "tombstones": tombstones},
    )
    last = rows[-1] if rows else None
    return FeedPage(records, last["extracted_at"] if last else None, last["id"] if last else None, has_more, rows)

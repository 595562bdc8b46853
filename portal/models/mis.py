"""The MIS store: canonical, provider-neutral tables for the six categories, plus extract bookkeeping."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow

__all__ = [
    "DATA_TYPES",
    "EncryptedBoolean",
    "ExtractRemoval",
    "ExtractWatermark",
    "MisAssessmentResult",
    "MisAttendanceMark",
    "MisDemographics",
    "MisExclusion",
    "MisGroup",
    "MisLesson",
    "MisMembership",
    "MisPupil",
    "MisStaff",
    "MisSubject",
    "PupilYearGroupFact",
    "STORE_MODELS",
    "special_category_columns",
]

# R16: provenance of a stored record. Everything a school's MIS supplies is "customer".
DATA_TYPES = ("customer", "government", "operator")
SPECIAL = {"special_category": True}


class EncryptedBoolean(EncryptedText):
    """A yes/no special-category value, encrypted at rest like any other special-category field."""

    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        return super().process_bind_param("true" if value else "false", dialect)

    def process_result_value(self, value: Any, dialect: Any) -> bool | None:
        plain = super().process_result_value(value, dialect)
        return None if plain is None else plain == "true"


class StoreRow:
    """Columns every store table has: school, connection, category, sync keys and provenance."""

    id: Mapped[int] = mapped_column(primary_key=True)
    category: Mapped[str] = mapped_column(String(60))
    external_id: Mapped[str] = mapped_column(String(200))
    # Not indexed: nothing looks rows up or orders them by it, and every row written paid for the index.
    provider_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    extracted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Tombstone: deleted upstream (or missing from a complete full extract), kept until retention.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    data_type: Mapped[str] = mapped_column(String(20), default="customer")
    # Keyed hash of the record's values: tells "changed" from "unchanged" without decrypting.
    content_hash: Mapped[str] = mapped_column(String(64))
    # The last extract run that received this record; a complete full run tombstones rows it did not see.
    seen_run_id: Mapped[int | None] = mapped_column(Integer)

    @declared_attr
    def school_id(cls) -> Mapped[int]:
        # No foreign key of its own: the connection is the school's (connections.school_id cascades from
        # the organisation, and connection_id from the connection), so deleting a school still deletes
        # every row. A key here cost a check per row written (a tenth of a large extract's writes).
        return mapped_column(Integer)

    @declared_attr
    def connection_id(cls) -> Mapped[int]:
        return mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))

    @declared_attr.directive
    def __table_args__(cls) -> tuple:
        name = cls.__tablename__
        return (
            UniqueConstraint("connection_id", "external_id"),
            # deleted_at too, so the data-use page counts a school's live records per category from the
            # index alone (an index-only scan), never visiting the table's rows.
            Index(f"ix_{name}_school_category_deleted", "school_id", "category", "deleted_at"),
        )


class AboutPupil:
    """Columns of tables about one pupil: deleting the pupil deletes these rows (R34)."""

    pupil_external_id: Mapped[str] = mapped_column(String(200))

    @declared_attr
    def pupil_id(cls) -> Mapped[int]:
        return mapped_column(ForeignKey("mis_pupils.id", ondelete="CASCADE"), index=True)


class MisPupil(StoreRow, db.Model):
    """student_basic: a pupil on (or recently off) the school's roll."""

    __tablename__ = "mis_pupils"

    legal_forename: Mapped[str | None] = mapped_column(String(200))
    legal_surname: Mapped[str | None] = mapped_column(String(200))
    preferred_forename: Mapped[str | None] = mapped_column(String(200))
    preferred_surname: Mapped[str | None] = mapped_column(String(200))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    gender: Mapped[str | None] = mapped_column(String(20))
    upn: Mapped[str | None] = mapped_column(String(13))
    year_group: Mapped[str | None] = mapped_column(String(10))
    registration_group: Mapped[str | None] = mapped_column(String(100))
    admission_date: Mapped[date | None] = mapped_column(Date)
    leaving_date: Mapped[date | None] = mapped_column(Date)


class MisDemographics(AboutPupil, StoreRow, db.Model):
    """student_demographics: census data for one pupil; special-category fields encrypted (R71, R75)."""

    __tablename__ = "mis_demographics"

    fsm: Mapped[bool | None] = mapped_column(Boolean)
    fsm_ever6: Mapped[bool | None] = mapped_column(Boolean)
    pupil_premium: Mapped[bool | None] = mapped_column(Boolean)
    sen_status: Mapped[str | None] = mapped_column(EncryptedText(), info=SPECIAL)
    sen_need: Mapped[str | None] = mapped_column(EncryptedText(), info=SPECIAL)
    first_language: Mapped[str | None] = mapped_column(EncryptedText(), info=SPECIAL)
    eal: Mapped[bool | None] = mapped_column(EncryptedBoolean(), info=SPECIAL)
    ethnicity: Mapped[str | None] = mapped_column(EncryptedText(), info=SPECIAL)
    looked_after: Mapped[bool | None] = mapped_column(Boolean)
    ever_in_care: Mapped[bool | None] = mapped_column(Boolean)
    service_child: Mapped[bool | None] = mapped_column(Boolean)


class MisSubject(StoreRow, db.Model):
    """student_timetable: a subject taught at the school."""

    __tablename__ = "mis_subjects"

    code: Mapped[str | None] = mapped_column(String(50))
    name: Mapped[str | None] = mapped_column(String(200))


class MisGroup(StoreRow, db.Model):
    """student_timetable: a class, registration group or other teaching group."""

    __tablename__ = "mis_groups"

    name: Mapped[str | None] = mapped_column(String(200))
    group_type: Mapped[str | None] = mapped_column(String(20))
    subject_external_id: Mapped[str | None] = mapped_column(String(200))


class MisMembership(AboutPupil, StoreRow, db.Model):
    """student_timetable: a pupil's membership of a group."""

    __tablename__ = "mis_memberships"

    group_external_id: Mapped[str] = mapped_column(String(200))


class MisLesson(StoreRow, db.Model):
    """student_timetable: one timetabled lesson of a group."""

    __tablename__ = "mis_lessons"

    group_external_id: Mapped[str | None] = mapped_column(String(200))
    period_name: Mapped[str | None] = mapped_column(String(100))
    day_of_week: Mapped[int | None] = mapped_column(Integer)
    starts_at: Mapped[str | None] = mapped_column(String(5))
    ends_at: Mapped[str | None] = mapped_column(String(5))
    lesson_date: Mapped[date | None] = mapped_column(Date)


class MisAssessmentResult(AboutPupil, StoreRow, db.Model):
    """student_assessment: one statutory or current assessment result."""

    __tablename__ = "mis_assessment_results"

    stage: Mapped[str | None] = mapped_column(String(40))
    statutory: Mapped[bool] = mapped_column(Boolean, default=False)
    aspect: Mapped[str | None] = mapped_column(String(200))
    template: Mapped[str | None] = mapped_column(String(200))
    result: Mapped[str | None] = mapped_column(String(100))
    result_date: Mapped[date | None] = mapped_column(Date)


class MisAttendanceMark(AboutPupil, StoreRow, db.Model):
    """student_attendance_exclusions: one mark per pupil per session, with its DfE code (R77)."""

    __tablename__ = "mis_attendance_marks"

    session_date: Mapped[date | None] = mapped_column(Date)
    session: Mapped[str] = mapped_column(String(2))
    code: Mapped[str] = mapped_column(String(2))


class MisExclusion(AboutPupil, StoreRow, db.Model):
    """student_attendance_exclusions: a suspension or permanent exclusion."""

    __tablename__ = "mis_exclusions"

    exclusion_type: Mapped[str | None] = mapped_column(String(20))
    start_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    sessions: Mapped[int | None] = mapped_column(Integer)


class MisStaff(StoreRow, db.Model):
    """staff_basic: a member of staff (no special-category data about staff, R76)."""

    __tablename__ = "mis_staff"

    title: Mapped[str | None] = mapped_column(String(40))
    forename: Mapped[str | None] = mapped_column(String(200))
    surname: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    currently_employed: Mapped[bool | None] = mapped_column(Boolean)


class PupilYearGroupFact(db.Model):
    """A dated fact an extract recorded: the pupil was in this NC year group, first and last seen on these days (R30).

    Not a store table (no "mis_" prefix): bookkeeping about the pupil, deleted with the pupil (R34) and
    exported with them (R48). R30's clock reads these dates, never a row's extract timestamp.
    """

    __tablename__ = "pupil_year_group_facts"
    __table_args__ = (UniqueConstraint("pupil_id", "nc_year"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pupil_id: Mapped[int] = mapped_column(ForeignKey("mis_pupils.id", ondelete="CASCADE"), index=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    # The NC year as a number (Reception 0), see portal.retention.deadlines.parse_year_group.
    nc_year: Mapped[int] = mapped_column(Integer)
    first_seen_on: Mapped[date] = mapped_column(Date)
    last_seen_on: Mapped[date] = mapped_column(Date)


# Record kind (portal.connectors.Record.kind) -> its store model.
STORE_MODELS: dict[str, type[db.Model]] = {
    "pupil": MisPupil,
    "demographics": MisDemographics,
    "subject": MisSubject,
    "group": MisGroup,
    "membership": MisMembership,
    "lesson": MisLesson,
    "assessment_result": MisAssessmentResult,
    "attendance_mark": MisAttendanceMark,
    "exclusion": MisExclusion,
    "staff": MisStaff,
}


def special_category_columns(table: Table) -> list[str]:
    """Return the names of the table's special-category columns."""
    return [c.name for c in table.columns if c.info.get("special_category")]


class ExtractWatermark(db.Model):
    """Per (connection, category): the time from which the next incremental run asks for changes."""

    __tablename__ = "extract_watermarks"

    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True)
    category: Mapped[str] = mapped_column(String(60), primary_key=True)
    watermark: Mapped[datetime] = mapped_column(UTCDateTime())
    run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConnectorSyncState(db.Model):
    """Per (connection, key): a connector's position at the provider after the last successful run (e.g. Groupcall's
    NextChangedRows per read), so an incremental run in any process asks only for what changed since.

    A run keeps what its pages yield in its own stats (committed with each page, so a resumed run has
    them); a successful run writes them here, with its watermarks. A failed run leaves the previous
    values: asking again from an older position returns a superset of the changes, never fewer.
    """

    __tablename__ = "connector_sync_state"

    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ExtractRemoval(db.Model):
    """A removal a run found (deletions feed or full-pull reconciliation), staged until it is applied.

    Staging lets the mass-removal hold (and a resumed run) see every removal before any is applied.
    """

    __tablename__ = "extract_removals"
    __table_args__ = (UniqueConstraint("run_id", "kind", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    external_id: Mapped[str] = mapped_column(String(200))
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime())

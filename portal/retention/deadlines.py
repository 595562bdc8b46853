"""Deadlines per record: each rule's clock for a pupil, staff member or connection, the earliest winning (R24–R40)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flask import current_app
from sqlalchemy import select

from portal.dfe import parse_year_group
from portal.extensions import db
from portal.models import Connection, ConnectionState, Subscription
from portal.models.mis import MisPupil, PupilYearGroupFact
from portal.models.retention import DeletionOrder, DfeAgreement, LegalHold, RetentionRule, SchoolRetentionSetting
from portal.retention.calendar import BankHolidays, london_date
from portal.retention.rules import deadline_for

__all__ = ["Due", "RetentionContext", "earliest", "last_year_group_for_age", "parse_year_group"]

# R30: the last year group a school's statutory high age (GIAS) suggests: pupils leave Year N at age N + 5.
# Only a suggestion shown on the Deletion page; R30 fires only once a school admin has confirmed a value.
LAST_NC_YEAR = 13


def last_year_group_for_age(high_age: int | None) -> int | None:
    """Return the last NC year group of a school whose statutory high age is given (11 -> 6, 16 -> 11, 18 -> 13)."""
    if high_age is None or high_age < 5:
        return None
    return min(high_age - 5, LAST_NC_YEAR)


@dataclass(frozen=True, order=True)
class Due:
    """When one rule deletes one record: the sweep date (due_on) first, so the earliest compares lowest."""

    due_on: date
    deadline: date
    trigger_on: date
    rule_id: str


@dataclass
class RetentionContext:
    """Everything a sweep or preview needs besides the records, loaded once per run."""

    as_of: date
    backup_days: int
    bank_holidays: BankHolidays
    rules: dict[str, list[RetentionRule]]
    rules_by_id: dict[str, RetentionRule]
    dfe_agreement_end: date | None
    subscription_end: dict[int, date]
    last_year_group: dict[int, int]
    revoked_on: dict[int, date]
    orders: dict[int, list[DeletionOrder]]
    holds: dict[tuple[str, int], date] = field(default_factory=dict)
    # R30 facts per connection, loaded when the first pupil of that connection needs them.
    _year_facts: dict[int, dict[int, dict[int, date]]] = field(default_factory=dict)

    @classmethod
    def load(cls, as_of: date) -> RetentionContext:
        """Load the enabled rules, the clocks held outside the store and the active legal holds."""
        cfg = current_app.config
        rules: dict[str, list[RetentionRule]] = defaultdict(list)
        rules_by_id = {}
        for rule in db.session.execute(select(RetentionRule).order_by(RetentionRule.id)).scalars():
            rules_by_id[rule.id] = rule
            if rule.enabled:
                rules[f"{rule.covers}:{rule.clock}"].append(rule)
        agreement = db.session.execute(
            select(DfeAgreement).where(DfeAgreement.ends_on.is_not(None)).order_by(DfeAgreement.id.desc()).limit(1)
        ).scalar()
        return cls(
            as_of=as_of,
            backup_days=int(cfg.get("RETENTION_BACKUP_WINDOW_DAYS", 30)),
            bank_holidays=BankHolidays(bool(cfg.get("RETENTION_BANK_HOLIDAYS", True))),
            rules=dict(rules),
            rules_by_id=rules_by_id,
            dfe_agreement_end=agreement.ends_on if agreement else None,
            subscription_end=_subscription_ends(),
            last_year_group=_last_year_groups(),
            revoked_on=_revocations(),
            orders=_open_orders(),
            holds=_holds(),
        )

    # -- one rule

    def due(self, rule: RetentionRule, trigger: date) -> Due:
        """Return when the rule deletes a record whose clock started on the trigger date (R24, R35)."""
        deadline = deadline_for(rule, trigger, self.bank_holidays)
        if rule.timing == "asap":
            # R28: by the first sweep after the trigger, and in any case by the deadline.
            due_on = min(deadline, trigger + timedelta(days=1))
        elif rule.timing == "deadline":
            due_on = deadline
        else:
            # R35: live data goes B days before the deadline, so no backup outlives it; never before the clock starts.
            due_on = max(trigger, deadline - timedelta(days=self.backup_days))
        return Due(due_on, deadline, trigger, rule.id)

    def _each(self, key: str, trigger: date | None) -> list[Due]:
        if trigger is None:
            return []
        return [self.due(rule, trigger) for rule in self.rules.get(key, ())]

    # -- clocks shared by every record of a school or connection

    def school_dues(self, school_id: int, connection_id: int, category: str | None = None) -> list[Due]:
        """Return the deadlines every record of the connection has (R31, R32, deletion orders)."""
        dues = self._each("school:subscription_end", self.subscription_end.get(school_id))
        dues += self._each("connection:connection_revoked", self.revoked_on.get(connection_id))
        for order in self.orders.get(school_id, ()):
            if order.connection_id not in (None, connection_id):
                continue
            if order.categories and category is not None and category not in order.categories:
                continue
            rule = self.rules_by_id[order.rule_id]
            dues.append(Due(order.due_on, deadline_for(rule, order.trigger_on, self.bank_holidays), order.trigger_on, rule.id))
        return dues

    def order_for(self, school_id: int, connection_id: int, due: Due) -> int | None:
        """Return the id of the deletion order a Due came from, if it came from one."""
        for order in self.orders.get(school_id, ()):
            if order.rule_id == due.rule_id and order.trigger_on == due.trigger_on and order.connection_id in (None, connection_id):
                return order.id
        return None

    # -- one pupil

    def pupil_dues(self, pupil) -> list[Due]:
        """Return every applicable deadline of one pupil row (R27–R33); the caller takes the earliest."""
        if pupil.data_type == "government":
            dues = self._each("government:date_of_birth", pupil.date_of_birth)
            dues += self._each("government:dfe_agreement_end", self.dfe_agreement_end)
            return dues
        dues = self._each("pupil:left", self.left_on(pupil))
        dues += self._each("pupil:key_stage_completed", self.key_stage_completed_on(pupil))
        dues += self.school_dues(pupil.school_id, pupil.connection_id, "student_basic")
        return dues

    def left_on(self, pupil) -> date | None:
        """Return T_left (R29): the MIS leaving date once passed, else the extract that stopped returning the pupil."""
        if pupil.leaving_date is not None and pupil.leaving_date <= self.as_of:
            return pupil.leaving_date
        if pupil.deleted_at is not None:
            return london_date(pupil.deleted_at)
        return None

    def key_stage_completed_on(self, pupil) -> date | None:
        """Return 31 August of the academic year the pupil is in the school's last year group (R30).

        Only for a school whose last year group is confirmed, and only from dated facts the extracts
        recorded: the last day the pupil was seen in that year group; failing that, the latest day seen
        in a lower year group, advanced by one year group each 1 September (privacy-rules.md, R30).
        """
        last = self.last_year_group.get(pupil.school_id)
        if last is None:
            return None
        facts = self.year_facts(pupil.connection_id).get(pupil.id)
        if not facts:
            return None
        if last in facts:
            academic_year = _academic_year(facts[last])
        else:
            below = [(seen, year) for year, seen in facts.items() if year < last]
            if not below:
                return None
            seen, year = max(below)
            academic_year = _academic_year(seen) + (last - year)
        return date(academic_year + 1, 8, 31)

    def year_facts(self, connection_id: int) -> dict[int, dict[int, date]]:
        """Return {pupil id: {NC year: last day seen in it}} for one connection's pupils (loaded once)."""
        if connection_id not in self._year_facts:
            out: dict[int, dict[int, date]] = defaultdict(dict)
            rows = db.session.execute(
                select(PupilYearGroupFact.pupil_id, PupilYearGroupFact.nc_year, PupilYearGroupFact.last_seen_on)
                .join(MisPupil, MisPupil.id == PupilYearGroupFact.pupil_id)
                .where(MisPupil.connection_id == connection_id)
            )
            for pupil_id, year, seen in rows:
                out[pupil_id][year] = seen
            self._year_facts[connection_id] = dict(out)
        return self._year_facts[connection_id]

    # -- one staff member

    def staff_dues(self, staff) -> list[Due]:
        """Return every applicable deadline of one staff row (R39, R31, R32)."""
        left = None
        if staff.deleted_at is not None:
            left = london_date(staff.deleted_at)
        elif staff.currently_employed is False:
            # The provider's change time is when the MIS stopped showing them employed.
            left = london_date(staff.provider_updated_at or staff.extracted_at)
        dues = self._each("staff:staff_left", left)
        dues += self.school_dues(staff.school_id, staff.connection_id, "staff_basic")
        return dues

    def tombstone_dues(self, deleted_at: datetime) -> list[Due]:
        """Return the deadlines of a row deleted upstream."""
        return self._each("row:tombstoned", london_date(deleted_at))

    def run_dues(self, finished_at: datetime) -> list[Due]:
        """Return the deadlines of a finished run log."""
        return self._each("operational:run_finished", london_date(finished_at))

    def hold_until(self, table: str, record_id: int) -> date | None:
        """Return the review date of an active legal hold on the record (R40), or None."""
        return self.holds.get((table, record_id))


def earliest(dues: list[Due], hold_until: date | None = None) -> tuple[Due | None, bool]:
    """Return the earliest deadline (R24, R33) and whether a legal hold postponed it past its review date (R40)."""
    if not dues:
        return None, False
    best = min(dues)
    if hold_until is not None and best.due_on <= hold_until:
        # The hold suspends the deadline too: deleting the day it lapses is on time, not late.
        resumed = hold_until + timedelta(days=1)
        return Due(resumed, max(best.deadline, resumed), best.trigger_on, best.rule_id), True
    return best, False


def _subscription_ends() -> dict[int, date]:
    """R31: per school, the end of its last subscription, when every subscription has ended or has an end."""
    ends: dict[int, date] = {}
    open_ended: set[int] = set()
    for sub in db.session.execute(select(Subscription)).scalars():
        end = sub.effective_end
        if end is None:
            open_ended.add(sub.school_id)
        elif sub.school_id not in ends or end > ends[sub.school_id]:
            ends[sub.school_id] = end
    return {school: end for school, end in ends.items() if school not in open_ended}


def _academic_year(day: date) -> int:
    """Return the academic year a day falls in (2025 = 2025/26, which starts on 1 September 2025)."""
    return day.year if day.month >= 9 else day.year - 1


def _last_year_groups() -> dict[int, int]:
    """R30: per school, the last year group a school admin (or support) confirmed; no entry, no R30 clock."""
    return dict(db.session.execute(select(SchoolRetentionSetting.school_id, SchoolRetentionSetting.last_year_group)).all())


# R32: the states in which a connection has been authorised again since a revocation.
REAUTHORISED = frozenset({ConnectionState.approved, ConnectionState.failing})


def _revocations() -> dict[int, date]:
    """R32: revoked connections and the day they were revoked.

    The clock of a revocation that is followed by a new request lives on in its deletion order
    (portal.retention.orders), which only an approval cancels; this covers connections in the
    revoked state without one.
    """
    rows = db.session.execute(
        select(Connection.id, Connection.state_changed_at).where(Connection.state == ConnectionState.revoked)
    )
    return {cid: london_date(at) for cid, at in rows}


def _open_orders() -> dict[int, list[DeletionOrder]]:
    out: dict[int, list[DeletionOrder]] = defaultdict(list)
    query = (
        select(DeletionOrder, Connection.state)
        .outerjoin(Connection, Connection.id == DeletionOrder.connection_id)
        .where(DeletionOrder.cancelled_at.is_(None), DeletionOrder.completed_at.is_(None))
    )
    for order, state in db.session.execute(query):
        # R32: only an approved re-authorisation cancels a revocation clock, even if nobody cancelled the order.
        # Asking again (requested, pending) or being declined leaves it running.
        if order.rule_id == "R32" and state in REAUTHORISED:
            continue
        if order.fields is not None:
            continue  # clears columns, deletes no row: portal.retention.fields runs it
        out[order.school_id].append(order)
    return dict(out)


def _holds() -> dict[tuple[str, int], date]:
    out: dict[tuple[str, int], date] = {}
    query = select(LegalHold).where(LegalHold.released_at.is_(None), LegalHold.dpo_approved_at.is_not(None))
    for hold in db.session.execute(query).scalars():
        key = (hold.record_table, hold.record_id)
        out[key] = max(out.get(key, hold.review_on), hold.review_on)
    return out

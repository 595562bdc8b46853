"""R69: the breach record. The ICO deadline is 72 real hours after awareness (UK GDPR Art. 33, whatever the clocks or
bank holidays do); the affected schools, categories and pupils come from the audit trail; the notices sent are kept."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import distinct, func, select

from portal import alerts, audit, deletions
from portal.extensions import db
from portal.models import (
    ApiCredential,
    AuditEntry,
    Breach,
    BreachNotice,
    BreachStatus,
    NoticeRecipient,
    Organisation,
    Product,
    ProductReceipt,
)
from portal.models.base import utcnow

ICO_DEADLINE = timedelta(hours=72)


class BreachError(ValueError):
    """A breach record or notice the rules refuse; the message says what to change."""


@dataclass
class Affected:
    """One affected school: the categories read (rows per category) and the distinct pupils the product(s) received."""

    school_id: int
    school_name: str
    categories: Counter = field(default_factory=Counter)
    pupils: int = 0
    notified: bool = False


def deadline(breach: Breach) -> datetime:
    """The ICO deadline: 72 elapsed hours after awareness, computed in UTC so a clock change moves local time only."""
    return breach.aware_at.astimezone(timezone.utc) + ICO_DEADLINE


def open_breach(aware_at: datetime, summary: str, *, product_id: int | None = None, credential_id: int | None = None,
                exposed_from: datetime | None = None, exposed_until: datetime | None = None, confirmed: bool = False,
                by_user_id: int | None = None, actor: str | None = None) -> Breach:
    """Open a breach record; a credential's exposure starts, unless given, when it was issued."""
    summary = (summary or "").strip()
    if aware_at is None or aware_at.tzinfo is None:
        raise BreachError("Enter when the operator became aware of the breach (date and time).")
    if aware_at > utcnow() + timedelta(minutes=5):
        raise BreachError("The time of awareness cannot be in the future.")
    if not summary:
        raise BreachError("Describe the breach (no personal data: ids and counts only).")
    credential = db.session.get(ApiCredential, credential_id) if credential_id else None
    if credential_id and credential is None:
        raise BreachError("No product credential has that id.")
    if credential is not None:
        if product_id and product_id != credential.product_id:
            raise BreachError("That credential belongs to another product.")
        product_id = credential.product_id
        exposed_from = exposed_from or credential.created_at
    if product_id and db.session.get(Product, product_id) is None:
        raise BreachError("No product has that id.")
    if exposed_from and exposed_until and exposed_until < exposed_from:
        raise BreachError("The exposure cannot end before it starts.")
    breach = Breach(aware_at=aware_at.astimezone(timezone.utc), summary=summary[:1000], product_id=product_id,
                    credential_id=credential_id, exposed_from=exposed_from, exposed_until=exposed_until,
                    status=BreachStatus.confirmed if confirmed else BreachStatus.suspected, opened_by_id=by_user_id)
    db.session.add(breach)
    db.session.flush()
    audit.record("breach.opened", target=breach, actor=actor,
                 details={"status": breach.status.value, "product_id": product_id, "credential_id": credential_id})
    return breach


def set_status(breach: Breach, status: BreachStatus, *, actor: str | None = None) -> None:
    if breach.status != status:
        audit.record("breach.status_changed", target=breach, actor=actor,
                     details={"from": breach.status.value, "to": status.value})
        breach.status = status


def _pupil_record_types() -> list[str]:
    return [name for name, (table, _, about_pupil) in deletions._types().items() if about_pupil or table == "mis_pupils"]


def affected(breach: Breach) -> list[Affected]:
    """Schools whose data was read in the exposure (api.read entries of the product or credential), with categories,
    rows and pupils; a breach naming no product covers every product read in the window."""
    query = select(AuditEntry.organisation_id, AuditEntry.details).where(
        AuditEntry.action == "api.read", AuditEntry.organisation_id.is_not(None))
    if breach.exposed_from is not None:
        query = query.where(AuditEntry.at >= breach.exposed_from)
    if breach.exposed_until is not None:
        query = query.where(AuditEntry.at <= breach.exposed_until)
    if breach.credential_id is not None:
        query = query.where(AuditEntry.actor == f"api_credential:{breach.credential_id}")
    elif breach.product_id is not None:
        query = query.where(AuditEntry.target_type == "products", AuditEntry.target_id == str(breach.product_id))
    per_school: dict[int, Counter] = defaultdict(Counter)
    for school_id, details in db.session.execute(query):
        details = details or {}
        per_school[school_id][details.get("category") or "unknown"] += int(details.get("count") or 0)
    if not per_school:
        return []
    names = dict(db.session.execute(select(Organisation.id, Organisation.name).where(Organisation.id.in_(per_school))).all())
    receipts = select(ProductReceipt.school_id, func.count(distinct(ProductReceipt.subject_id))).where(
        ProductReceipt.school_id.in_(per_school), ProductReceipt.record_type.in_(_pupil_record_types()))
    if breach.product_id is not None:
        receipts = receipts.where(ProductReceipt.product_id == breach.product_id)
    pupils = dict(db.session.execute(receipts.group_by(ProductReceipt.school_id)).all())
    notified = {n.school_id for n in breach.notices if n.recipient == NoticeRecipient.school}
    return sorted((Affected(sid, names.get(sid, f"#{sid}"), cats, int(pupils.get(sid, 0)), sid in notified)
                   for sid, cats in per_school.items()), key=lambda a: a.school_name)


def record_notice(breach: Breach, recipient: NoticeRecipient, *, school_id: int | None = None, reference: str = "",
                  by_user_id: int | None = None, actor: str | None = None) -> BreachNotice:
    """Record a notice; a notice to a school is also emailed to its admins (a service message, R52)."""
    reference = (reference or "").strip()
    school = None
    if recipient == NoticeRecipient.school:
        school = db.session.get(Organisation, school_id) if school_id else None
        if school is None or not school.is_school:
            raise BreachError("Choose the school to notify.")
        sent = alerts.breach_notice(school, f"B{breach.id}")
        reference = reference or ("emailed to the school's admins" if sent else "no admin email on file: contact the school")
    elif not reference:
        raise BreachError("Enter the reference of the notice (the ICO case number, or how individuals were told).")
    notice = BreachNotice(breach_id=breach.id, recipient=recipient, school_id=school.id if school else None,
                          reference=reference[:200], sent_by_id=by_user_id, sent_at=utcnow())
    db.session.add(notice)
    breach.notices.append(notice)
    db.session.flush()
    audit.record("breach.notice_recorded", organisation_id=school.id if school else None, target=breach, actor=actor,
                 details={"recipient": recipient.value, "notice_id": notice.id})
    return notice


def all_breaches() -> list[Breach]:
    return list(db.session.execute(select(Breach).order_by(Breach.aware_at.desc(), Breach.id.desc())).scalars())

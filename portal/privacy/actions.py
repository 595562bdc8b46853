"""Acting on a verified request: erasure with suppression, restriction and objection, rectification (R49–R51, R74).

Each action writes audit entries with ids and counts only; callers commit.
"""
from __future__ import annotations

from sqlalchemy import select

from portal import audit, deletions, mail, store
from portal.extensions import db
from portal.jobs import get_executor
from portal.jobs.claims import owner_id
from portal.models import (
    Connection, Feature, FlagKind, JobRun, LegalHold, MisPupil, MisStaff, ProductAuthorisation, SubjectFlag,
    SubjectFlagFeature, SubjectKind, User, product_features,
)
from portal.models.base import utcnow
from portal.models.dsr import Controller, RequestType, SubjectRequest, SubjectType
from portal.privacy import suppression
from portal.privacy.register import RequestError, controller_admins, require_verified
from portal.retention.calendar import add_months, london_date

# R40: a legal-claims hold needs a review date; the DPO approves and may change it.
LEGAL_HOLD_REVIEW_MONTHS = 6

# R51: the cases in which processing is restricted; codes, never free text about the subject.
RESTRICTION_REASONS = {
    "accuracy_contested": "The subject contests the accuracy of the data",
    "unlawful_processing": "Processing is unlawful and the subject asked for restriction instead of erasure",
    "legal_claims": "The subject needs the data kept for legal claims",
    "objection_pending": "An objection is being assessed",
}


def _school_subject(req: SubjectRequest) -> tuple[int, str, str]:
    if req.controller is not Controller.school or req.subject_type not in (SubjectType.pupil, SubjectType.staff):
        raise RequestError("not_school_data", "This action applies to a school's pupils and staff.")
    return req.school_id, req.subject_type.value, req.subject_external_id


def erase(req: SubjectRequest, user: User) -> dict[str, int]:
    """Delete the subject from every table, prove it by re-querying, and suppress re-import (R50)."""
    require_verified(req)
    if req.request_type not in (RequestType.erasure, RequestType.objection):
        raise RequestError("wrong_type", "Only an erasure request, or an upheld objection, erases data.")
    school_id, kind, external_id = _school_subject(req)
    deletions.publish_erasure(school_id, kind, external_id)  # R42: before the ids are gone
    deleted = store.dsr_erase(school_id, kind, external_id, request_id=req.id)
    remaining = store.dsr_count_rows(school_id, kind, external_id)
    if remaining:
        raise RuntimeError(f"erasure of request {req.id} left {remaining} rows")  # rolled back by the caller
    suppression.suppress(school_id, kind, external_id, request_id=req.id)
    # Flags are about data that no longer exists.
    for flag in _active_flags(req):
        flag.lifted_at = utcnow()
    req.outcome = "erased"
    audit.record("dsr.erased", organisation_id=school_id, target=req,
                 details={"deleted": deleted, "remaining": remaining, "by": user.id})
    return deleted


def _active_flags(req: SubjectRequest, kind: FlagKind | None = None) -> list[SubjectFlag]:
    query = select(SubjectFlag).where(
        SubjectFlag.school_id == req.school_id, SubjectFlag.subject_kind == SubjectKind(req.subject_type.value),
        SubjectFlag.external_id == req.subject_external_id, SubjectFlag.lifted_at.is_(None),
    )
    if kind is not None:
        query = query.where(SubjectFlag.kind == kind)
    return list(db.session.execute(query).scalars())


def authorised_features(school_id: int) -> list[Feature]:
    """Return the product features the school currently authorises (through its live product authorisations)."""
    products = select(ProductAuthorisation.product_id).where(ProductAuthorisation.school_id == school_id,
                                                              ProductAuthorisation.revoked_at.is_(None))
    return list(db.session.execute(
        select(Feature).join(product_features, product_features.c.feature_id == Feature.id)
        .where(product_features.c.product_id.in_(products)).distinct().order_by(Feature.id)
    ).scalars())


def restrict(req: SubjectRequest, user: User, reason: str | None, features: list[str] | None = None) -> SubjectFlag:
    """Keep the subject's data in sync but serve it to no product feature, or only not to the named ones, until lifted (R51)."""
    require_verified(req)
    if reason not in RESTRICTION_REASONS:
        raise RequestError("reason_required", "Choose why processing is restricted.", "reason")
    school_id, kind, external_id = _school_subject(req)
    named = sorted(set(features or []))
    unknown = set(named) - {f.id for f in authorised_features(school_id)}
    if unknown:
        raise RequestError("unknown_feature", "Choose only features of products the school authorises.", "features")
    # Flags add up (the feed leaves the subject out if any active flag covers the feature): only an identical one is reused.
    for existing in _active_flags(req, FlagKind.restricted):
        if existing.feature_ids == named:
            return existing
    flag = SubjectFlag(school_id=school_id, subject_kind=SubjectKind(kind), external_id=external_id,
                       kind=FlagKind.restricted, reason_code=reason, recorded_by_id=user.id,
                       features=[SubjectFlagFeature(feature_id=f) for f in named])
    db.session.add(flag)
    db.session.flush()
    holds = _legal_holds(req, user) if reason == "legal_claims" else []
    audit.record("dsr.restricted", organisation_id=school_id, target=req,
                 details={"flag_id": flag.id, "reason": reason, "features": named or "all",
                          "legal_holds": [h.id for h in holds]})
    return flag


def _legal_holds(req: SubjectRequest, user: User) -> list[LegalHold]:
    """A restriction for legal claims also pauses deletion of that subject (R40): holds awaiting the DPO's approval."""
    table = store.DSR_SUBJECT_TABLES[req.subject_type.value]
    model = MisPupil if req.subject_type is SubjectType.pupil else MisStaff
    ids = db.session.execute(select(model.id).where(model.school_id == req.school_id,
                                                    model.external_id == req.subject_external_id)).scalars()
    review_on = add_months(london_date(utcnow()), LEGAL_HOLD_REVIEW_MONTHS)
    holds = [LegalHold(school_id=req.school_id, record_table=table, record_id=record_id, review_on=review_on,
                       reason=f"Restriction for legal claims (data-subject request {req.id})", created_by_id=user.id)
             for record_id in ids]
    db.session.add_all(holds)
    db.session.flush()
    return holds


def _lift_flags(req: SubjectRequest, user: User, kind: FlagKind, action: str) -> int:
    """End the subject's active flags of one kind, audited as `action`; return how many were lifted."""
    flags = _active_flags(req, kind)
    for flag in flags:
        flag.lifted_at = utcnow()
    audit.record(action, organisation_id=req.school_id, target=req,
                 details={"flags": [f.id for f in flags], "by": user.id})
    return len(flags)


def lift_restriction(req: SubjectRequest, user: User) -> int:
    """Lift the subject's restriction: products are served the data again; return how many flags were lifted."""
    return _lift_flags(req, user, FlagKind.restricted, "dsr.restriction_lifted")


def object_to_processing(req: SubjectRequest, user: User, features: list[str] | None = None) -> SubjectFlag:
    """Restrict (for all features, or the named ones) while an objection is assessed (R51).

    Uphold it with erase(), or dismiss it with lift_restriction().
    """
    if req.request_type is not RequestType.objection:
        raise RequestError("wrong_type", "This is not an objection.")
    return restrict(req, user, "objection_pending", features)


def object_to_special_category(req: SubjectRequest, user: User) -> SubjectFlag:
    """Record the pupil's written notice not to process their special-category data (R74).

    Products are served those fields as withheld from the next request, and the values already
    stored are nulled now on every connection of the school (later extracts store none). Lift it
    with lift_special_category_objection(); the values come back with the next full extract.
    """
    require_verified(req)
    if req.request_type is not RequestType.objection:
        raise RequestError("wrong_type", "Only an objection records a written notice about special-category data.")
    school_id, kind, external_id = _school_subject(req)
    if kind != SubjectType.pupil.value:
        raise RequestError("not_pupil", "Special-category data is held about pupils only.")
    existing = _active_flags(req, FlagKind.special_category_objection)
    flag = existing[0] if existing else None
    if flag is None:
        flag = SubjectFlag(school_id=school_id, subject_kind=SubjectKind.pupil, external_id=external_id,
                           kind=FlagKind.special_category_objection, reason_code="written_notice",
                           recorded_by_id=user.id)
        db.session.add(flag)
        db.session.flush()  # withhold_objections selects the active flags
    withheld: dict[str, int] = {}
    connection_ids = list(db.session.execute(
        select(Connection.id).where(Connection.school_id == school_id).order_by(Connection.id)).scalars())
    for connection_id in connection_ids:
        for category, n in store.withhold_objections(school_id, connection_id=connection_id,
                                                     pupil_external_id=external_id).items():
            withheld[category] = withheld.get(category, 0) + n
    audit.record("dsr.special_category_objection", organisation_id=school_id, target=req,
                 details={"flag_id": flag.id, "reused": bool(existing), "connections": connection_ids,
                          "rows_nulled": withheld, "by": user.id})
    return flag


def lift_special_category_objection(req: SubjectRequest, user: User) -> int:
    """End the pupil's written objection (R74): values are served and stored again from the next full extract."""
    return _lift_flags(req, user, FlagKind.special_category_objection, "dsr.special_category_objection_lifted")


def rectify(req: SubjectRequest, user: User, what_is_wrong: str | None) -> list[JobRun]:
    """Record what is wrong, flag it to the school and queue a resync of the subject's categories (R49).

    MIS data is never edited here: the school corrects its MIS and the queued full extract brings the fix in.
    """
    require_verified(req)
    if req.request_type is not RequestType.rectification:
        raise RequestError("wrong_type", "This is not a rectification request.")
    if not (what_is_wrong or "").strip():
        raise RequestError("details_required", "Say what is wrong with the data.", "details")
    school_id, kind, external_id = _school_subject(req)
    req.details = what_is_wrong.strip()
    rows = store.dsr_subject_rows(school_id, kind, external_id, request_id=req.id)
    categories = sorted({r["category"] for t in rows.values() for r in t if r.get("category")})
    connection_ids = sorted({r["connection_id"] for t in rows.values() for r in t if r.get("connection_id")})
    queued = []
    for connection in db.session.execute(select(Connection).where(Connection.id.in_(connection_ids))).scalars().all():
        # Through the executor: a worker (Celery) or a scheduling process (jobs:recover) runs it.
        run = get_executor().queue_extract(connection.id, owner=owner_id(), mode="full", categories=categories,
                                           reason="rectification", request_id=req.id)
        if run is not None:
            queued.append(run)
    admins = controller_admins(req.school)
    if admins:
        mail.send([a.email for a in admins], f"Data-subject request no. {req.id}: data to correct in your MIS",
                  f"Request no. {req.id} says some of the data your MIS holds is wrong. The details are on the request "
                  "page. Correct it in your MIS; the portal will fetch the corrected data at its next run.\n")
    audit.record("dsr.rectification_flagged", organisation_id=school_id, target=req,
                 details={"categories": categories, "runs": [r.id for r in queued], "notified": len(admins)})
    return queued


def rectify_user(req: SubjectRequest, actor: User, *, name: str | None = None) -> None:
    """Correct data the portal owns about one of its users directly (R49); email changes need confirmation elsewhere."""
    require_verified(req)
    if req.subject_type is not SubjectType.user or req.subject_user_id is None:
        raise RequestError("not_user_data", "Only a portal user's own details are corrected here.")
    user = db.session.get(User, req.subject_user_id)
    if not (name or "").strip():
        raise RequestError("details_required", "Enter the corrected name.", "name")
    user.name = name.strip()
    audit.record("dsr.user_rectified", target=req, details={"user_id": user.id, "fields": ["name"], "by": actor.id})

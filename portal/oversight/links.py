"""R57: a school approves a supporting organisation (its LA, a diocese, or a trust it is not an academy of) to see its
pupil data through one matrix feature, and can see and end the link on its data-use page."""
from __future__ import annotations

from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import FeatureGrant, Organisation, OrgKind, SchoolLink, User
from portal.models.base import utcnow

SUPPORTING_KINDS = (OrgKind.local_authority, OrgKind.diocese, OrgKind.trust)
# The category a link's feature must be granted: the supporting organisation sees the pupils through it.
NEEDED_CATEGORY = "student_basic"


class LinkError(ValueError):
    """A link the rules refuse; the message is shown to the school admin as it is."""


def features_for_links() -> list[str]:
    """Matrix features that read pupil data (granted student_basic), the only ones a link may name."""
    return sorted(db.session.execute(select(FeatureGrant.feature_id).where(FeatureGrant.category_id == NEEDED_CATEGORY)
                                     .distinct()).scalars())


def candidates(school: Organisation) -> list[Organisation]:
    """Organisations the school may link: LAs, dioceses and trusts, except its own trust (an academy needs no link)."""
    query = select(Organisation).where(Organisation.kind.in_(SUPPORTING_KINDS)).order_by(Organisation.name)
    if school.trust_id:
        query = query.where(Organisation.id != school.trust_id)
    return list(db.session.execute(query).scalars())


def approve(school: Organisation, organisation_id: int, feature_id: str, agreement_ref: str, by: User) -> SchoolLink:
    """Record the school's approval of a link; audited in the school's history."""
    agreement_ref = (agreement_ref or "").strip()
    org = db.session.get(Organisation, organisation_id) if organisation_id else None
    if org is None or org.kind not in SUPPORTING_KINDS:
        raise LinkError("Choose a local authority, diocese or trust.")
    if org.id == school.trust_id:
        raise LinkError("The school's own trust already sees its data: it needs no link.")
    if feature_id not in features_for_links():
        raise LinkError("Choose a feature that reads pupil data.")
    if not agreement_ref:
        raise LinkError("Enter the reference of the service agreement with this organisation.")
    live = db.session.execute(select(SchoolLink).where(
        SchoolLink.school_id == school.id, SchoolLink.organisation_id == org.id, SchoolLink.feature_id == feature_id,
        SchoolLink.ended_at.is_(None))).scalar()
    if live is not None:
        raise LinkError("That organisation already has this link.")
    link = SchoolLink(school_id=school.id, organisation_id=org.id, feature_id=feature_id, agreement_ref=agreement_ref[:100],
                      approved_by_id=by.id, approved_at=utcnow())
    db.session.add(link)
    db.session.flush()
    audit.record("link.approved", organisation_id=school.id, target=link,
                 details={"organisation_id": org.id, "feature": feature_id})
    return link


def end(link: SchoolLink, by: User) -> None:
    """End a link at once (idempotent); the row stays as history."""
    if link.ended_at is not None:
        return
    link.ended_at = utcnow()
    link.ended_by_id = by.id
    audit.record("link.ended", organisation_id=link.school_id, target=link,
                 details={"organisation_id": link.organisation_id, "feature": link.feature_id})


def of_school(school_id: int, *, live_only: bool = False) -> list[SchoolLink]:
    query = select(SchoolLink).where(SchoolLink.school_id == school_id)
    if live_only:
        query = query.where(SchoolLink.ended_at.is_(None))
    return list(db.session.execute(query.order_by(SchoolLink.ended_at.is_not(None), SchoolLink.approved_at.desc())).scalars())

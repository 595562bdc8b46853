"""The purpose check: the ONE gate every product read passes (R3, R11, R12, R15); default deny, refusals audited."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from flask import current_app
from sqlalchemy import select

from portal import audit
from portal.api.authorisations import live_authorisation
from portal.api.errors import ApiError
from portal.clock import LONDON
from portal.extensions import db
from portal.models import ApiCredential, Category, FeatureGrant, Organisation, OrgKind, product_features

# R13: the "(current students)" features see pupils on roll on the request date only.
CURRENT_STUDENT_FEATURES = frozenset({"estimates_targets_student_explorer", "pupil_tracking"})


@dataclass(frozen=True)
class ReadGrant:
    """What one allowed read may see: who asks, for which feature, school and category, and with which limits."""

    credential_id: int
    product_id: int
    feature_id: str
    school_id: int
    category_id: str
    on: date
    on_roll_only: bool
    special_category_fields: frozenset[str]
    # R73: the Schedule 1 policy document reference, or None (special-category fields are then withheld).
    policy_document: str | None

    @property
    def actor(self) -> str:
        return f"api_credential:{self.credential_id}"


def _refuse(credential: ApiCredential, status: int, code: str, message: str, *, feature_id: str,
            school_id: int | None, category_id: str | None, **extra) -> ApiError:
    """Audit the refused read and commit it (the error response rolls nothing back), then return the error."""
    audit.record(
        "api.read_refused",
        organisation_id=school_id if _is_school(school_id) else None,
        target_type="products",
        target_id=credential.product_id,
        actor=f"api_credential:{credential.id}",
        details={"code": code, "feature": feature_id, "category": category_id, "school_id": school_id},
    )
    db.session.commit()
    return ApiError(status, code, message, **extra)


def _is_school(school_id: int | None) -> bool:
    if school_id is None:
        return False
    org = db.session.get(Organisation, school_id)
    return org is not None and org.kind == OrgKind.school


def feature_of_product(credential: ApiCredential, feature_id: str) -> None:
    """Refuse (403 feature_not_of_product) unless the feature is one the credential's product provides (R12)."""
    found = db.session.execute(
        select(product_features.c.feature_id).where(
            product_features.c.product_id == credential.product_id, product_features.c.feature_id == feature_id
        )
    ).first()
    if found is None:
        raise _refuse(credential, 403, "feature_not_of_product",
                      "This product is not registered for that feature.", feature_id=feature_id,
                      school_id=None, category_id=None, feature=feature_id)


def check_read(credential: ApiCredential, feature_id: str, school_id: int, category_id: str,
               on: date | None = None) -> ReadGrant:
    """Return the ReadGrant for this read, or raise an audited ApiError saying why it is refused."""
    # R13, R24: "on roll" is judged on Europe/London's date, whatever the server's own time zone.
    on = on or datetime.now(LONDON).date()
    feature_of_product(credential, feature_id)
    category = db.session.get(Category, category_id)
    if category is None:
        raise _refuse(credential, 404, "unknown_category", "There is no such category.",
                      feature_id=feature_id, school_id=school_id, category_id=None)
    grant = db.session.get(FeatureGrant, (feature_id, category_id))
    # R15: a grant counts from its effective date; a removed grant is gone at once.
    if grant is None or grant.effective_from > on:
        raise _refuse(credential, 403, "category_not_granted",
                      f"The feature {feature_id} is not granted the category {category_id}.",
                      feature_id=feature_id, school_id=school_id, category_id=category_id,
                      category=category_id, feature=feature_id)
    if not _is_school(school_id) or live_authorisation(school_id, credential.product_id) is None:
        raise _refuse(credential, 403, "school_not_authorised",
                      "This school does not authorise this product.",
                      feature_id=feature_id, school_id=school_id, category_id=category_id)
    policy = (current_app.config.get("SPECIAL_CATEGORY_POLICY_DOCUMENT") or "").strip() or None
    return ReadGrant(
        credential_id=credential.id,
        product_id=credential.product_id,
        feature_id=feature_id,
        school_id=school_id,
        category_id=category_id,
        on=on,
        on_roll_only=feature_id in CURRENT_STUDENT_FEATURES,
        special_category_fields=frozenset(category.special_category_fields or ()),
        policy_document=policy,
    )

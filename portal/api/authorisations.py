"""Schools authorise and revoke products (R3); a product sees a school only while its authorisation is live."""
from __future__ import annotations

from sqlalchemy import Select, select

from portal import audit, deletions
from portal.extensions import db
from portal.models import Organisation, OrgKind, Product, ProductAuthorisation, User
from portal.models.base import utcnow
from portal.retention.orders import cancel_category_deletion


def live_authorisation(school_id: int, product_id: int) -> ProductAuthorisation | None:
    """Return the school's live authorisation of the product, if any."""
    return db.session.execute(
        select(ProductAuthorisation).where(
            ProductAuthorisation.school_id == school_id,
            ProductAuthorisation.product_id == product_id,
            ProductAuthorisation.revoked_at.is_(None),
        ).order_by(ProductAuthorisation.id.desc()).limit(1)
    ).scalar_one_or_none()


def authorised_schools(product_id: int) -> Select:
    """Return a SELECT of the schools that authorise the product now, in id order."""
    return (
        select(Organisation, ProductAuthorisation.authorised_at)
        .join(ProductAuthorisation, ProductAuthorisation.school_id == Organisation.id)
        .where(
            Organisation.kind == OrgKind.school,
            ProductAuthorisation.product_id == product_id,
            ProductAuthorisation.revoked_at.is_(None),
        )
        .order_by(Organisation.id)
    )


def authorise_product(school: Organisation, product: Product, user: User | None) -> ProductAuthorisation:
    """Record that the school authorises the product (idempotent); the caller commits.

    Who may authorise (R1) is the page's business through portal.scope; this records the fact.
    """
    if not school.is_school:
        raise ValueError("only a school can authorise a product")
    existing = live_authorisation(school.id, product.id)
    if existing is not None:
        return existing
    auth = ProductAuthorisation(school_id=school.id, product_id=product.id, authorised_by_id=user.id if user else None)
    db.session.add(auth)
    db.session.flush()
    audit.record("product.authorised", organisation_id=school.id, target=auth, details={"product_id": product.id})
    # Whoever authorises (page, CLI, demo), the categories this product needs are no longer due for deletion (R31).
    cancel_category_deletion(school, user=user)
    return auth


def revoke_product(school: Organisation, product: Product, user: User | None) -> ProductAuthorisation | None:
    """End the school's authorisation of the product at once (R4); the caller commits. Returns the ended row."""
    auth = live_authorisation(school.id, product.id)
    if auth is None:
        return None
    auth.revoked_at = utcnow()
    auth.revoked_by_id = user.id if user else None
    audit.record("product.revoked", organisation_id=school.id, target=auth, details={"product_id": product.id})
    deletions.publish_authorisation_ended(school.id, product.id)  # R42: every id it received from the school
    return auth

"""Register products with their matrix features, business purpose and UK processing location (R12, R64)."""
from __future__ import annotations

from sqlalchemy import func, select

from portal import audit
from portal.errors import PortalError
from portal.extensions import db
from portal.models import Feature, Product

UK = "UK"


class ProductInvalid(PortalError):
    code = "product_invalid"
    status = 400


def validation_problems(name: str, purpose: str, feature_ids: list[str], processing_location: str,
                        product_id: int | None = None) -> dict[str, str]:
    """Return field -> what is wrong, empty when the product may be registered as given."""
    problems: dict[str, str] = {}
    if not (name or "").strip():
        problems["name"] = "Enter the product's name."
    else:
        clash = select(Product.id).where(func.lower(Product.name) == name.strip().lower())
        if product_id is not None:
            clash = clash.where(Product.id != product_id)
        if db.session.execute(clash).first():
            problems["name"] = "A product with this name is already registered."
    if not (purpose or "").strip():
        problems["purpose"] = "Enter the product's business purpose."
    if not feature_ids:
        problems["features"] = "Choose at least one feature of the usage matrix."
    else:
        known = set(db.session.execute(select(Feature.id)).scalars())
        unknown = sorted(set(feature_ids) - known)
        if unknown:
            problems["features"] = f"Not a feature of the usage matrix: {', '.join(unknown)}."
    if (processing_location or "").strip().upper() != UK:
        problems["processing_location"] = "Pupil data is processed only in the UK: the product must declare UK processing."
    return problems


def register_product(name: str, purpose: str, feature_ids: list[str], processing_location: str = UK) -> Product:
    """Create a product after validation; raises ProductInvalid naming the first problem. The caller commits."""
    problems = validation_problems(name, purpose, feature_ids, processing_location)
    if problems:
        raise ProductInvalid(" ".join(problems.values()))
    features = list(db.session.execute(select(Feature).where(Feature.id.in_(feature_ids))).scalars())
    product = Product(name=name.strip(), purpose=purpose.strip(), processing_location=UK, features=features)
    db.session.add(product)
    db.session.flush()
    audit.record("product.registered", target=product, details={"features": sorted(feature_ids)})
    return product

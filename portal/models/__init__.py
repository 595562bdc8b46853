"""All portal models, imported here so Alembic and the app see one metadata."""
from portal.models.audit import AuditEntry
from portal.models.connections import EXTRACTABLE_STATES, Connection, ConnectionState
from portal.models.products import Category, Feature, FeatureGrant, MatrixInfo, Product, product_features
from portal.models.runs import FINISHED_STATUSES, ErrorKind, JobRun, RunStatus
from portal.models.tenancy import Organisation, OrgKind, Subscription, SubscriptionRoute
from portal.models.users import Membership, PasswordResetToken, Role, User

__all__ = [
    "AuditEntry",
    "Category",
    "Connection",
    "ConnectionState",
    "EXTRACTABLE_STATES",
    "ErrorKind",
    "FINISHED_STATUSES",
    "Feature",
    "FeatureGrant",
    "JobRun",
    "MatrixInfo",
    "Membership",
    "OrgKind",
    "Organisation",
    "PasswordResetToken",
    "Product",
    "Role",
    "RunStatus",
    "Subscription",
    "SubscriptionRoute",
    "User",
    "product_features",
]

"""Default plugin of the retention engine: admin views for rules, legal holds, the DfE agreement, proofs and the preview."""
from __future__ import annotations

from typing import Any

from flask import Flask

from portal.plugins import hookimpl
from portal.retention.admin import retention_views


@hookimpl
def portal_admin_views(app: Flask) -> list[Any]:
    """Return the retention admin views for support staff."""
    return retention_views()

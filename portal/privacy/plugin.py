"""Default plugin of the data-subject request module: its admin views for support staff."""
from __future__ import annotations

from typing import Any

from flask import Flask

from portal.plugins import hookimpl


@hookimpl
def portal_admin_views(app: Flask) -> list[Any]:
    """Return the data-subject request admin views."""
    from portal.privacy.admin import privacy_views

    return privacy_views()

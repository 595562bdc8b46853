"""Default plugin: the core's admin views are contributed through portal_admin_views."""
from __future__ import annotations

from typing import Any

from flask import Flask

from portal.admin.views import core_views
from portal.plugins import hookimpl


@hookimpl
def portal_admin_views(app: Flask) -> list[Any]:
    """Return the core admin views for support staff."""
    return core_views()

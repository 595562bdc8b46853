"""The portal plugin entry point of portal-groupcall: registers the Groupcall connector."""
from __future__ import annotations

from portal.plugins import hookimpl


@hookimpl
def portal_register_connectors() -> list[type]:
    from portal_groupcall.connector import GroupcallConnector

    return [GroupcallConnector]

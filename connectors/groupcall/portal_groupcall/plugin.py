"""The portal plugin entry point of portal-groupcall: registers the Groupcall connector."""
from __future__ import annotations

from portal.connectors import Connector
from portal.plugins import hookimpl
from portal_groupcall.connector import GroupcallConnector


@hookimpl
def portal_register_connectors() -> list[type[Connector]]:
    return [GroupcallConnector]

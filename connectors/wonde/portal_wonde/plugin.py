"""The portal plugin of the Wonde connector package: registers WondeConnector."""
from __future__ import annotations

from portal.connectors import Connector
from portal.plugins import hookimpl


@hookimpl
def portal_register_connectors() -> list[type[Connector]]:
    from portal_wonde.connector import WondeConnector

    return [WondeConnector]

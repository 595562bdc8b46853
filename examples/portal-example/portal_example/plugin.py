"""The portal plugin of the Example MIS connector package: registers ExampleConnector."""
from __future__ import annotations

from portal.connectors import Connector
from portal.plugins import hookimpl


@hookimpl
def portal_register_connectors() -> list[type[Connector]]:
    from portal_example.connector import ExampleConnector

    return [ExampleConnector]

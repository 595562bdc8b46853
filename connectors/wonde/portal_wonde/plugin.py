"""The portal plugin of the Wonde connector package: registers WondeConnector and checks its settings at start-up."""
from __future__ import annotations

from typing import Any

from portal.connectors import Connector, ConnectorError
from portal.errors import StartupError
from portal.plugins import hookimpl
from portal_wonde.client import DEFAULT_BASE_URL, WondeClient
from portal_wonde.connector import WondeConnector


@hookimpl
def portal_register_connectors() -> list[type[Connector]]:
    return [WondeConnector]


@hookimpl
def portal_startup(app: Any) -> None:
    """Refuse to start with a non-HTTPS Wonde base URL, except to a loopback sandbox when allowed (R61)."""
    enabled = app.config.get("ENABLED_CONNECTORS", ())
    if "wonde" not in enabled and "*" not in enabled:
        return
    # Validated and typed by the core before this hook runs.
    settings = (app.config.get("CONNECTORS") or {}).get("wonde") or {}
    try:
        # The token may live in each connection's own settings, so only the URL is checked here.
        WondeClient(settings.get("base_url") or DEFAULT_BASE_URL, "startup-check",
                    allow_insecure_http=bool(settings.get("allow_insecure_http")))
    except ConnectorError as exc:
        raise StartupError(f"Wonde connector: {exc.message}") from None

"""Hook specifications: the only contract between the portal and its plugins.

Hooks are called with keyword arguments. An implementation may accept any subset of a hook's
arguments (pluggy "opt-in arguments"), so arguments can be added without breaking plugins;
arguments are never removed or renamed without a deprecation cycle.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from flask import Flask

    from portal.connectors import Connector
    from portal.jobs import JobSpec
    from portal.models import JobRun

hookspec = pluggy.HookspecMarker("portal")


@hookspec
def portal_register_connectors() -> list[type[Connector]]:
    """Return the Connector classes this plugin provides.

    Called once per app by create_app(). Each class's ``name`` must be unique across all
    installed plugins; a duplicate stops start-up. Installed is not enabled: only names in
    ``ENABLED_CONNECTORS`` are used.
    """


@hookspec
def portal_register_jobs(app: Flask, connectors: Mapping[str, type[Connector]]) -> list[JobSpec]:
    """Return the scheduled jobs this plugin needs.

    ``connectors`` holds only the enabled connectors. The core's own jobs are declared through
    this hook by portal.jobs.builtin. Job ids must be unique; a duplicate stops start-up.
    """


@hookspec
def portal_admin_views(app: Flask) -> list[Any]:
    """Return extra flask-admin views for support staff.

    Views must subclass portal.admin.views.SecureModelView or SecureBaseView, so that access
    policy stays in one place.
    """


@hookspec
def portal_startup(app: Flask) -> None:
    """Check this plugin's configuration at the end of create_app().

    Raise portal.errors.StartupError with a message for staff to refuse to start.
    """


@hookspec
def portal_extract_finished(run: JobRun) -> None:
    """Called after every extract run, successful or not, with the finished run row.

    Must not raise: an exception is logged and swallowed so one plugin cannot fail a run.
    """

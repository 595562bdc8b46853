"""The plugin manager: one per app, loaded in a fixed order, reached through a typed façade."""
from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy
from flask import Flask, current_app

from portal.errors import StartupError, code_location
from portal.plugins import hookspecs

if TYPE_CHECKING:
    from portal.connectors import Connector
    from portal.jobs import JobSpec
    from portal.models import JobRun

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "portal"
EXTENSION_KEY = "portal.plugins"
# Core features register through the same hooks as any plugin.
DEFAULT_PLUGINS = ("portal.jobs.builtin", "portal.admin.builtin", "portal.api.plugin", "portal.school.plugin", "portal.retention.plugin",
                   "portal.privacy.plugin", "portal.ops.heartbeat", "portal.oversight.plugin")


class PortalPlugins:
    """Typed façade over the pluggy manager; the rest of the portal calls these methods, never pm.hook."""

    def __init__(self, app: Flask) -> None:
        self.pm = pluggy.PluginManager("portal")
        self.pm.add_hookspecs(hookspecs)
        cfg = app.config
        for name in cfg["PLUGINS_BLOCKED"]:
            self.pm.set_blocked(name)
        if cfg["PLUGINS_LOAD_ENTRYPOINTS"]:
            try:
                self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            except pluggy.PluginValidationError as exc:
                raise StartupError(f"an installed plugin does not match the plugin API: {exc}") from None
            except ImportError as exc:
                raise StartupError(f"an installed plugin (entry point group {ENTRY_POINT_GROUP!r}) cannot be imported: {exc}") from None
        for path in (*DEFAULT_PLUGINS, *cfg["PLUGINS"]):
            if self.pm.has_plugin(path) or self.pm.is_blocked(path):
                continue
            try:
                module = importlib.import_module(path)
            except ImportError as exc:
                raise StartupError(f"plugin {path!r} named in PORTAL_PLUGINS cannot be imported: {exc}") from None
            try:
                self.pm.register(module, name=path)
            except pluggy.PluginValidationError as exc:
                raise StartupError(f"plugin {path!r} does not match the plugin API: {exc}") from None
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise StartupError(f"a plugin implements a hook the portal does not define: {exc}") from None
        if cfg.get("TRACE_PLUGINS"):
            self.pm.add_hookcall_monitoring(
                lambda name, impls, kw: log.info("hook %s -> %d impls", name, len(impls)),
                lambda outcome, name, impls, kw: None,
            )
        self._installed = self._collect_connectors()
        enabled = cfg["ENABLED_CONNECTORS"]
        # "*" (the default) enables every installed connector: installing its package is the opt-in.
        self._enabled = {name: cls for name, cls in self._installed.items() if name in enabled or "*" in enabled}

    def _collect_connectors(self) -> dict[str, type[Connector]]:
        registry: dict[str, type[Connector]] = {}
        for classes in self.pm.hook.portal_register_connectors():
            for cls in classes or ():
                name = getattr(cls, "name", None)
                if not name:
                    raise StartupError(f"connector class {cls.__qualname__} has no name")
                if name in registry and registry[name] is not cls:
                    raise StartupError(
                        f"two plugins provide a connector named {name!r}: "
                        f"{registry[name].__module__} and {cls.__module__}; uninstall or block one"
                    )
                registry[name] = cls
        return registry

    # -- hooks, one typed method each

    def installed_connectors(self) -> Mapping[str, type[Connector]]:
        """Return every installed connector class by name, enabled or not."""
        return dict(self._installed)

    def connectors(self) -> Mapping[str, type[Connector]]:
        """Return the enabled connector classes by name."""
        return dict(self._enabled)

    def connector(self, name: str) -> type[Connector]:
        """Return one enabled connector class; KeyError when it is not installed and enabled."""
        return self._enabled[name]

    def jobs(self, app: Flask) -> list[JobSpec]:
        """Return every plugin's job specs; duplicate ids stop start-up."""
        specs: dict[str, JobSpec] = {}
        for group in self.pm.hook.portal_register_jobs(app=app, connectors=self.connectors()):
            for spec in group or ():
                if spec.id in specs:
                    raise StartupError(f"two plugins declare a job with id {spec.id!r}")
                specs[spec.id] = spec
        return list(specs.values())

    def admin_views(self, app: Flask) -> list[Any]:
        """Return the admin views all plugins contribute; a view outside the secured bases stops start-up."""
        from portal.admin.views import SecureBaseView, SecureModelView

        views = [view for group in self.pm.hook.portal_admin_views(app=app) for view in group or ()]
        for view in views:
            # Access policy lives in the two secured bases only; an unsecured view would open the admin.
            if not isinstance(view, (SecureBaseView, SecureModelView)):
                raise StartupError(
                    f"admin view {type(view).__qualname__} from {type(view).__module__} must subclass "
                    "portal.admin.views.SecureBaseView or SecureModelView"
                )
        return views

    def startup(self, app: Flask) -> None:
        """Validate each enabled connector's settings, then let every plugin check its configuration; a StartupError refuses start-up."""
        settings = app.config.setdefault("CONNECTORS", {})
        for name, cls in self._enabled.items():
            # Typed, with defaults filled in: connectors read their settings as declared, never coerce them.
            settings[name] = cls.check_settings(settings.get(name) or {})
        self.pm.hook.portal_startup(app=app)

    def extract_finished(self, run: JobRun) -> None:
        """Tell plugins an extract run finished; a failing plugin is logged, never fatal."""
        for impl in self.pm.hook.portal_extract_finished.get_hookimpls():
            try:
                # Pass only the arguments the implementation asks for (pluggy's opt-in arguments).
                impl.function(*[{"run": run}[arg] for arg in impl.argnames])
            except Exception as exc:
                log.error("plugin %s failed in portal_extract_finished for run %s with %s at %s", impl.plugin_name, run.id,
                          type(exc).__name__, code_location(exc))

    def describe(self) -> list[dict[str, Any]]:
        """Return each registered or blocked plugin with its hooks and distribution version."""
        dists = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        out = []
        for name, plugin in self.pm.list_name_plugin():
            dist = dists.get(id(plugin))
            blocked = plugin is None  # pluggy keeps a blocked name with no plugin behind it
            out.append(
                {
                    "name": name,
                    "version": dist.version if dist else None,
                    "hooks": [] if blocked else sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()),
                    "blocked": blocked,
                }
            )
        return sorted(out, key=lambda p: p["name"])


def init_app(app: Flask) -> PortalPlugins:
    """Build the app's plugin manager and store it in app.extensions."""
    plugins = PortalPlugins(app)
    app.extensions[EXTENSION_KEY] = plugins
    return plugins


def get_plugins(app: Flask | None = None) -> PortalPlugins:
    """Return the plugin façade of the given app, or of the current app."""
    return (app or current_app).extensions[EXTENSION_KEY]

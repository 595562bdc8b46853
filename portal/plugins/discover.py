"""Installed connector packages found without an app: their sandboxes, dev ports and test folders for make and scripts.

``python -m portal.plugins.discover sandboxes`` prints "<name> <dev port>" per installed connector with
a sandbox (scripts/run-dev.sh starts each); ``env`` prints the PORTAL_CONNECTORS__* assignments that
point each connector at its sandbox on its dev port, except those already set (make workers, make run);
``testpaths`` prints the tests folder of each installed connector package (make test).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pluggy

from portal.connectors import Connector
from portal.plugins import hookspecs

ENTRY_POINT_GROUP = "portal"
SANDBOX_HOST = "127.0.0.1"


def installed_connectors() -> dict[str, type[Connector]]:
    """Return the connector classes of every plugin installed under the ``portal`` entry-point group, by name."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return {cls.name: cls for group in pm.hook.portal_register_connectors() for cls in group or ()}


def sandbox_ports(connectors: Mapping[str, type[Connector]]) -> dict[str, int]:
    """Return the dev port of each connector whose package has a sandbox that can be served, by name."""
    return {name: cls.sandbox.dev_port for name, cls in sorted(connectors.items())
            if cls.sandbox is not None and cls.sandbox.serve is not None and cls.sandbox.dev_port}


def sandbox_environment(connectors: Mapping[str, type[Connector]], environ: Mapping[str, str]) -> dict[str, str]:
    """Return PORTAL_CONNECTORS__<name>__<key> values pointing each connector at its sandbox's dev port, unless set."""
    out: dict[str, str] = {}
    for name, port in sandbox_ports(connectors).items():
        sandbox = connectors[name].sandbox
        assert sandbox is not None
        for key, value in sandbox.settings_for(f"http://{SANDBOX_HOST}:{port}").items():
            variable = f"PORTAL_CONNECTORS__{name}__{key}"
            if variable not in environ:
                out[variable] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def connector_test_folders(connectors: Mapping[str, type[Connector]]) -> list[str]:
    """Return the ``tests`` folder beside each installed connector package (an editable install keeps it), relative when under here."""
    folders: list[str] = []
    for cls in connectors.values():
        module = sys.modules[cls.__module__]
        if not getattr(module, "__file__", None):
            continue
        folder = Path(module.__file__).resolve().parent.parent / "tests"
        if folder.is_dir():
            try:
                shown = str(folder.relative_to(Path.cwd()))
            except ValueError:
                shown = str(folder)
            if shown not in folders:
                folders.append(shown)
    return sorted(folders)


def main(argv: list[str] | None = None) -> int:
    """Print what a make target or script asks for: sandboxes, env or testpaths."""
    args = sys.argv[1:] if argv is None else argv
    if args not in (["sandboxes"], ["env"], ["testpaths"]):
        print("usage: python -m portal.plugins.discover sandboxes|env|testpaths", file=sys.stderr)
        return 2
    connectors = installed_connectors()
    if args == ["sandboxes"]:
        lines = [f"{name} {port}" for name, port in sandbox_ports(connectors).items()]
    elif args == ["env"]:
        lines = [f"{key}={value}" for key, value in sandbox_environment(connectors, os.environ).items()]
    else:
        lines = connector_test_folders(connectors)
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

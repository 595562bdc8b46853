"""Commands for plugins: list what is installed, enabled and which hooks each implements."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    group.add_command(plugins_command)


@click.command("plugins")
@with_appcontext
def plugins_command() -> None:
    """List registered plugins with their versions and hooks, then the connectors, whether each is enabled and its settings (secrets masked)."""
    from portal.plugins.manager import get_plugins

    plugins = get_plugins()
    for plugin in plugins.describe():
        version = f" {plugin['version']}" if plugin["version"] else ""
        hooks = "blocked" if plugin["blocked"] else ", ".join(plugin["hooks"]) or "-"
        click.echo(f"{plugin['name']}{version}: {hooks}")
    enabled = plugins.connectors()
    configured = current_app.config.get("CONNECTORS") or {}
    for name, cls in sorted(plugins.installed_connectors().items()):
        click.echo(f"connector {name}: {'enabled' if name in enabled else 'installed, not enabled'}")
        if name in enabled and configured.get(name):
            shown = ", ".join(f"{key}={value}" for key, value in sorted(cls.masked(configured[name]).items()))
            click.echo(f"  settings: {shown}")

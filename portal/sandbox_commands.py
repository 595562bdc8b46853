"""The `flask portal sandbox <connector>` command: run a connector package's sandbox server in the foreground."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from portal.plugins.manager import get_plugins


@click.command("sandbox")
@click.argument("connector")
@click.option("--port", type=int, default=8765, show_default=True, help="Port on 127.0.0.1.")
@click.option("--schools", type=click.IntRange(1, 50), default=2, show_default=True, help="Number of synthetic schools.")
@click.option("--pupils", type=click.IntRange(1, 20000), default=250, show_default=True, help="Pupils per school.")
@click.option("--days", type=click.IntRange(1, 400), default=190, show_default=True, help="School days of attendance.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the synthetic data.")
@click.option("--webhook-url", default=None, help="Where the sandbox POSTs its provider's webhook events, if it has any.")
@with_appcontext
def sandbox_command(connector: str, port: int, schools: int, pupils: int, days: int, seed: int,
                    webhook_url: str | None) -> None:
    """Serve synthetic schools through CONNECTOR's sandbox (Connector.sandbox, e.g. wonde) until interrupted."""
    cls = get_plugins().installed_connectors().get(connector)
    sandbox = cls.sandbox if cls is not None else None
    if sandbox is None or sandbox.serve is None:
        raise click.ClickException(
            f"no sandbox for connector {connector!r}: install its package (pip install -e connectors/{connector})"
        )
    extra = {"webhook_url": webhook_url} if webhook_url else {}
    sandbox.serve(port=port, schools=schools, pupils=pupils, days=days, seed=seed, echo=click.echo, **extra)


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    group.add_command(sandbox_command)

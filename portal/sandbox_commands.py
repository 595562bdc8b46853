"""The `flask portal sandbox <connector>` command: run a connector package's sandbox server in the foreground."""
from __future__ import annotations

import importlib

import click


@click.command("sandbox")
@click.argument("connector")
@click.option("--port", type=int, default=8765, show_default=True, help="Port on 127.0.0.1.")
@click.option("--schools", type=click.IntRange(1, 50), default=2, show_default=True, help="Number of synthetic schools.")
@click.option("--pupils", type=click.IntRange(1, 20000), default=250, show_default=True, help="Pupils per school.")
@click.option("--days", type=click.IntRange(1, 400), default=190, show_default=True, help="School days of attendance.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the synthetic data.")
@click.option("--webhook-url", default=None, help="Where the sandbox POSTs its provider's webhook events, if it has any.")
def sandbox_command(connector: str, port: int, schools: int, pupils: int, days: int, seed: int,
                    webhook_url: str | None) -> None:
    """Serve synthetic schools through CONNECTOR's sandbox (e.g. wonde) until interrupted."""
    if not connector.isidentifier():
        raise click.BadParameter("a connector name is letters, digits and underscores", param_hint="CONNECTOR")
    try:
        module = importlib.import_module(f"portal_{connector}.sandbox")
    except ImportError:
        raise click.ClickException(
            f"no sandbox for connector {connector!r}: install its package (pip install -e connectors/{connector})"
        ) from None
    extra = {"webhook_url": webhook_url} if webhook_url else {}
    module.serve(port=port, schools=schools, pupils=pupils, days=days, seed=seed, echo=click.echo, **extra)


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    group.add_command(sandbox_command)

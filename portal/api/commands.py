"""`flask portal api ...`: issue, rotate and revoke product API credentials from the command line."""
from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import func, select

from portal.api import credentials
from portal.extensions import db
from portal.models import ApiCredential, Product


def register(group: click.Group) -> None:
    """Add the `api` command group."""
    group.add_command(api)


@click.group("api", help="Product API credentials.")
def api() -> None:
    pass


def _product(name: str):
    product = db.session.execute(select(Product).where(func.lower(Product.name) == name.strip().lower())).scalar()
    if product is None:
        raise click.ClickException(f"no product is registered with the name {name!r}")
    return product


@api.command("issue")
@click.option("--product", "product_name", required=True, help="The product's registered name.")
@click.option("--label", default="", help="Who holds the credential.")
@click.option("--days", type=click.IntRange(1, 3650), default=None, help="Validity (default API_CREDENTIAL_DAYS).")
@with_appcontext
def issue(product_name: str, label: str, days: int | None) -> None:
    """Issue a credential and print its token once."""
    credential, token = credentials.issue(_product(product_name), label=label, valid_days=days)
    db.session.commit()
    click.echo(f"Credential {credential.id} expires {credential.expires_at:%Y-%m-%d}. Token (shown once):")
    click.echo(token)


@api.command("revoke")
@click.argument("credential_id", type=int)
@with_appcontext
def revoke(credential_id: int) -> None:
    """Revoke a credential from its next request on."""
    credential = db.session.get(ApiCredential, credential_id)
    if credential is None:
        raise click.ClickException(f"there is no credential {credential_id}")
    credentials.revoke(credential)
    db.session.commit()
    click.echo(f"Credential {credential_id} revoked.")

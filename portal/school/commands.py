"""Commands for operators: list, authorise and end a school's products (the Products tab, from a shell)."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from portal.api.authorisations import authorise_product, live_authorisation, revoke_product
from portal.extensions import db
from portal.extract.commands import _school_by_urn
from portal.models import Product
from portal.retention import orders


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    if products_group.name not in group.commands:
        group.add_command(products_group)


def _product_by_name(name: str):
    from sqlalchemy import func, select

    product = db.session.execute(select(Product).where(func.lower(Product.name) == name.strip().lower())).scalar()
    if product is None:
        known = ", ".join(db.session.execute(select(Product.name).order_by(Product.name)).scalars()) or "none"
        raise click.BadParameter(f"no product named {name!r} (products: {known})", param_hint="--product")
    return product


@click.group("products")
def products_group() -> None:
    """Which products a school authorises; authorise or end one (R3, R4, R7)."""


@products_group.command("list")
@click.option("--school", "urn", required=True, help="The school's URN.")
@with_appcontext
def products_list(urn: str) -> None:
    """List every product with whether the school authorises it and the categories it reads."""
    from sqlalchemy import select

    school = _school_by_urn(urn)
    for product in db.session.execute(select(Product).order_by(Product.name)).scalars():
        live = live_authorisation(school.id, product.id)
        status = f"authorised since {live.authorised_at:%Y-%m-%d}" if live else "not authorised"
        click.echo(f"{product.name}\t{status}\t{', '.join(sorted(product.categories())) or '-'}")


@products_group.command("authorise")
@click.option("--school", "urn", required=True, help="The school's URN.")
@click.option("--product", "name", required=True, help="The product's name (see `products list`).")
@with_appcontext
def products_authorise(urn: str, name: str) -> None:
    """Authorise a product to read the school's data it needs (as a school admin would on the Products tab)."""
    school, product = _school_by_urn(urn), _product_by_name(name)
    if live_authorisation(school.id, product.id) is not None:
        click.echo(f"{product.name} is already authorised for URN {school.urn}.")
        return
    authorise_product(school, product, None)  # audited there
    db.session.commit()
    click.echo(f"{product.name} is authorised for URN {school.urn}: it can read {', '.join(sorted(product.categories()))}.")


@products_group.command("end")
@click.option("--school", "urn", required=True, help="The school's URN.")
@click.option("--product", "name", required=True, help="The product's name (see `products list`).")
@click.option("--delete-now", is_flag=True, help="Delete data only this product read at the next sweep (R7), not in 6 months.")
@with_appcontext
def products_end(urn: str, name: str, delete_now: bool) -> None:
    """End a product's authorisation at once (R4); the product is told to delete its copies (R42)."""
    school, product = _school_by_urn(urn), _product_by_name(name)
    if revoke_product(school, product, None) is None:
        raise click.ClickException(f"{product.name} is not authorised for URN {school.urn}, so there is nothing to end.")
    order = orders.schedule_category_deletion(school, user=None, immediate=delete_now, within=product.categories())
    db.session.commit()
    when = "" if order is None else f" Data no other product needs is deleted on {order.due_on:%Y-%m-%d}."
    click.echo(f"{product.name} no longer has access to URN {school.urn}'s data.{when}")

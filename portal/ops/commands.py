"""Operator commands: `check --deploy`, `backup`, `backup-key`, `restore`, `upgrade`, and `portal serve` / `portal scheduler`."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from portal.models.base import utcnow
from portal.ops.backup import BackupError, backup, load_key, restore
from portal.ops.deploycheck import run_checks
from portal.ops.probes import migration_heads
from portal.ops.serve import scheduler_command, serve_command


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    for command in (check_command, backup_command, backup_key_command, restore_command, upgrade_command, serve_command):
        group.add_command(command)


def add_service_commands(group: click.Group) -> None:
    """Add the two long-running services to the top of the `portal` console script."""
    group.add_command(serve_command)
    group.add_command(scheduler_command, "scheduler")


def _report_checks() -> int:
    """Print one line per problem and return how many errors there were."""
    findings = run_checks()
    for finding in findings:
        click.echo(finding.line(), err=finding.level == "error")
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    click.echo(f"{errors} error(s), {warnings} warning(s)." if findings else "No problems found.")
    return errors


@click.command("check")
@click.option("--deploy", is_flag=True, help="Check the settings a production deployment needs (docs/deploy.md).")
@with_appcontext
def check_command(deploy: bool) -> None:
    """Check this deployment's settings; exits 1 when any is an error."""
    if not deploy:
        raise click.UsageError("say what to check: flask portal check --deploy")
    if _report_checks():
        sys.exit(1)


@click.command("backup-key")
def backup_key_command() -> None:
    """Print a new backup key; keep it off this machine (a password manager): without it no backup opens."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@click.command("backup")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: portal-<time>.backup here).")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), help="File holding the backup key (else PORTAL_BACKUP_KEY).")
@with_appcontext
def backup_command(output: Path | None, key_file: str | None) -> None:
    """Back up the database, the instance keys and the deletion ledger into one encrypted file."""
    output = output or Path(f"portal-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.backup")
    try:
        manifest = backup(output, load_key(key_file))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Backed up to {output} (database at {manifest['revision']}, ledger entry {manifest['ledger_seq']}).")


@click.command("restore")
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), help="File holding the backup key (else PORTAL_BACKUP_KEY).")
@click.option("--ledger", "ledger_copy", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The deletion ledger's own copy, when this machine's ledger file was lost.")
@click.option("--yes", is_flag=True, help="Do not ask before replacing the database.")
@with_appcontext
def restore_command(backup_file: Path, key_file: str | None, ledger_copy: Path | None, yes: bool) -> None:
    """Replace the database with a backup, upgrade it, then replay the deletion ledger (R35). Stop the services first."""
    if not yes:
        click.confirm("This replaces everything in the database with the backup. Are the web and scheduler services stopped?", abort=True)
    try:
        result = restore(backup_file, load_key(key_file), ledger_copy=ledger_copy)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    replayed = ", ".join(f"{n} {t}" for t, n in sorted(result["replayed"].items()) if n) or "nothing"
    click.echo(f"Restored the backup of {result['manifest']['created_at']}; ledger replayed ({result['ledger_file']}): deleted again {replayed}.")
    if result["ledger_note"]:
        click.echo(f"Warning: {result['ledger_note']}", err=True)


@click.command("upgrade")
@with_appcontext
def upgrade_command() -> None:
    """Upgrade the database to this version's schema, then run `check --deploy` (exits 1 on an error)."""
    from flask_migrate import upgrade

    before, _ = migration_heads()
    upgrade()
    after, _ = migration_heads()
    click.echo(f"Database upgraded from {','.join(sorted(before)) or 'empty'} to {','.join(sorted(after))}.")
    if _report_checks():
        sys.exit(1)

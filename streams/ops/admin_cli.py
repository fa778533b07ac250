"""Admin commands: `memstream acls` (ACLs per role) and `memstream migrate-deletions`."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.common.settings import load_settings
from streams.ops.acls import Role, apply_acls, grants, rpk_commands

acls_app = typer.Typer(help="Kafka ACLs per role (producer SDK, worker, read service, admin).",
                       no_args_is_help=True)

Principal = Annotated[str, typer.Option(help="principal, e.g. User:<name>")]


def _principals(producer: str, worker: str, serve: str) -> dict[Role, str]:
    return {Role.PRODUCER: producer, Role.WORKER: worker, Role.SERVE: serve}


@acls_app.command("apply")
def acls_apply(
    producer: Principal = "User:memstream-sdk",
    worker: Principal = "User:memstream-worker",
    serve: Principal = "User:memstream-serve",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print, change nothing")] = False,
) -> None:
    """Grant each role's principal what it needs and nothing more (run as the admin)."""
    settings = load_settings()
    principals = _principals(producer, worker, serve)
    if dry_run:
        for role, principal in principals.items():
            for grant in grants(settings, role):
                typer.echo(grant.describe(principal))
        typer.echo("dry run: nothing changed")
        return
    for line in apply_acls(settings, principals):
        typer.echo(f"granted {line}")


@acls_app.command("rpk")
def acls_rpk(
    producer: Principal = "User:memstream-sdk",
    worker: Principal = "User:memstream-worker",
    serve: Principal = "User:memstream-serve",
) -> None:
    """The same ACLs as `rpk acl create` commands, for a Redpanda cluster."""
    for line in rpk_commands(load_settings(), _principals(producer, worker, serve)):
        typer.echo(line)


def migrate_deletions_command() -> None:
    """Write a DELETE command for each memory deleted before commands.v1 existed (once,
    after upgrading, with a principal allowed to read memories.v1 and write commands.v1)."""
    from streams.service.commands import migrate_deletions

    for key in migrate_deletions(load_settings()):
        typer.echo(f"delete command written for {key}")

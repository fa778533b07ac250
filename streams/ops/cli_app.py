"""The ``memstream`` command's Typer apps and the helpers every command module shares.

The commands live by theme: ``cli_stack`` (dev stack, topics, schemas, demo), ``cli_data``
(produce, consume, export-dataset) and ``cli`` (worker, read service, MCP, replay, models,
and the entry point, which imports the others so their commands register).
"""

from __future__ import annotations

import typer

from streams.common.settings import Settings, load_settings
from streams.ops.admin_cli import acls_app, migrate_deletions_command

app = typer.Typer(
    help="memstream: durable memory for AI assistants, on a Kafka-compatible log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(
    help="The local stack: Kafka (KRaft) + Apicurio Registry.", no_args_is_help=True
)
schemas_app = typer.Typer(help="Versioned Avro schemas.", no_args_is_help=True)
topics_app = typer.Typer(help="memstream's topics.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(schemas_app, name="schemas")
models_app = typer.Typer(help="The embedding and speech models.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(acls_app, name="acls")
app.command("migrate-deletions")(migrate_deletions_command)
app.add_typer(models_app, name="models")


def say(message: str) -> None:
    """A progress or error line, on stderr (stdout carries the command's output)."""
    typer.echo(message, err=True)


def current_settings() -> Settings:
    """Settings from the environment, read when a command runs (not at import)."""
    return load_settings()

"""``memstream dev``, ``topics``, ``schemas`` and ``demo``: the local stack and what it holds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from streams.common.settings import Settings
from streams.ops.cli_app import app, current_settings, dev_app, say, schemas_app, topics_app


# -- dev ------------------------------------------------------------------------------------
@dev_app.command("up")
def dev_up(
    no_provision: Annotated[
        bool, typer.Option("--no-provision", help="only start; skip topics and schemas")
    ] = False,
    auth: Annotated[
        bool, typer.Option("--auth", help="SASL/SCRAM and ACLs on (use a state dir and ports "
                                          "of its own); the admin's password is in "
                                          "<state>/dev/kafka/admin.secret")
    ] = False,
) -> None:
    """Install (first run), start Kafka and the registry, create topics, register schemas."""
    from pydantic import SecretStr

    from streams.ops.devstack.stack import DevStack

    settings = current_settings()
    stack = DevStack(settings, auth=auth)
    for component in stack.up(say):
        typer.echo(component.describe())
    if auth:
        conf = stack.admin_client_config()
        settings = settings.model_copy(update={
            "security_protocol": conf["security.protocol"],
            "sasl_mechanism": conf["sasl.mechanism"], "sasl_username": conf["sasl.username"],
            "sasl_password": SecretStr(str(conf["sasl.password"]))})
        say(f"kafka: SASL/SCRAM on; admin password in {stack.kafka_dir / 'admin.secret'}")
    if not no_provision and _provision(settings):
        raise typer.Exit(1)


@dev_app.command("down")
def dev_down() -> None:
    """Stop what ``dev up`` started (and only that)."""
    from streams.ops.devstack.stack import DevStack

    DevStack(current_settings()).down(say)


@dev_app.command("status")
def dev_status() -> None:
    """What runs, where, and which versions; exit 1 unless both answer."""
    from streams.ops.devstack.stack import DevStack

    components = DevStack(current_settings()).status()
    for component in components:
        typer.echo(component.describe())
    if not all(c.answering for c in components):
        raise typer.Exit(1)


def _provision(settings: Settings) -> int:
    """Create topics and register schemas; return how many topic configs differ."""
    from streams.common.admin import ensure_topics
    from streams.common.registry import register_all

    report = ensure_topics(settings)
    for name in report.created:
        say(f"topic {name}: created")
    if report.unchanged:
        say(f"topics unchanged: {len(report.unchanged)}")
    for conflict in report.conflicts:
        say(f"CONFLICT {conflict}")
    register_all(settings, progress=say)
    return len(report.conflicts)


# -- topics ---------------------------------------------------------------------------------
@topics_app.command("create")
def topics_create() -> None:
    """Create missing topics; report (and exit 1 on) existing ones whose config differs."""
    from streams.common.admin import ensure_topics

    report = ensure_topics(current_settings())
    for name in report.created:
        typer.echo(f"created   {name}")
    for name in report.unchanged:
        typer.echo(f"unchanged {name}")
    for conflict in report.conflicts:
        typer.echo(f"CONFLICT  {conflict}")
    if report.conflicts:
        raise typer.Exit(1)


@topics_app.command("list")
def topics_list() -> None:
    """The declared topics, with their keys and configs."""
    from streams.common.topics import TOPICS

    settings = current_settings()
    for spec in TOPICS:
        config = ", ".join(f"{k}={v}" for k, v in spec.config().items())
        typer.echo(f"{settings.topic(spec.base):<24} key={spec.key_field:<15} {config}")


# -- schemas --------------------------------------------------------------------------------
@schemas_app.command("check")
def schemas_check(
    directory: Annotated[Path | None, typer.Option("--dir", help="schema folder")] = None,
) -> None:
    """Check each version against all earlier ones under its topic's policy (no registry)."""
    from streams.common.schemas import SCHEMA_DIR, check_all, load_schema_versions
    from streams.common.topics import TOPICS

    folder = directory or SCHEMA_DIR
    policies = {t.schema: t.compatibility for t in TOPICS}
    versions = load_schema_versions(folder)
    problems = check_all(folder, {k: v for k, v in policies.items() if k in versions})
    for problem in problems:
        typer.echo(f"INCOMPATIBLE {problem}")
    if problems:
        raise typer.Exit(1)
    total = sum(len(v) for v in versions.values())
    typer.echo(f"ok: {total} schema versions in {len(versions)} subjects are compatible")


@schemas_app.command("register")
def schemas_register() -> None:
    """Check locally, then register every version and set each subject's compatibility."""
    from streams.common.registry import register_all

    schemas_check(None)
    register_all(current_settings(), progress=typer.echo)


# -- demo ------------------------------------------------------------------------------------
@app.command("demo")
def demo() -> None:
    """End to end on the local stack: up, produce a session, run the worker, show its memories."""
    from streams.ops.demo import run_demo

    # The demo prints what it explains; the in-process worker's INFO lines (models loaded,
    # partitions assigned) are not part of it. Warnings and errors still show.
    logging.getLogger().setLevel(logging.WARNING)
    from streams.ops.devstack.stack import DevStack

    settings = current_settings()
    for component in DevStack(settings).up(say):
        typer.echo(component.describe())
    if _provision(settings):
        # Topic configs that differ on the default prefix (listed above) do not stop the
        # demo: it runs on a prefix of its own, created with the declared configs.
        say("(the CONFLICT lines concern the default prefix's topics; the demo uses its own)")
    run_demo(current_settings(), typer.echo)

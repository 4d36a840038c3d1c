"""What the production image would see, printed as JSON: run in a child process by the deploy tests.

``python -m tests.deploy.production_facts`` loads ``orders_platform.settings.production`` (with
build-time dummies for the required URLs, as the Dockerfile's collectstatic step does), reads
a JSON list of argv lists on stdin and prints the declared consumers, the NATS users
(``manage.py nats_auth``) and, for every argv, the error its command's own argument parser
reports (None when it parses). The test settings add
test-only consumers, so the registry must come from the production settings.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shlex
import sys

DUMMIES = {
    "DJANGO_SETTINGS_MODULE": "orders_platform.settings.production",
    "ALLOWED_HOSTS": "build.invalid",
    "DATABASE_URL": "postgres://build:build@build.invalid:5432/build",
    "NATS_URL": "nats://build.invalid:4222",
    "CELERY_BROKER_URL": "redis://build.invalid:6379/0",
}
CELERY_COMMANDS = {"worker", "beat"}


def environment() -> dict[str, str]:
    """The child's environment: production settings, nothing of the developer's NATS/DB variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("NATS_", "EVENTBUS_", "DATABASE_"))}
    return {**env, **DUMMIES, "SECRET_KEY": secrets.token_urlsafe(50)}


def command_error(argv: list[str], registry) -> str | None:
    """Why ``argv`` would fail at once in the image, or None."""
    if argv[:2] == ["sh", "-c"] and len(argv) == 3:
        for part in argv[2].split("&&"):
            error = command_error(shlex.split(part), registry)
            if error:
                return error
        return None
    if argv[:2] == ["python", "manage.py"]:
        return _management_error(argv[2:], registry)
    if argv[:1] == ["celery"]:
        return _celery_error(argv[1:])
    if argv[:1] == ["gunicorn"]:
        return _gunicorn_error(argv[1:])
    return f"not a command of the platform's image: {argv}"


def _management_error(args: list[str], registry) -> str | None:
    from django.core.management import CommandError, get_commands, load_command_class

    if not args:
        return "manage.py without a command"
    name, rest = args[0], args[1:]
    commands = get_commands()
    if name not in commands:
        return f"manage.py has no command {name!r}"
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            options = parser.parse_args(rest)
    except CommandError as exc:  # what Django's parser raises outside a terminal
        return f"manage.py {name} {' '.join(rest)}: {exc}"
    if name == "runconsumer" and options.name not in registry.consumers and options.name != "outbox":
        return f"runconsumer {options.name!r}: no such consumer (declared: {sorted(registry.consumers)})"
    return None


def _celery_error(args: list[str]) -> str | None:
    if args[:2] != ["--app", "orders_platform"]:
        return f"celery must run with --app orders_platform: {args}"
    if len(args) < 3 or args[2] not in CELERY_COMMANDS:
        return f"celery command must be one of {sorted(CELERY_COMMANDS)}: {args}"
    from celery.bin.celery import celery

    command = celery.commands[args[2]]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [arg for arg in args[3:] if arg.startswith("-") and arg.split("=")[0] not in known]
    return f"celery {args[2]}: unknown options {unknown}" if unknown else None


def _gunicorn_error(args: list[str]) -> str | None:
    import importlib

    from gunicorn.config import Config

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = Config().parser().parse_args(args)
    except SystemExit:
        return f"gunicorn {args}: {stderr.getvalue().strip()}"
    module, _, attribute = parsed.args[0].partition(":")
    try:
        found = hasattr(importlib.import_module(module), attribute or "application")
    except ImportError as exc:
        return f"gunicorn: {parsed.args[0]}: {exc}"
    return None if found else f"gunicorn: {parsed.args[0]} does not exist"


def main() -> None:
    import django

    django.setup()
    from django.conf import settings

    from apps.eventbus.jetstream import permissions
    from apps.eventbus.registry import registry

    argvs = json.load(sys.stdin)
    consumers = {
        name: {
            "streams": registry.streams_of(spec),
            "batch_size": spec.setting("BATCH_SIZE"),
            "pipeline": spec.pipeline,
            "ack_wait": spec.setting("ACK_WAIT"),
        }
        for name, spec in registry.consumers.items()
    }
    json.dump(
        {
            "consumers": consumers,
            "streams": sorted(registry.streams),
            "max_payload": settings.EVENTBUS["MAX_PAYLOAD"],
            "nats_account": permissions.ACCOUNT,
            "nats_users": {user.name: user.password_variable for user in permissions.users(registry)},
            "errors": {json.dumps(argv): command_error(argv, registry) for argv in argvs},
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()

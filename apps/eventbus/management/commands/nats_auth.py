from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.eventbus.jetstream.permissions import render, users
from apps.eventbus.registry import registry


class Command(BaseCommand):
    help = (
        "Print the nats-server accounts/users configuration (per-subject permissions per role) generated "
        "from the declared streams and consumers; --output writes it, --check compares a file with it."
    )

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--output", type=Path, help="write the configuration to this file")
        target.add_argument("--check", type=Path, help="exit non-zero when this file differs from the configuration")
        target.add_argument("--users", action="store_true", help="list the users and their password variables")

    def handle(self, *args, output, check, users: bool, **options):
        text = render(registry)
        if users:
            for user in _users():
                self.stdout.write(f"{user.name}\t{user.password_variable}\t{user.inbox_prefix}")
        elif output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            self.stdout.write(f"wrote {output}")
        elif check is not None:
            try:
                current = check.read_text()
            except OSError as exc:
                raise CommandError(f"cannot read {check}: {exc}") from None
            if current != text:
                raise CommandError(
                    f"{check} differs from what the registry gives: run `manage.py nats_auth --output {check}`"
                )
            self.stdout.write(f"{check} is up to date")
        else:
            self.stdout.write(text, ending="")


def _users():
    return users(registry)

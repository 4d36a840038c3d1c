import asyncio
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from apps.eventbus.consuming.replay import replay
from apps.eventbus.consuming.settlement import SETTLED
from apps.eventbus.registry import registry


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2026-11-25T10:00:00+00:00")
    return parsed


class Command(BaseCommand):
    help = "Re-run a consumer's handlers over a stream's history (idempotent: the ledger skips what is done)."

    def add_arguments(self, parser):
        parser.add_argument("--stream", required=True)
        start = parser.add_mutually_exclusive_group()
        start.add_argument("--from-seq", type=int, default=None)
        start.add_argument("--since", type=_time, default=None, help="ISO 8601 time with a zone")
        parser.add_argument("--consumer", default="audit", help="a declared consumer (default: audit)")
        parser.add_argument("--batch", type=int, default=500)

    def handle(self, *args, stream, from_seq, since, consumer, batch, **options):
        try:
            spec = registry.consumer(consumer)
        except KeyError as exc:
            raise CommandError(exc.args[0]) from None

        def progress(position, last, outcomes):
            counts = ", ".join(f"{kind} {count}" for kind, count in sorted(outcomes.items()))
            self.stdout.write(f"{stream} #{position}/{last}: {counts}")

        try:
            outcomes = asyncio.run(
                replay(spec, stream, from_seq=from_seq, since=since, batch_size=batch, progress=progress)
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        finally:
            close_old_connections()
        total = sum(outcomes.values())
        self.stdout.write(f"replayed {total} message(s) of {stream} through {consumer}: {dict(outcomes)}")
        if failed := sum(count for verdict, count in outcomes.items() if verdict not in SETTLED):
            raise CommandError(f"{failed} message(s) failed during the replay")

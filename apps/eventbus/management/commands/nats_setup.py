import asyncio

from django.core.management.base import BaseCommand

from apps.eventbus.connection import connect
from apps.eventbus.registry import registry
from apps.eventbus.setup import ensure_all


class Command(BaseCommand):
    help = "Create or update every declared JetStream stream and durable consumer; print what changed."

    def handle(self, *args, **options):
        for line in asyncio.run(self._setup()):
            self.stdout.write(line)

    async def _setup(self) -> list[str]:
        client = await connect()
        try:
            return await ensure_all(client.jetstream(), registry)
        finally:
            await client.close()

import asyncio

from django.core.management.base import BaseCommand

from apps.eventbus.jetstream.connection import connect
from apps.eventbus.jetstream.provisioning import ensure_all
from apps.eventbus.registry import registry


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

import json
import random
import time
import uuid
from collections import Counter

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.eventbus.producing.outbox import outbox_write_raw, wire_headers
from apps.inventory.models import Product
from apps.orders.errors import OrderError
from apps.orders.services import order_place


class Command(BaseCommand):
    help = (
        "Place fake orders through the real code path (order_place, outbox, relay, saga) at a steady rate, "
        "optionally with poison messages and payment declines, with a progress line per second."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=float, default=5.0, help="orders per second")
        parser.add_argument("--duration", type=float, default=30.0, help="seconds")
        parser.add_argument("--poison-rate", type=float, default=0.0, help="share of malformed orders.created.v1")
        parser.add_argument("--decline-rate", type=float, default=None, help="set the gateway simulator's")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, rate, duration, poison_rate, decline_rate, seed, **options):
        if rate <= 0 or duration <= 0 or not 0 <= poison_rate <= 1:
            raise CommandError("--rate and --duration must be positive, --poison-rate within 0..1")
        skus = list(Product.objects.values_list("sku", flat=True))
        if not skus:
            raise CommandError("the catalogue is empty: run `manage.py seed_catalogue` first")
        if decline_rate is not None:
            self._set_decline_rate(decline_rate)
        chance = random.Random(seed)
        counts: Counter = Counter()
        started = time.monotonic()
        next_report = started + 1
        for n in range(int(rate * duration)):
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
            if chance.random() < poison_rate:
                self._poison(chance)
                counts["poison"] += 1
            else:
                lines = [
                    (sku, chance.randint(1, 2)) for sku in chance.sample(skus, k=min(len(skus), chance.randint(1, 3)))
                ]
                try:
                    order_place(customer_id=f"sim-{chance.randint(1, 50)}", lines=lines)
                    counts["placed"] += 1
                except OrderError as exc:
                    counts[exc.code] += 1
            if time.monotonic() >= next_report:
                next_report += 1
                self.stdout.write(self._line(counts, time.monotonic() - started))
                self.stdout.flush()
        self.stdout.write(self._line(counts, time.monotonic() - started) + " (done)")

    def _line(self, counts: Counter, elapsed: float) -> str:
        total = sum(counts.values())
        detail = ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))
        return f"{elapsed:5.1f}s  {total} order(s), {total / max(elapsed, 1e-9):.1f}/s  [{detail}]"

    def _poison(self, chance: random.Random) -> None:
        """An orders.created.v1 that fails its contract: the consumers dead-letter it at once."""
        message_id = str(uuid.uuid4())
        body = {"message_id": message_id, "order_id": f"poison-{message_id[:8]}", "total_amount": "not money"}
        with transaction.atomic():
            outbox_write_raw(
                message_id=message_id,
                subject="orders.created.v1",
                aggregate_id=body["order_id"],
                body=json.dumps(body),
                headers={**wire_headers("orders.created.v1"), "Event-Version": "1"},
            )

    def _set_decline_rate(self, rate: float) -> None:
        try:
            response = httpx.put(f"{settings.PAYMENT_GATEWAY_URL}/_control", json={"decline_rate": rate}, timeout=5)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise CommandError(f"could not set the gateway simulator's decline rate: {exc}") from None
        self.stdout.write(f"gateway decline rate set to {rate}")

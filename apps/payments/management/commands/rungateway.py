import signal
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.payments.simulator import Controls, serve


class Command(BaseCommand):
    help = "Run the payment gateway simulator (its own HTTP process and ledger) until SIGTERM/SIGINT."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8070)
        parser.add_argument("--ledger", type=Path, default=None, help="default: <data dir>/gateway/ledger.jsonl")
        parser.add_argument("--latency-ms", type=int, default=0)
        parser.add_argument("--decline-rate", type=float, default=0.0)

    def handle(self, *args, host, port, ledger, latency_ms, decline_rate, **options):
        ledger = ledger or settings.DATA_DIR / "gateway" / "ledger.jsonl"
        try:
            controls = Controls()
            controls.update({"latency_ms": latency_ms, "decline_rate": decline_rate})
            server = serve(host, port, ledger, controls)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.stdout.write(f"payment gateway simulator on http://{host}:{server.server_port} (ledger {ledger})")
        self.stdout.flush()
        stopping = threading.Event()

        def stop(*_):
            if not stopping.is_set():
                stopping.set()
                threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        server.serve_forever(poll_interval=0.2)
        server.server_close()
        self.stdout.write("payment gateway simulator stopped")
        sys.stdout.flush()

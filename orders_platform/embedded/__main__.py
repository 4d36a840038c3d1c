"""``python -m orders_platform.embedded status|stop``: the development servers, without loading Django
(loading the development settings would start them)."""

import argparse
import sys

from orders_platform.embedded import dev
from orders_platform.settings.paths import DATA_DIR


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m orders_platform.embedded", description=__doc__)
    parser.add_argument("action", choices=["status", "stop"])
    action = parser.parse_args().action
    if action == "stop":
        stopped = dev.stop(DATA_DIR)
        print(f"stopped embedded {' and '.join(stopped)}" if stopped else "no embedded server was running")
        return 0
    for name, server in (("PostgreSQL", dev.postgres_server(DATA_DIR)), ("nats-server", dev.nats_server(DATA_DIR))):
        pid = server.pid()
        print(f"{name}: {f'running (pid {pid})' if pid else 'stopped'}  [{DATA_DIR}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

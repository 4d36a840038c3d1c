from pathlib import Path

from .env import env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Embedded PostgreSQL/NATS stores, the development Celery broker, beat's schedule.
DATA_DIR = Path(env_str("PLATFORM_DATA_DIR", str(BASE_DIR / ".data"))).expanduser().resolve()

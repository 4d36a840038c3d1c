import json
from pathlib import Path

from django.core.management.base import BaseCommand

from apps.eventbus.contracts import all_contracts


class Command(BaseCommand):
    help = "Write a JSON Schema per event contract (<subject>.schema.json) into DIR."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)

    def handle(self, *args, directory: Path, **options):
        directory.mkdir(parents=True, exist_ok=True)
        for subject, contract in all_contracts().items():
            schema = contract.model_json_schema(mode="validation")
            schema = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": f"urn:orders-platform:event:{subject}",
                "title": subject,
                "description": (contract.__doc__ or "").strip(),
                "x-nats-subject": subject,
                **{key: value for key, value in schema.items() if key not in ("title", "description")},
            }
            path = directory / f"{subject}.schema.json"
            path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
            self.stdout.write(f"wrote {path}")
        self.stdout.write(f"{len(all_contracts())} contract(s)")

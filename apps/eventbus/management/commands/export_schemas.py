from pathlib import Path

from django.core.management.base import BaseCommand

from apps.eventbus.compatibility import contract_schemas, write_schemas


class Command(BaseCommand):
    help = (
        "Write a JSON Schema per event contract (<subject>.schema.json) into DIR. "
        "The committed snapshot in contracts/ is kept by check_contracts --update."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)

    def handle(self, *args, directory: Path, **options):
        paths = write_schemas(directory, contract_schemas())
        for path in paths:
            self.stdout.write(f"wrote {path}")
        self.stdout.write(f"{len(paths)} contract(s)")

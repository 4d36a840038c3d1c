from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.eventbus.compatibility import (
    SnapshotComparison,
    SnapshotError,
    compare_snapshot,
    contract_schemas,
    read_snapshot,
    schema_path,
    write_schemas,
)


class Command(BaseCommand):
    help = (
        "Compare every event contract's JSON Schema with the committed snapshot (contracts/) and fail on a "
        "change that breaks a version's promise: a property removed or newly required, a type no longer "
        "accepted, an enum narrowed, a constraint tightened, a contract removed. The right fix for a "
        "breaking change is a new contract <domain>.<event>.v<N+1> beside the old one (kept until no "
        "producer sends it), not --accept-breaking. Compatible changes and new contracts pass; --update "
        "writes them into the snapshot (commit it with the change)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--snapshot", type=Path, default=None, help="the snapshot folder (default: contracts/ in the repository)"
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="also fail when a compatible change or a new contract is not in the snapshot yet (CI)",
        )
        parser.add_argument(
            "--update", action="store_true", help="rewrite the snapshot from the code; refused on a breaking change"
        )
        parser.add_argument(
            "--accept-breaking",
            action="store_true",
            help="with --update: write the snapshot in spite of breaking changes (e.g. retiring a contract "
            "no producer sends and no stream holds any more)",
        )

    def handle(self, *args, snapshot: Path | None, strict: bool, update: bool, accept_breaking: bool, **options):
        if accept_breaking and not update:
            raise CommandError("--accept-breaking only applies to --update")
        directory = snapshot or Path(settings.BASE_DIR) / "contracts"
        current = contract_schemas()
        try:
            old = read_snapshot(directory)
        except SnapshotError as exc:
            raise CommandError(str(exc)) from None
        result = compare_snapshot(old, current)
        shown = _shown(directory)
        for subject in result.compatible:
            self.stdout.write(f"{subject}: changed compatibly")
        for subject in result.added:
            self.stdout.write(f"{subject}: new contract")
        if result.breaking and not accept_breaking:
            raise CommandError(self._breaking_message(result, shown, refused=update))
        if update:
            self._update(directory, old, current, result)
        elif not result.up_to_date:
            advice = (
                f"the snapshot in {shown} is out of date: run `manage.py check_contracts --update` "
                "and commit it with the change"
            )
            if strict:
                raise CommandError(advice)
            self.stdout.write(f"compatible; {advice}")
        else:
            self.stdout.write(f"{len(current)} contract(s) match the snapshot in {shown}")

    def _update(self, directory: Path, old: dict, current: dict, result: SnapshotComparison) -> None:
        for change in result.breaking:
            self.stderr.write(f"accepted as breaking: {change}")
        stale = {subject: schema for subject, schema in current.items() if old.get(subject) != schema}
        for path in write_schemas(directory, stale):
            self.stdout.write(f"wrote {path}")
        for subject in result.removed:
            path = schema_path(directory, subject)
            path.unlink()
            self.stdout.write(f"removed {path}")
        if not (stale or result.removed):
            self.stdout.write(f"the snapshot in {_shown(directory)} is up to date; nothing written")

    @staticmethod
    def _breaking_message(result: SnapshotComparison, directory: Path, *, refused: bool) -> str:
        lines = [f"{len(result.breaking)} breaking change(s) against the snapshot in {directory}:"]
        lines += [f"  - {change}" for change in result.breaking]
        if refused:
            lines.append("The snapshot was not updated.")
        lines.append(
            "Within a version a contract may only grow (a new optional property, a wider enum, a looser "
            "constraint). Add a new contract <domain>.<event>.v<N+1> instead and keep the old one until no "
            "producer sends it; if the break is deliberate, `manage.py check_contracts --update --accept-breaking`."
        )
        return "\n".join(lines)


def _shown(directory: Path) -> Path:
    """The snapshot folder as a reader of the repository names it (``contracts``), when it is in there."""
    try:
        return directory.resolve().relative_to(Path(settings.BASE_DIR).resolve())
    except ValueError:
        return directory

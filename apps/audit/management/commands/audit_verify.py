from django.core.management.base import BaseCommand, CommandError

from apps.audit.chain import verify
from apps.audit.models import AuditEntry


class Command(BaseCommand):
    help = "Check the audit log's hash chain from the first entry; report the first break."

    def handle(self, *args, **options):
        checked, broken = verify(AuditEntry.objects.order_by("id").iterator(chunk_size=2000))
        if broken is not None:
            raise CommandError(
                f"audit chain broken at entry {broken.entry_id} after {checked} good entries: {broken.reason}"
            )
        self.stdout.write(f"audit chain verified: {checked} entries")

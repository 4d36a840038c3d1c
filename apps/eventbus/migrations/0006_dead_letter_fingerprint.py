# Dead letters grouped by the fingerprint of their failure (issue 14).
#
# The backfill computes each existing row's fingerprint from its stored values with the same
# pure function the recorder uses, a chunk of rows at a time (only the columns it reads; a
# traceback may be 16,000 characters), so memory stays bounded however large the table.

from django.db import migrations, models

BACKFILL_CHUNK = 1000


def backfill_fingerprints(apps, schema_editor):
    from apps.eventbus.deadletters.fingerprint import fingerprint_of

    DeadLetter = apps.get_model("eventbus", "DeadLetter")
    columns = ("pk", "consumer", "subject", "error_type", "error", "traceback")
    last = 0
    while True:
        rows = list(
            DeadLetter.objects.using(schema_editor.connection.alias)
            .filter(pk__gt=last)
            .order_by("pk")
            .values_list(*columns)[:BACKFILL_CHUNK]
        )
        if not rows:
            return
        updated = []
        for pk, consumer, subject, error_type, error, traceback in rows:
            found = fingerprint_of(
                consumer=consumer, subject=subject, error_type=error_type, error=error, traceback=traceback
            )
            updated.append(
                DeadLetter(pk=pk, fingerprint=found.value, error_signature=found.signature, error_frame=found.frame)
            )
        DeadLetter.objects.using(schema_editor.connection.alias).bulk_update(
            updated, ["fingerprint", "error_signature", "error_frame"]
        )
        last = rows[-1][0]


class Migration(migrations.Migration):

    dependencies = [
        ('eventbus', '0005_dead_letter_bodies'),
    ]

    operations = [
        migrations.AddField(
            model_name='deadletter',
            name='error_frame',
            field=models.CharField(blank=True, default='', help_text='Where it was raised (file:function)', max_length=300),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='error_signature',
            field=models.CharField(blank=True, default='', help_text='The error with its variable parts as placeholders', max_length=500),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='fingerprint',
            field=models.CharField(blank=True, default='', help_text='SHA-256 of consumer, subject, error type, signature, frame', max_length=64),
        ),
        migrations.RunPython(backfill_fingerprints, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name='deadletter',
            index=models.Index(fields=['fingerprint', 'status'], name='dead_letter_fingerprint_idx'),
        ),
    ]

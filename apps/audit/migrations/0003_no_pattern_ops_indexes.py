from django.db import migrations, models

# The indexes 0001 created for unique=True/db_index=True, renamed or dropped in place: the
# unique constraints and the correlation index stay (no rebuild), the three
# varchar_pattern_ops ("_like") indexes, for LIKE 'prefix%' lookups nobody makes, go.
FORWARD = """
DROP INDEX IF EXISTS audit_auditentry_message_id_96bb6fed_like;
DROP INDEX IF EXISTS audit_auditentry_hash_718ebbcd_like;
DROP INDEX IF EXISTS audit_auditentry_correlation_id_3ac25952_like;
ALTER INDEX audit_auditentry_correlation_id_3ac25952 RENAME TO audit_entry_correlation_idx;
"""

BACKWARD = """
ALTER INDEX audit_entry_correlation_idx RENAME TO audit_auditentry_correlation_id_3ac25952;
CREATE INDEX audit_auditentry_message_id_96bb6fed_like ON audit_auditentry (message_id varchar_pattern_ops);
CREATE INDEX audit_auditentry_hash_718ebbcd_like ON audit_auditentry (hash varchar_pattern_ops);
CREATE INDEX audit_auditentry_correlation_id_3ac25952_like ON audit_auditentry (correlation_id varchar_pattern_ops);
"""


class Migration(migrations.Migration):
    """Three fewer indexes to maintain on every append (each a random-key B-tree insert per entry)."""

    dependencies = [("audit", "0002_append_only")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, BACKWARD)],
            state_operations=[
                migrations.AlterField("auditentry", "message_id", models.CharField(max_length=100)),
                migrations.AlterField("auditentry", "correlation_id", models.CharField(blank=True, max_length=100)),
                migrations.AlterField("auditentry", "hash", models.CharField(max_length=64)),
                migrations.AddConstraint(
                    "auditentry",
                    models.UniqueConstraint(fields=["message_id"], name="audit_auditentry_message_id_key"),
                ),
                migrations.AddConstraint(
                    "auditentry", models.UniqueConstraint(fields=["hash"], name="audit_auditentry_hash_key")
                ),
                migrations.AddIndex(
                    "auditentry", models.Index(fields=["correlation_id"], name="audit_entry_correlation_idx")
                ),
            ],
        )
    ]

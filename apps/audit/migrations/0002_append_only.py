from django.db import migrations

FORWARD = """
CREATE FUNCTION audit_entry_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_auditentry is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_entry_append_only
    BEFORE UPDATE OR DELETE ON audit_auditentry
    FOR EACH ROW EXECUTE FUNCTION audit_entry_is_append_only();
"""

BACKWARD = """
DROP TRIGGER audit_entry_append_only ON audit_auditentry;
DROP FUNCTION audit_entry_is_append_only();
"""


class Migration(migrations.Migration):
    """The database itself refuses UPDATE and DELETE on audit entries, whoever asks."""

    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]

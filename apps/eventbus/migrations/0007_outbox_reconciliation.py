# Outbox <-> stream reconciliation runs (issue 14).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('eventbus', '0006_dead_letter_fingerprint'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ReconciliationRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('completed', 'Completed'), ('failed', 'Failed'), ('skipped', 'Skipped')], default='queued', max_length=20)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('window_start', models.DateTimeField(blank=True, help_text='Rows written from', null=True)),
                ('window_end', models.DateTimeField(blank=True, help_text='Rows sent until (now minus the settle delay)', null=True)),
                ('first_id', models.BigIntegerField(blank=True, help_text='The first outbox row checked', null=True)),
                ('last_id', models.BigIntegerField(blank=True, help_text='The last outbox row checked', null=True)),
                ('complete', models.BooleanField(default=False, help_text='The walk reached the end of the window (else the next run goes on from last_id)')),
                ('checked', models.PositiveIntegerField(default=0)),
                ('missing', models.PositiveIntegerField(default=0)),
                ('republished', models.PositiveIntegerField(default=0)),
                ('failed', models.PositiveIntegerField(default=0)),
                ('republished_ids', models.JSONField(blank=True, default=list, help_text='Message ids republished (the first 100)')),
                ('error', models.TextField(blank=True, help_text='Why the run or some of its rows failed (bounded)')),
                ('triggered_by', models.ForeignKey(blank=True, help_text='The operator who asked for it; empty: the schedule', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-id'],
                'permissions': [('run_reconciliation', 'Can run the outbox reconciliation now')],
            },
        ),
    ]

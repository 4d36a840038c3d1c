# Replays of a stream through one consumer, started from the admin (issue 14).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('operations', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ReplayRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('consumer', models.CharField(max_length=100)),
                ('stream', models.CharField(max_length=100)),
                ('from_seq', models.PositiveBigIntegerField(blank=True, help_text='the first stream sequence to replay', null=True)),
                ('since', models.DateTimeField(blank=True, help_text='replay the messages stored from this time on', null=True)),
                ('batch_size', models.PositiveIntegerField(default=500)),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('completed', 'Completed'), ('cancelled', 'Cancelled'), ('failed', 'Failed')], default='queued', max_length=20)),
                ('position', models.PositiveBigIntegerField(default=0, help_text='the last stream sequence replayed')),
                ('last_seq', models.PositiveBigIntegerField(default=0, help_text="the stream's last sequence: where the run stops")),
                ('counts', models.JSONField(blank=True, default=dict, help_text='messages per verdict (handled, duplicate...)')),
                ('error', models.CharField(blank=True, max_length=1000)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('cancelled_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('created_by', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'replay',
                'ordering': ['-created_at', '-id'],
                'permissions': [('start_replay', 'Can start and cancel replays')],
                'default_permissions': ('view',),
                'constraints': [models.UniqueConstraint(condition=models.Q(('status__in', ['queued', 'running'])), fields=('consumer',), name='one_active_replay_per_consumer'), models.CheckConstraint(condition=models.Q(('from_seq__isnull', True), ('since__isnull', True), _connector='OR'), name='replay_from_a_sequence_or_a_time')],
            },
        ),
    ]

# Dead letters keep their body whole: its exact bytes when text cannot hold them, its size,
# and the bodies too large to travel again with their dead-letter headers.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('eventbus', '0004_outbox_lease_and_dead_letters'),
    ]

    operations = [
        migrations.AlterField(
            model_name='deadletter',
            name='data',
            field=models.TextField(help_text='The original message body, as received (escaped when raw_data is set)'),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='raw_data',
            field=models.BinaryField(blank=True, editable=False, help_text="The original body's exact bytes when data cannot hold them (not UTF-8, or NUL characters)", null=True),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='size',
            field=models.PositiveIntegerField(default=0, help_text="The original body's size in bytes"),
        ),
        migrations.RunSQL(
            "UPDATE eventbus_deadletter SET size = octet_length(data)",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.CreateModel(
            name='DeadLetterBody',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('consumer', models.CharField(max_length=100)),
                ('stream', models.CharField(max_length=100)),
                ('stream_sequence', models.BigIntegerField()),
                ('body', models.BinaryField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('consumer', 'stream', 'stream_sequence'), name='dead_letter_body_once_per_message')],
            },
        ),
    ]

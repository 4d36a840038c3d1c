from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    """A partial index on the PENDING orders, for the stuck-orders gauge (apps/orders/monitoring.py).
    Built concurrently: a big orders table keeps taking orders meanwhile."""

    atomic = False

    dependencies = [
        ("orders", "0002_order_decided_at"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="order",
            index=models.Index(
                condition=models.Q(("status", "PENDING")), fields=["created_at"], name="orders_pending_created"
            ),
        ),
    ]

from django.db import models


class Consumer(models.Model):
    """Not a table: the consumers and streams page reads their live state from NATS. The
    model gives that page its place in the admin and its permissions."""

    name = models.CharField(max_length=100, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [("pause_consumer", "Can pause and resume consumers")]
        verbose_name = "consumer and stream health"
        verbose_name_plural = "consumers and streams"

    def __str__(self) -> str:
        return self.name

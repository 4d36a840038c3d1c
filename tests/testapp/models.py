from django.db import models


class Effect(models.Model):
    """What a test handler did. No unique constraint: a double application must be visible."""

    consumer = models.CharField(max_length=100)
    message_id = models.CharField(max_length=100)
    subject = models.CharField(max_length=200)
    value = models.IntegerField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.consumer} {self.message_id}"


class Switch(models.Model):
    """A flag tests flip to make a handler fail or heal, as an outage would."""

    name = models.CharField(max_length=50, unique=True)
    on = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.name}={self.on}"

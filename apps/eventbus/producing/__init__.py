"""Producing: an event is written to the outbox in the business transaction (``outbox``) and
published to JetStream by the relay (``relay``, ``manage.py runrelay``)."""

"""The operator's cockpit in the Django admin, one module per concern:

- ``dead_letters``: the dead letters, their pages and actions (reprocess, edit, discard, bulk);
- ``bulk_runs``: bulk reprocess runs, their progress and cancel;
- ``replays``: replays of a stream through one consumer: start, progress, cancel;
- ``consumers``: the live consumers-and-streams page, pause and resume;
- ``outbox``: the outbox (and its backlog), the consumers' ledger, the events the relay set aside;
- ``reconciliation``: the outbox <-> stream reconciliation's runs, and "Run now";
- ``forms`` and ``widgets``: the forms of the pages and actions, and how things are shown.

Every admin is read-only; changes go through services, which record them in the audit log.
Importing the modules registers their admins (Django's autodiscovery imports this package).
"""

from . import bulk_runs, consumers, dead_letters, outbox, reconciliation, replays  # noqa: F401

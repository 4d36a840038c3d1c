"""Consuming: a fetched message (``delivery``) goes through the handlers and the ledger in one
transaction (``processing``), the settlement table decides what happens to it
(``settlement``), and the runner carries that out (``runner``, ``manage.py runconsumer``).
``replay`` runs a consumer's handlers over a stream's history."""

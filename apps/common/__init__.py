"""What every app may use and that belongs to none: the shared admin helpers (``admin.py``) and
the fail points of the fault tests (``failpoints.py``). A plain package, not a Django app: it
has no models, templates or admin registrations of its own."""

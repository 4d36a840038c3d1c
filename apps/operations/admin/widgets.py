"""How the cockpit shows things: status colours and badges, payloads as indented JSON that never
break a page."""

from __future__ import annotations

from django.utils.html import format_html

from apps.common.admin import indented_json, pretty_json
from apps.eventbus.models import DeadLetter

STATUS_COLOURS = {
    DeadLetter.Status.PENDING: "#ba2121",
    DeadLetter.Status.REPROCESSING: "#b36b00",
    DeadLetter.Status.RESOLVED: "#2e7d32",
    DeadLetter.Status.FAILED_AGAIN: "#8e0000",
    DeadLetter.Status.DISCARDED: "#666",
}
# The cockpit's jobs (replays, reconciliation runs): their statuses share these values.
RUN_STATUS_COLOURS = {
    "queued": "#666",
    "running": "#b36b00",
    "completed": "#2e7d32",
    "cancelled": "#666",
    "failed": "#ba2121",
    "skipped": "#999",
}


def run_badge(run, label: str | None = None):
    """A job's status as a badge (``label``: its status's own by default)."""
    return badge(run.get_status_display() if label is None else label, RUN_STATUS_COLOURS.get(run.status, "#666"))


def as_text(value) -> str:
    """Indented JSON when ``value`` is JSON, else the text as it is (for forms and diffs); JSON
    nested too deep to indent stays as it is too."""
    try:
        return indented_json(value) or value
    except RecursionError:
        return value


def shown(value):
    """``pretty_json``, but never a 500 for a payload from outside: JSON nested too deep to
    indent is shown as the text it is."""
    try:
        return pretty_json(value)
    except RecursionError:
        return format_html('<pre class="raw">{}</pre>', value)


def badge(label: str, colour: str):
    return format_html(
        '<span class="cockpit-badge" style="background:{};color:#fff;padding:1px 6px;border-radius:8px;'
        'white-space:nowrap">{}</span>',
        colour,
        label,
    )

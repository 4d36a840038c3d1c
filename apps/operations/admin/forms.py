"""The forms of the cockpit's pages and actions. They only collect input: the services check it
(a payload against its event's contract, a rate against the settings' bounds)."""

from __future__ import annotations

from django import forms
from django.contrib.admin.helpers import ActionForm


class DiscardForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=2000,
        help_text="Required: why this message will not be processed. Kept in its history and the audit log.",
    )


class BulkReprocessForm(forms.Form):
    def __init__(self, *args, max_rate: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["rate"] = forms.FloatField(
            min_value=0.1, max_value=max_rate, help_text="Dead letters per second, at most."
        )


class EditForm(forms.Form):
    """The payload only; the service checks it against the event's contract."""

    data = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 24, "cols": 100, "spellcheck": "false", "class": "vLargeTextField"}),
        label="Payload",
        help_text="The message body to deliver instead of the original (JSON). It must satisfy the event's contract.",
    )


class SetAsideActionForm(ActionForm):
    """The changelist's action bar of the events the relay set aside, with the reason a discard needs."""

    reason = forms.CharField(required=False, max_length=500, help_text="Why (required to discard)")

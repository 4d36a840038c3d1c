"""Consumers and streams: not a model list but the live state of every stream and consumer
(refreshed in place), with server-side pause and resume for operators, and a link to start a
replay through each consumer (``replays.py``)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from apps.common.admin import ReadOnlyAdmin
from apps.eventbus.jetstream.control import consumer_pause, consumer_resume
from apps.eventbus.jetstream.monitoring import NatsUnreachable

from ..models import Consumer
from ..selectors import health


@admin.register(Consumer)
class ConsumerHealthAdmin(ReadOnlyAdmin):
    """Not a model list: the live state of every stream and consumer, refreshed in place."""

    REFRESH_SECONDS = 3

    def has_pause_permission(self, request) -> bool:
        return request.user.has_perm("operations.pause_consumer")

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("", wrap(self.health_view), name="operations_consumer_changelist"),
            path("live/", wrap(self.fragment_view), name="operations_consumer_live"),
            path("<str:name>/pause/", wrap(require_POST(self.pause_view)), name="operations_consumer_pause"),
            path("<str:name>/resume/", wrap(require_POST(self.resume_view)), name="operations_consumer_resume"),
        ]

    def _context(self, request) -> dict:
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = health()
        changelist = reverse("admin:eventbus_deadletter_changelist")
        return {
            "health": now,
            "consumers": [(c, f"{changelist}?consumer__exact={c.name}") for c in now.consumers],
            "can_pause": self.has_pause_permission(request),
            "can_replay": request.user.has_perm("operations.start_replay"),  # a "Replay…" link per consumer
        }

    def health_view(self, request):
        return TemplateResponse(
            request,
            "admin/operations/consumer/health.html",
            {
                **self.admin_site.each_context(request),
                **self._context(request),
                "opts": self.model._meta,
                "title": "Consumers and streams",
                "refresh_seconds": self.REFRESH_SECONDS,
                "live_url": reverse("admin:operations_consumer_live"),
            },
        )

    def fragment_view(self, request):
        return TemplateResponse(request, "admin/operations/consumer/_live.html", self._context(request))

    def _act(self, request, name: str, act, done: str):
        if not self.has_pause_permission(request):
            raise PermissionDenied
        try:
            act(name=name, actor=request.user)
        except KeyError as exc:
            self.message_user(request, str(exc.args[0]), messages.ERROR)
        except NatsUnreachable as exc:
            self.message_user(request, f"NATS is unreachable, nothing changed: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"Consumer {name} {done}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:operations_consumer_changelist"))

    def pause_view(self, request, name: str):
        return self._act(request, name, consumer_pause, "paused until resumed (server-side: no deliveries)")

    def resume_view(self, request, name: str):
        return self._act(request, name, consumer_resume, "resumed")

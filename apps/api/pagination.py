"""Pagination with sizes from ``settings.API``: cursors for time-ordered lists (stable while
rows are added), page numbers for the catalogue."""

from django.conf import settings
from rest_framework.pagination import CursorPagination, PageNumberPagination


class _SettingsPageSize:
    page_size_query_param = "page_size"

    def get_page_size(self, request):
        self.page_size = settings.API["PAGE_SIZE"]
        self.max_page_size = settings.API["MAX_PAGE_SIZE"]
        return super().get_page_size(request)


class NewestFirstCursorPagination(_SettingsPageSize, CursorPagination):
    ordering = ("-created_at", "-id")


class DeadLetterCursorPagination(_SettingsPageSize, CursorPagination):
    ordering = ("-last_failed_at", "-id")


class CataloguePagination(_SettingsPageSize, PageNumberPagination):
    pass

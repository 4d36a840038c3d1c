from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """State changes go through services (and events); the admin shows, it does not edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

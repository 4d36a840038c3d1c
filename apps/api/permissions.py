from rest_framework.permissions import BasePermission


def has_perm(permission: str) -> type[BasePermission]:
    """A permission class for one Django permission (``app_label.codename``), granted
    through the user's groups (``operators``, ``auditors``) or to a superuser."""

    class HasPermission(BasePermission):
        message = f"You need the {permission} permission."

        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated and request.user.has_perm(permission))

    HasPermission.__name__ = HasPermission.__qualname__ = f"Has_{permission.replace('.', '_')}"
    return HasPermission

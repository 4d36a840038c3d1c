"""Domain errors as data: each has an HTTP status and a stable code for the API's error shape."""


class OrderError(Exception):
    status_code = 400
    code = "order_error"

    def __init__(self, message: str, *, fields: dict | None = None) -> None:
        super().__init__(message)
        self.message, self.fields = message, fields or {}


class InvalidOrder(OrderError):
    code = "invalid_order"


class UnknownSku(OrderError):
    code = "unknown_sku"


class InvalidTransition(OrderError):
    status_code = 409
    code = "invalid_transition"


class OrderNotFound(OrderError):
    status_code = 404
    code = "order_not_found"

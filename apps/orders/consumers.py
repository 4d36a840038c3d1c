from apps.eventbus.registry import ConsumerSpec, StreamSpec, registry

H = "apps.orders.handlers"

registry.register_stream(StreamSpec("ORDERS", ("orders.>",), description="Order lifecycle events"))
registry.register_consumer(
    ConsumerSpec(
        "orders",
        handlers={
            "payments.completed.v1": f"{H}.on_payment_completed",
            "payments.failed.v1": f"{H}.on_payment_failed",
            "inventory.reserved.v1": f"{H}.on_inventory_reserved",
            "inventory.rejected.v1": f"{H}.on_inventory_rejected",
        },
        description="The order saga: confirms an order paid and reserved, cancels it when either fails",
    )
)

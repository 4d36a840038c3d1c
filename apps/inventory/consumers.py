from apps.eventbus.registry import ConsumerSpec, StreamSpec, registry

registry.register_stream(StreamSpec("INVENTORY", ("inventory.>",), description="Stock reservations and releases"))
registry.register_consumer(
    ConsumerSpec(
        "inventory",
        handlers={
            "orders.created.v1": "apps.inventory.handlers.on_order_created",
            "orders.cancelled.v1": "apps.inventory.handlers.on_order_cancelled",
        },
        description="Reserves stock for new orders (all lines or none) and releases it on cancellation",
    )
)

from apps.eventbus.registry import ConsumerSpec, StreamSpec, registry

H = "apps.orders.handlers"

registry.register_stream(StreamSpec("ORDERS", ("orders.>",), description="Order lifecycle events"))
registry.register_consumer(
    ConsumerSpec(
        "orders",
        # One batch handler for every outcome: the runner hands it a fetched batch as one group.
        handlers={
            "payments.completed.v1": f"{H}.on_outcomes",
            "payments.failed.v1": f"{H}.on_outcomes",
            "inventory.reserved.v1": f"{H}.on_outcomes",
            "inventory.rejected.v1": f"{H}.on_outcomes",
        },
        description="The order saga: confirms an order paid and reserved, cancels it when either fails",
    )
)

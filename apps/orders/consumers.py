from apps.eventbus.registry import DLQ_PREFIX, ConsumerSpec, StreamSpec, registry

from .services import SagaStep

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
            # Compensation done: the order shows its money refunded and its stock released.
            "payments.refunded.v1": f"{H}.on_outcomes",
            "inventory.released.v1": f"{H}.on_outcomes",
        },
        description="The order saga: confirms an order paid and reserved, cancels it when either fails; "
        "records refunds and releases",
        gauges=("apps.orders.monitoring.refresh_gauges",),  # orders_stuck, orders_pending_oldest_age_seconds
    )
)
# A second durable on the DLQ stream (next to the eventbus's dead-letters recorder), on the
# dead letters of the saga's steps only.
registry.register_consumer(
    ConsumerSpec(
        "saga-failures",
        handlers={f"{DLQ_PREFIX}.{step}": f"{H}.on_step_dead_lettered" for step in SagaStep},
        description="Cancels a PENDING order whose orders.created.v1 a saga step (inventory, payments) "
        "dead-lettered, with the step's error as the reason; compensation follows",
        raw=True,
    )
)

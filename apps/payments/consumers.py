from apps.eventbus.registry import ConsumerSpec, StreamSpec, registry

registry.register_stream(StreamSpec("PAYMENTS", ("payments.>",), description="Charges, failures and refunds"))
registry.register_consumer(
    ConsumerSpec(
        "payments",
        handlers={
            "orders.created.v1": "apps.payments.handlers.on_order_created",
            "orders.cancelled.v1": "apps.payments.handlers.on_order_cancelled",
            "orders.refund_requested.v1": "apps.payments.handlers.on_refund_requested",
        },
        description="Charges new orders through the gateway (idempotency key per order), refunds cancelled ones "
        "and those an operator refunds; "
        "the provider is called for many orders at once, outside the batch's transaction",
        batch_size=100,
        pipeline=8,  # batches whose provider calls overlap; PAYMENT_GATEWAY_CONCURRENCY bounds the calls
        max_deliver=10,
        backoff=(1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
    )
)

from apps.eventbus.registry import ConsumerSpec, registry

H = "apps.audit.handlers.on_any_event"

registry.register_consumer(
    ConsumerSpec(
        "audit",
        handlers={"orders.>": H, "payments.>": H, "inventory.>": H, "operator.>": H},
        description="Every event of every domain stream, and every operator action, into the append-only, "
        "hash-chained audit log",
        raw=True,
        batch_size=500,
    )
)

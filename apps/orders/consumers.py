from apps.eventbus.registry import StreamSpec, registry

registry.register_stream(StreamSpec("ORDERS", ("orders.>",), description="Order lifecycle events"))

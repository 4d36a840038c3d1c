from apps.eventbus.registry import StreamSpec, registry

registry.register_stream(StreamSpec("PAYMENTS", ("payments.>",), description="Charges, failures and refunds"))

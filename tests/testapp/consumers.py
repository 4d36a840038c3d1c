from apps.eventbus.registry import ConsumerSpec, StreamSpec, registry

H = "tests.testapp.handlers"
FAST = {"ack_wait": 3, "backoff": (0.2, 0.5, 1.0), "max_deliver": 3}

registry.register_stream(StreamSpec("TESTING", ("testing.>",), description="Eventbus tests"))
registry.register_consumer(
    ConsumerSpec(
        "testing",
        handlers={
            "testing.happened.v1": f"{H}.on_happened",
            "testing.happened.v2": f"{H}.on_happened_v2",
            "testing.unversioned.>": f"{H}.on_happened",
        },
        **FAST,
    )
)
registry.register_consumer(ConsumerSpec("testing-other", handlers={"testing.happened.v1": f"{H}.on_happened_other"}))
registry.register_consumer(ConsumerSpec("testing-raw", handlers={"testing.>": f"{H}.on_any_raw"}, raw=True))
registry.register_consumer(
    ConsumerSpec(
        "testing-advisory",
        handlers={"testing.happened.v1": f"{H}.on_happened"},
        ack_wait=4,
        max_deliver=2,
        backoff=(0.2,),
    )
)
registry.register_consumer(
    ConsumerSpec(
        "testing-prepared",
        handlers={"testing.happened.v1": f"{H}.on_happened_prepared"},
        batch_size=5,
        pipeline=4,
        **FAST,
    )
)

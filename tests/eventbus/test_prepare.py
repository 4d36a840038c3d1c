"""A batch handler's prepare step: slow I/O outside the batch's transaction, several batches at once."""

from apps.eventbus.models import ProcessedMessage
from tests.bus import wait_for
from tests.testapp.events import SomethingHappened
from tests.testapp.handlers import PrepareProbe
from tests.testapp.models import Effect


def test_prepare_steps_of_several_batches_overlap_and_their_results_reach_the_handler(bus):
    PrepareProbe.reset()
    events = [SomethingHappened(value=i) for i in range(40)]
    for event in events:
        bus.publish_event(event)
    with bus.consumer("testing-prepared"):
        wait_for(lambda: bus.drained("TESTING", "testing-prepared"), timeout=30)
    effects = dict(Effect.objects.filter(consumer="testing-prepared").values_list("message_id", "value"))
    assert effects == {event.message_id: event.value * 10 for event in events}, "each handled once, with its result"
    assert ProcessedMessage.objects.filter(consumer="testing-prepared").count() == 40
    assert PrepareProbe.most >= 2, f"batches of 5 in a pipeline of 4 prepare at once (most: {PrepareProbe.most})"
    assert sorted(value for call in PrepareProbe.calls for value in call) == list(range(40))


def test_an_event_its_prepare_step_fails_for_fails_alone(bus):
    PrepareProbe.reset()
    events = [SomethingHappened(value=i, mode="permanent" if i == 2 else "ok") for i in range(5)]
    for event in events:
        bus.publish_event(event)
    with bus.consumer("testing-prepared"):
        wait_for(lambda: bus.stream_messages("DLQ") == 1, timeout=30)
        wait_for(lambda: bus.drained("TESTING", "testing-prepared"), timeout=30)
    handled = set(Effect.objects.filter(consumer="testing-prepared").values_list("message_id", flat=True))
    assert handled == {event.message_id for i, event in enumerate(events) if i != 2}
    dead = bus.get("DLQ", 1)
    assert b'"value":2' in dead.data.replace(b" ", b"")
    assert [2] in PrepareProbe.calls, "after the batch's prepare failed, each event was prepared alone"

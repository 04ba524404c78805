"""The push service's challenge flow on the real RabbitMQ and FerretDB: a LoginRequested
delivered twice makes one challenge and notifies each device once."""
import uuid
from datetime import timedelta

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from clients.device import Device
from shared import events
from shared.clock import utcnow
from services.push import challenges
from services.push.service import PushService
from tests.conftest import service_db

pytestmark = pytest.mark.integration


class Listener:
    name = "listener"
    dispatched = []

    @events.handles(events.PushDispatched)
    def on_dispatched(self, payload):
        self.dispatched.append(payload)


@pytest.fixture
def running(container_factory, rabbit_config, mongo_client):
    Listener.dispatched = []
    push = container_factory(PushService, rabbit_config)
    listener = container_factory(Listener, rabbit_config)
    push.start()
    listener.start()
    return push, listener, event_dispatcher(rabbit_config)


def emit(dispatch, event_cls, **payload):
    dispatch(event_cls.source, event_cls.name, events.build_event(event_cls, **payload))


def test_a_redelivered_login_request_makes_one_challenge_and_one_notification(running, mongo_client):
    push, listener, dispatch = running
    device = Device.new("unused")
    device.device_id, username = f"dev_{uuid.uuid4().hex}", f"W{uuid.uuid4().int % 10**9:09d}"
    with entrypoint_waiter(push, "on_device_activated"):
        emit(dispatch, events.DeviceActivated, device_id=device.device_id, username=username, platform="poll",
             push_token=None, public_key=device.public_key_pem, device_name="Phone")
    now = utcnow()
    request = dict(request_id=f"lr_{uuid.uuid4().hex}", username=username, number="42",
                   context={"ip": "127.0.0.1", "user_agent": "test", "requested_at": now},
                   expires_at=now + timedelta(seconds=60))
    with entrypoint_waiter(listener, "on_dispatched"):
        emit(dispatch, events.LoginRequested, **request)
    with entrypoint_waiter(push, "on_login_requested"):
        emit(dispatch, events.LoginRequested, **request)   # the same request again

    challenge_id = challenges.challenge_id_for(request["request_id"])
    assert service_db(mongo_client, "push").challenges.count_documents({"request_id": request["request_id"]}) == 1
    assert [event["challenge_id"] for event in Listener.dispatched] == [challenge_id]

    # The device sees it once, with the browser's number among three choices.
    timestamp = int(now.timestamp())
    with entrypoint_hook(push, "pending_challenges") as poll:
        seen = poll(device.device_id, timestamp, device.sign("mycepa-poll-v1", device.device_id, timestamp))
    assert [c["challenge_id"] for c in seen] == [challenge_id]
    assert "42" in seen[0]["number_choices"] and len(set(seen[0]["number_choices"])) == 3

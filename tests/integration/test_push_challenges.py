"""The push service's challenge flow on the real RabbitMQ and FerretDB: a LoginRequested
delivered twice makes one challenge and notifies each device once."""
import time
import uuid
from datetime import timedelta

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from clients.device import Device
from shared import config, events
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
    dispatch(event_cls.service, event_cls.name, events.build_event(event_cls, **payload))


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
        seen = poll(device.device_id, timestamp, device.sign("mycepa-poll-v1", device.device_id, timestamp))["challenges"]
    assert [c["challenge_id"] for c in seen] == [challenge_id]
    assert "42" in seen[0]["number_choices"] and len(set(seen[0]["number_choices"])) == 3


# -- deliveries interrupted half way (a push process killed mid-handler) ---------------

class Outcomes:
    name = "outcomes"
    seen = []

    @events.handles(events.AccessConfirmed)
    def on_confirmed(self, payload):
        self.seen.append(("AccessConfirmed", payload["request_id"]))

    @events.handles(events.LoginExpired)
    def on_expired(self, payload):
        self.seen.append(("LoginExpired", payload["request_id"]))


@pytest.fixture
def with_outcomes(running, container_factory, rabbit_config):
    Outcomes.seen = []
    outcomes = container_factory(Outcomes, rabbit_config)
    outcomes.start()
    return (*running, outcomes)


def activated_device(push, dispatch):
    device = Device.new("unused")
    device.device_id, device.username = f"dev_{uuid.uuid4().hex}", f"W{uuid.uuid4().int % 10**9:09d}"
    with entrypoint_waiter(push, "on_device_activated"):
        emit(dispatch, events.DeviceActivated, device_id=device.device_id, username=device.username,
             platform="poll", push_token=None, public_key=device.public_key_pem, device_name="Phone")
    return device


def login_request(username, seconds=60):
    now = utcnow()
    return dict(request_id=f"lr_{uuid.uuid4().hex}", username=username, number="42",
                context={"ip": "127.0.0.1", "user_agent": "test", "requested_at": now},
                expires_at=now + timedelta(seconds=seconds))


def polled(push, device):
    timestamp = int(utcnow().timestamp())
    with entrypoint_hook(push, "pending_challenges") as poll:
        return poll(device.device_id, timestamp, device.sign("mycepa-poll-v1", device.device_id, timestamp))["challenges"]


def test_a_login_request_killed_after_storing_its_challenge_is_finished_on_redelivery(running, mongo_client):
    # What a push process killed right after the challenge's insert leaves behind: the
    # challenge, but not the entries the device and the expiry sweep read, and no
    # notification. (Before the fix the redelivery saw the challenge and only notified.)
    push, listener, dispatch = running
    device = activated_device(push, dispatch)
    request = login_request(device.username)
    challenge_id = challenges.challenge_id_for(request["request_id"])
    db = service_db(mongo_client, "push")
    db.challenges.insert_one({
        "_id": challenge_id, "request_id": request["request_id"], "username": device.username,
        "nonce": challenges.new_nonce(), "number": "42", "number_choices": challenges.number_choices("42"),
        "context": request["context"], "expires_at": request["expires_at"], "status": "pending",
        "created_at": utcnow()})
    assert polled(push, device) == []

    with entrypoint_waiter(listener, "on_dispatched"):
        emit(dispatch, events.LoginRequested, **request)   # the redelivery

    assert [c["challenge_id"] for c in polled(push, device)] == [challenge_id]
    assert db.pending.find_one({"_id": challenge_id}) is not None
    assert [event["challenge_id"] for event in Listener.dispatched] == [challenge_id]


def test_an_answer_recorded_by_a_process_that_died_is_finished_by_the_devices_retry(with_outcomes, mongo_client):
    push, listener, dispatch, outcomes = with_outcomes
    device = activated_device(push, dispatch)
    request = login_request(device.username)
    with entrypoint_waiter(listener, "on_dispatched"):
        emit(dispatch, events.LoginRequested, **request)
    challenge = polled(push, device)[0]
    # The answer was claimed, then the process died: no event, the challenge still pending.
    db = service_db(mongo_client, "push")
    db.answers.insert_one({"_id": challenge["challenge_id"], "outcome": "approved", "device_id": device.device_id,
                           "fraud": False, "at": utcnow()})

    signature = device.sign("mycepa-push-v1", challenge["challenge_id"], challenge["nonce"], "approve", "42")
    with entrypoint_waiter(outcomes, "on_confirmed"):
        with entrypoint_hook(push, "respond") as respond:
            answered = respond(challenge["challenge_id"], device.device_id, "approve", "42", signature)

    assert answered == {"challenge_id": challenge["challenge_id"], "status": "approved"}
    assert Outcomes.seen == [("AccessConfirmed", request["request_id"])]
    assert db.challenges.find_one({"_id": challenge["challenge_id"]})["status"] == "approved"
    assert polled(push, device) == []


def test_every_pending_challenge_expires_even_without_its_sweep_entry(with_outcomes, mongo_client):
    push, listener, dispatch, outcomes = with_outcomes
    device = activated_device(push, dispatch)
    request = login_request(device.username, seconds=60)
    with entrypoint_waiter(listener, "on_dispatched"):
        emit(dispatch, events.LoginRequested, **request)
    challenge_id = challenges.challenge_id_for(request["request_id"])
    db = service_db(mongo_client, "push")
    # Long overdue, and its entry in the sweep's list lost.
    db.challenges.update_one({"_id": challenge_id}, {"$set": {"expires_at": utcnow() - timedelta(minutes=5)}})
    db.pending.delete_one({"_id": challenge_id})

    with entrypoint_waiter(outcomes, "on_expired", timeout=10):
        with entrypoint_hook(push, "purge_expired") as purge:   # the 5-minute backstop
            purge()

    assert Outcomes.seen == [("LoginExpired", request["request_id"])]
    # The event goes out before the status is written (push/service.py `_announce`).
    for _ in range(40):
        if db.challenges.find_one({"_id": challenge_id})["status"] == "expired":
            break
        time.sleep(0.05)
    assert db.challenges.find_one({"_id": challenge_id})["status"] == "expired"


def test_with_typed_numbers_the_device_gets_no_choices_and_the_typed_number_decides(
        monkeypatch, container_factory, rabbit_config, mongo_client):
    monkeypatch.setenv("PUSH_NUMBER_ENTRY", "type")
    monkeypatch.setattr(config, "_loaded", {})        # settings are read once per process
    Listener.dispatched = []
    push = container_factory(PushService, rabbit_config)
    listener = container_factory(Listener, rabbit_config)
    push.start()
    listener.start()
    dispatch = event_dispatcher(rabbit_config)
    device = activated_device(push, dispatch)
    requests_made = [login_request(device.username) for _ in range(2)]
    for request in requests_made:
        with entrypoint_waiter(listener, "on_dispatched"):
            emit(dispatch, events.LoginRequested, **request)
    seen = {c["challenge_id"]: c for c in polled(push, device)}
    assert len(seen) == 2 and all(c["number_choices"] == [] for c in seen.values())

    def answer(challenge, number):
        signature = device.sign("mycepa-push-v1", challenge["challenge_id"], challenge["nonce"], "approve", number)
        with entrypoint_hook(push, "respond") as respond:
            return respond(challenge["challenge_id"], device.device_id, "approve", number, signature)

    right, wrong = seen.values()
    assert answer(right, "42") == {"challenge_id": right["challenge_id"], "status": "approved"}
    assert answer(wrong, "24") == {"challenge_id": wrong["challenge_id"], "status": "denied",
                                   "reason": "wrong_number"}

"""The push service's login requests on the real RabbitMQ and FerretDB: made once, told
to each device, answered once, and what a killed process leaves half done finished."""
import time
import uuid
from datetime import timedelta

import pymongo
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_hook, entrypoint_waiter
from pymongo import monitoring

from clients.device import Device
from harness.waiting import eventually
from shared import events
from shared.clock import utcnow
from shared.config import MongoSettings, load_settings
from shared.mongo import connect
from services.push.service import PushService
from services.push.storage import PushStorage
from tests.conftest import TEST_ENV, service_db, started_push

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
    push = started_push(container_factory(PushService, rabbit_config))
    listener = container_factory(Listener, rabbit_config)
    listener.start()
    return push, listener, event_dispatcher(rabbit_config)


def emit(dispatch, event_cls, **payload):
    dispatch(event_cls.service, event_cls.name, events.build_event(event_cls, **payload))


CONTEXT = {"ip": "127.0.0.1", "user_agent": "test"}


def requested(push, listener, username):
    """A push login request made as the gateway makes it, once its device was notified."""
    with entrypoint_waiter(listener, "on_dispatched"):
        with entrypoint_hook(push, "request_login") as request_login:
            return request_login(username, CONTEXT)


def test_a_request_is_stored_once_and_a_redelivered_login_requested_changes_nothing(running, mongo_client):
    push, listener, dispatch = running
    device = activated_device(push, dispatch)
    request = requested(push, listener, device.username)
    db = service_db(mongo_client, "push")
    stored = db.requests.find_one({"request_id": request["request_id"]})
    assert stored["username"] == device.username and stored["number"] == request["number"]
    assert [event["request_id"] for event in Listener.dispatched] == [request["request_id"]]

    # The event delivered again (a push process killed as it notified): the device is
    # notified again (the alert collapses on the challenge id), nothing else changes.
    with entrypoint_waiter(listener, "on_dispatched"):
        emit(dispatch, events.LoginRequested, request_id=request["request_id"], username=device.username,
             number=request["number"], context={**CONTEXT, "requested_at": stored["at"]},
             expires_at=stored["expires_at"])
    assert db.requests.count_documents({"username": device.username}) == 1
    assert [event["challenge_id"] for event in Listener.dispatched] == [stored["challenge_id"]] * 2

    # The device sees it once, with the browser's number among three choices.
    seen = polled(push, device)
    assert [c["challenge_id"] for c in seen] == [stored["challenge_id"]]
    assert request["number"] in seen[0]["number_choices"] and len(set(seen[0]["number_choices"])) == 3


class Finds(monitoring.CommandListener):
    """The finds of every client made after it is registered, per collection, while
    `recording` (pymongo cannot unregister a listener: `record()` registers it once)."""
    seen, recording, registered = [], False, False

    @classmethod
    def record(cls):
        if not cls.registered:
            monitoring.register(cls())   # before the container makes its client
            cls.registered = True
        cls.seen.clear()
        cls.recording = True

    def started(self, event):
        if self.recording and event.command_name == "find":
            self.seen.append(event.command["find"])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


@pytest.fixture
def counted(container_factory, rabbit_config):
    """(push, listener, dispatch, an activated device) with the finds of push's client
    counted from here on (`Finds.seen`)."""
    Finds.record()
    Listener.dispatched = []
    push = started_push(container_factory(PushService, rabbit_config))
    listener = container_factory(Listener, rabbit_config)
    listener.start()
    dispatch = event_dispatcher(rabbit_config)
    # Its notice too (keep_notice reads the user's devices to alert them): not in the count.
    with entrypoint_waiter(push, "keep_notice"):
        device = activated_device(push, dispatch)
    Finds.seen.clear()
    yield push, listener, dispatch, device
    Finds.recording = False


def test_a_request_made_here_is_notified_from_what_making_it_found(counted, mongo_client):
    """Its document and its devices were just read or written: notifying them reads
    neither again (services/push/expiry.py); the same event delivered again, as after a
    restart, reads them."""
    push, listener, dispatch, device = counted
    request = requested(push, listener, device.username)
    assert Finds.seen.count("requests") == 0 and Finds.seen.count("devices") == 1   # request_login's own
    stored = service_db(mongo_client, "push").requests.find_one({"request_id": request["request_id"]})
    Finds.seen.clear()
    with entrypoint_waiter(listener, "on_dispatched"):
        emit(dispatch, events.LoginRequested, request_id=request["request_id"], username=device.username,
             number=request["number"], context={**CONTEXT, "requested_at": stored["at"]},
             expires_at=stored["expires_at"])
    assert Finds.seen.count("requests") == 1 and Finds.seen.count("devices") == 1
    assert [event["request_id"] for event in Listener.dispatched] == [request["request_id"]] * 2


def test_a_poll_reads_no_request_made_here_nor_an_answer_given_here(counted):
    """A request's document and its answer never change once stored: the instance that
    made or answered them has them at hand when the device polls (services/push/expiry.py);
    an answer given elsewhere is still read."""
    push, listener, _, device = counted
    first = requested(push, listener, device.username)
    Finds.seen.clear()
    challenge = polled(push, device)[0]
    assert Finds.seen.count("requests") == 0 and Finds.seen.count("answers") == 1
    assert Finds.seen.count("notices") == 0      # its own activation came before it: not read
    with entrypoint_hook(push, "respond") as respond:
        respond(challenge["challenge_id"], device.device_id, "approve", first["number"],
                device.sign("mycepa-push-v1", challenge["challenge_id"], challenge["nonce"], "approve",
                            first["number"]))
    requested(push, listener, device.username)
    Finds.seen.clear()
    pending = polled(push, device)      # the second request only: the first was answered here
    assert len(pending) == 1 and pending[0]["challenge_id"] != challenge["challenge_id"]
    assert Finds.seen.count("requests") == 0 and Finds.seen.count("answers") == 1   # the second's only


def test_a_login_requested_event_naming_no_request_of_ours_notifies_nobody(running, mongo_client):
    push, listener, dispatch = running
    device = activated_device(push, dispatch)
    now = utcnow()
    with entrypoint_waiter(push, "notify_devices"):
        emit(dispatch, events.LoginRequested, request_id=f"lr_1_{uuid.uuid4().hex}", username=device.username,
             number="42", context={**CONTEXT, "requested_at": now}, expires_at=now + timedelta(seconds=60))
    assert Listener.dispatched == [] and polled(push, device) == []


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


def polled(push, device):
    timestamp = int(utcnow().timestamp())
    with entrypoint_hook(push, "pending_challenges") as poll:
        return poll(device.device_id, timestamp, device.sign("mycepa-poll-v1", device.device_id, timestamp))["challenges"]


def test_an_answer_recorded_by_a_process_that_died_is_finished_by_the_devices_retry(with_outcomes, mongo_client):
    push, listener, dispatch, outcomes = with_outcomes
    device = activated_device(push, dispatch)
    request = requested(push, listener, device.username)
    challenge = polled(push, device)[0]
    # The answer was claimed, then the process died: no event, the answer not announced.
    db = service_db(mongo_client, "push")
    stored = db.requests.find_one({"request_id": request["request_id"]})
    db.answers.insert_one({"_id": challenge["challenge_id"], "request": stored["_id"], "outcome": "approved",
                           "device_id": device.device_id, "fraud": False, "reason": None, "at": utcnow()})
    assert polled(push, device) == []

    def answer():
        signature = device.sign("mycepa-push-v1", challenge["challenge_id"], challenge["nonce"], "approve",
                                request["number"])
        with entrypoint_hook(push, "respond") as respond:
            return respond(challenge["challenge_id"], device.device_id, "approve", request["number"], signature)

    with entrypoint_waiter(outcomes, "on_confirmed"):
        assert answer() == {"challenge_id": challenge["challenge_id"], "status": "approved"}
    assert Outcomes.seen == [("AccessConfirmed", request["request_id"])]
    with entrypoint_hook(push, "login_status") as status:
        assert status(device.username, request["request_id"]) == {"status": "approved",
                                                                  "device_id": device.device_id}
    # Announced now: the same answer once more is a conflict, not a second event.
    with pytest.raises(Exception, match="already been answered"):
        answer()
    assert Outcomes.seen == [("AccessConfirmed", request["request_id"])]


def test_what_a_stopped_process_left_is_settled_by_the_backstop(with_outcomes, mongo_client):
    """A request whose process stopped before its expiry clock ran expires (LoginExpired
    once), and an answer it did not announce is announced, by the 5-minute backstop."""
    push, listener, dispatch, outcomes = with_outcomes
    device = activated_device(push, dispatch)
    forgotten, unannounced = (requested(push, listener, device.username) for _ in range(2))
    db = service_db(mongo_client, "push")
    long_ago = utcnow() - timedelta(minutes=5)
    # Long overdue, and on no process's clock any more.
    db.requests.update_one({"request_id": forgotten["request_id"]}, {"$set": {"expires_at": long_ago}})
    push_expiry = next(d for d in push.dependencies if d.attr_name == "expiry")
    push_expiry.setup()
    stored = db.requests.find_one({"request_id": unannounced["request_id"]})
    db.answers.insert_one({"_id": stored["challenge_id"], "request": stored["_id"], "outcome": "approved",
                           "device_id": device.device_id, "fraud": False, "reason": None, "at": long_ago})

    with entrypoint_waiter(outcomes, "on_expired", timeout=10):
        with entrypoint_hook(push, "purge_expired") as purge:
            purge()
    eventually(lambda: sorted(Outcomes.seen), lambda seen: len(seen) == 2)
    assert sorted(Outcomes.seen) == sorted([("LoginExpired", forgotten["request_id"]),
                                            ("AccessConfirmed", unannounced["request_id"])])
    with entrypoint_hook(push, "purge_expired") as purge:   # a second run finds nothing to do
        purge()
    time.sleep(0.3)
    assert len(Outcomes.seen) == 2


def test_the_push_limit_slides_no_burst_across_a_window_edge(mongo_client):
    client, storage = connect(PushStorage, load_settings(MongoSettings, environ=TEST_ENV))
    user, limit, window = f"W{uuid.uuid4().int % 10**9}", 3, 300
    start = utcnow()

    def ask(second):
        now = start + timedelta(seconds=second)
        retry_after, _ = storage.add_request(user, now, limit, window, lambda n: {
            "request_id": f"lr_{n}_x", "challenge_id": f"ch_{n}_x", "expires_at": now + timedelta(seconds=60)})
        return retry_after

    # Three requests at the end of a would-be fixed window...
    for second in (297, 298, 299):
        assert ask(second) == 0
    # ...and just after its edge: a fixed window would admit three more here.
    assert ask(301) == 296                  # until the first of the three leaves the window
    assert ask(297 + window) == 0
    assert ask(297 + window) > 0
    # A head that lags (two instances raced) only moves the next request on: it takes
    # the next free number, and the limit is judged on that one.
    storage.db.request_heads.update_one({"_id": user}, {"$set": {"last": 1}})
    assert ask(300 + window) == 0
    assert storage.db.request_heads.find_one({"_id": user})["last"] == 5
    assert storage.find_request(user, 5)["request_id"] == "lr_5_x"
    client.close()


def test_with_typed_numbers_the_device_gets_no_choices_and_the_typed_number_decides(
        monkeypatch, container_factory, rabbit_config, mongo_client):
    monkeypatch.setenv("PUSH_NUMBER_ENTRY", "type")
    # The container started below reads the environment when it starts (once per container).
    Listener.dispatched = []
    push = started_push(container_factory(PushService, rabbit_config))
    listener = container_factory(Listener, rabbit_config)
    listener.start()
    dispatch = event_dispatcher(rabbit_config)
    device = activated_device(push, dispatch)
    made = [requested(push, listener, device.username) for _ in range(2)]
    seen = {c["challenge_id"]: c for c in polled(push, device)}
    assert len(seen) == 2 and all(c["number_choices"] == [] for c in seen.values())

    def answer(challenge, number):
        signature = device.sign("mycepa-push-v1", challenge["challenge_id"], challenge["nonce"], "approve", number)
        with entrypoint_hook(push, "respond") as respond:
            return respond(challenge["challenge_id"], device.device_id, "approve", number, signature)

    (right, number), (wrong, _) = zip(seen.values(), [request["number"] for request in reversed(made)])
    assert answer(right, number) == {"challenge_id": right["challenge_id"], "status": "approved"}
    assert answer(wrong, f"{(int(number) - 9) % 90 + 10}") == {"challenge_id": wrong["challenge_id"], "status": "denied",
                                   "reason": "wrong_number"}


def test_the_backstop_reads_an_unannounced_answers_request_by_id(mongo_client):
    """FerretDB indexes only `_id`: a lookup by any other field scans the collection."""
    finds = []

    class RequestFinds(monitoring.CommandListener):
        def started(self, event):
            if event.command_name == "find" and event.command["find"] == "requests":
                finds.append(dict(event.command["filter"]))

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    client = pymongo.MongoClient(TEST_ENV["MONGO_URL"], tz_aware=True, event_listeners=[RequestFinds()])
    storage = PushStorage(client[f"{TEST_ENV['MONGO_DB_PREFIX']}push"])
    user, now = f"W{uuid.uuid4().int % 10**9}", utcnow()
    _, request = storage.add_request(user, now - timedelta(minutes=5), 3, 300, lambda n: {
        "request_id": f"lr_{n}_x", "challenge_id": f"ch_{n}_{uuid.uuid4().hex}", "expires_at": now})
    storage.claim_answer(request, "approved", "dev_1", False, now - timedelta(minutes=5))
    finds.clear()
    found = [(answer["_id"], its_request["_id"]) for answer, its_request in storage.unannounced_answers(now, 60)]
    assert (request["challenge_id"], request["_id"]) in found
    assert finds and all(set(query) == {"_id"} for query in finds)
    client.close()


def test_the_backstop_skips_answers_announced_by_ticket_or_by_the_old_flag(mongo_client):
    """An answer is announced when its ticket exists, or (stored before tickets) when the
    answer itself says so; only the others are announced again."""
    storage = PushStorage(service_db(mongo_client, "push"))
    user, now = f"W{uuid.uuid4().int % 10**9}", utcnow()
    answers = []
    for _ in range(3):
        _, request = storage.add_request(user, now - timedelta(minutes=5), 5, 300, lambda n: {
            "request_id": f"lr_{n}_x", "challenge_id": f"ch_{n}_{uuid.uuid4().hex}", "expires_at": now})
        answers.append(storage.claim_answer(request, "approved", "dev_1", False, now - timedelta(minutes=5)))
    ticketed, flagged, silent = answers
    storage.mark_announced(ticketed["_id"], now - timedelta(minutes=5))
    service_db(mongo_client, "push").answers.update_one({"_id": flagged["_id"]}, {"$set": {"announced": True}})
    mine = {answer["_id"] for answer, _ in storage.unannounced_answers(now, 60)} & {a["_id"] for a in answers}
    assert mine == {silent["_id"]}
    assert storage.was_announced(ticketed) and storage.was_announced({**flagged, "announced": True})
    assert not storage.was_announced(silent)

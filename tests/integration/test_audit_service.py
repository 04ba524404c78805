"""The audit service on the real RabbitMQ and FerretDB: every event into the trail once,
however often it is delivered, and the trail read back newest first, page by page."""
import uuid
from datetime import datetime, timedelta

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from shared import events
from shared.clock import utcnow
from services.audit.service import AuditService
from services.audit.storage import AuditStorage
from shared.mongo import MongoStorage
from harness.waiting import eventually
from tests.conftest import service_db

pytestmark = pytest.mark.integration

SOURCE = {"ip": "203.0.113.7", "user_agent": "Firefox"}


@pytest.fixture
def audit(container_factory, rabbit_config, mongo_client):
    container = container_factory(AuditService, rabbit_config)
    container.start()
    dispatch = event_dispatcher(rabbit_config)

    def emit(event_cls, payload=None, **fields):
        payload = payload or events.build_event(event_cls, **fields)
        with entrypoint_waiter(container, "record"):
            dispatch(event_cls.service, event_cls.name, payload)
        return payload

    return container, emit, service_db(mongo_client, "audit")


def a_user():
    return f"W{uuid.uuid4().int % 10**9:09d}"


def call(container, method, **kwargs):
    with entrypoint_hook(container, method) as hook:
        return hook(**kwargs)


def test_a_redelivered_event_is_stored_once(audit):
    container, emit, db = audit
    username = a_user()
    payload = emit(events.OtpRejected, username=username, reason="invalid", consecutive_failures=1, source=SOURCE)
    emit(events.OtpRejected, payload)   # the same event again, as a redelivery brings it
    assert db.entries.count_documents({"username": username}) == 1
    page = call(container, "query", username=username)
    assert [entry["event_id"] for entry in page["events"]] == [payload["event_id"]]
    entry = page["events"][0]
    assert (entry["type"], entry["reason"], entry["source"]) == ("OtpRejected", "invalid", SOURCE)
    assert entry["details"] == {"consecutive_failures": 1}


def test_a_delivery_interrupted_after_the_entry_is_finished_by_the_next(audit):
    container, emit, db = audit
    username = a_user()
    payload = events.build_event(events.OtpVerified, username=username, device_id="dev_1", source=SOURCE)
    # What a process killed after the entry's insert leaves: the entry, on no timeline.
    db.entries.insert_one({"_id": payload["event_id"], "type": "OtpVerified", "occurred_at": utcnow(),
                           "username": username, "actor": None, "device_id": "dev_1", "reason": None,
                           "source": SOURCE, "details": {}, "placed": []})
    assert call(container, "query", username=username)["events"] == []
    emit(events.OtpVerified, payload)
    assert [e["event_id"] for e in call(container, "query", username=username)["events"]] == [payload["event_id"]]
    assert db.entries.count_documents({"_id": payload["event_id"]}) == 1


def test_the_query_pages_newest_first_and_filters(audit):
    container, emit, _ = audit
    username = a_user()
    sent = []
    for n in range(12):
        event_cls, fields = ((events.OtpVerified, {"device_id": "dev_1"}) if n % 3 else
                             (events.OtpRejected, {"reason": "invalid", "consecutive_failures": 1}))
        sent.append(emit(event_cls, username=username, source=SOURCE, **fields))
    emit(events.OtpVerified, username=a_user(), device_id="dev_2")   # someone else

    pages, cursor = [], None
    while True:
        page = call(container, "query", username=username, limit=5, cursor=cursor)
        pages.append([entry["event_id"] for entry in page["events"]])
        cursor = page["next"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [5, 5, 2]
    assert sum(pages, []) == [payload["event_id"] for payload in reversed(sent)]

    rejected = call(container, "query", username=username, types=["OtpRejected"])["events"]
    assert [e["event_id"] for e in rejected] == [p["event_id"] for p in reversed(sent) if p.get("reason") == "invalid"]
    # Up to a moment: found by bisection of the timeline, then newest first from there.
    middle = sent[5]["occurred_at"]
    until = [e["event_id"] for e in call(container, "query", username=username, until=middle)["events"]]
    assert until == [p["event_id"] for p in reversed(sent[:6])]
    since = [e["event_id"] for e in call(container, "query", username=username, since=middle)["events"]]
    assert since == [p["event_id"] for p in reversed(sent[5:])]
    # By type for everyone: the type's own timeline.
    everyone = call(container, "query", types=["OtpRejected"], limit=200)["events"]
    assert {p["event_id"] for p in sent if p.get("reason")} <= {e["event_id"] for e in everyone}


def test_a_cursor_of_another_query_is_refused(audit):
    container, emit, _ = audit
    username = a_user()
    for _ in range(3):
        emit(events.OtpVerified, username=username, device_id="dev_1")
    cursor = call(container, "query", username=username, limit=1)["next"]
    with pytest.raises(Exception) as refused:
        call(container, "query", username=a_user(), cursor=cursor)
    assert "cursor" in refused.value.fields


def test_the_users_activity_and_previous_login(audit):
    container, emit, _ = audit
    username = a_user()
    first = emit(events.SessionStarted, username=username, method="code", device_id="dev_1", source=SOURCE)
    emit(events.OtpRejected, username=username, reason="invalid", consecutive_failures=1, source=SOURCE)
    emit(events.PushDispatched, request_id="lr_1", challenge_id="ch_1", username=username, device_id="dev_1",
         provider="poll")   # not the user's own business
    current = emit(events.SessionStarted, username=username, method="push", device_id="dev_1", source=SOURCE)

    activity = call(container, "activity", username=username)["events"]
    assert [e["type"] for e in activity] == ["SessionStarted", "OtpRejected", "SessionStarted"]
    previous = call(container, "previous_login", username=username, before=current["occurred_at"])
    assert datetime.fromisoformat(previous.pop("at")) == datetime.fromisoformat(first["occurred_at"])
    assert previous == {"method": "code", **SOURCE}
    assert call(container, "previous_login", username=username, before=first["occurred_at"]) is None


def test_counts_by_type_and_the_backlog(audit):
    container, emit, _ = audit
    before = call(container, "stats")
    emit(events.LoginThrottled, ip="203.0.113.9", failures=50, window_seconds=300, retry_after=60)
    after = call(container, "stats")
    assert after["recorded"]["LoginThrottled"] == before["recorded"]["LoginThrottled"] + 1
    assert after["backlog"] == 0


def test_entries_past_the_retention_go(audit):
    container, emit, db = audit
    username = a_user()
    emit(events.OtpVerified, username=username, device_id="dev_1")
    storage = AuditStorage(db)
    assert storage.purge_expired(utcnow() + timedelta(days=1), 400) == 0
    assert storage.purge_expired(utcnow() + timedelta(days=401), 400) >= 1 + 3   # entry + its tickets
    assert db.entries.count_documents({"username": username}) == 0
    assert call(container, "query", username=username)["events"] == []


def test_events_arriving_together_are_written_together_each_once_and_in_order(audit):
    """200 events dispatched at once reach the trail in batches (the trail's group commit,
    a few commands per batch instead of about eight per event), every one of them once,
    in its user's timeline in the order they were sent."""
    container, _, db = audit
    storage = next(d for d in container.dependencies if isinstance(d, MongoStorage)).storage
    batches = []
    write_many = storage.writes.write_many
    storage.writes.write_many = lambda records: batches.append(len(records)) or write_many(records)
    usernames = [a_user() for _ in range(20)]
    sent = [events.build_event(events.OtpRejected, username=usernames[n % 20], reason="invalid",
                               consecutive_failures=n // 20 + 1, source=SOURCE) for n in range(200)]
    dispatch = event_dispatcher(container.config)
    for payload in sent:
        dispatch("otp", "OtpRejected", payload)
    eventually(lambda: db.entries.count_documents({"_id": {"$in": [p["event_id"] for p in sent]}}),
               lambda stored: stored == 200, timeout=30)
    assert sum(batches) == 200 and len(batches) < 100, batches
    for username in usernames:
        page = call(container, "query", username=username, limit=50)
        assert [entry["details"]["consecutive_failures"] for entry in page["events"]] == list(range(10, 0, -1))

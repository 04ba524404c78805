"""Security notices in push's storage on the real MongoDB-wire server: each shown to each
device once, only what happened since the device came, and a poll passes over the older
ones without reading them (a polling app asks every few seconds)."""
import uuid
from datetime import timedelta

import pymongo
import pytest
from pymongo import monitoring

from shared.clock import utcnow
from services.push.storage import PushStorage
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.integration


class NoticeReads(monitoring.CommandListener):
    def __init__(self):
        self.ids = []

    def started(self, event):
        if event.command_name == "find" and event.command["find"] == "notices":
            self.ids.append(event.command["filter"]["_id"])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


@pytest.fixture
def storage_and_reads():
    reads = NoticeReads()
    client = pymongo.MongoClient(TEST_ENV["MONGO_URL"], tz_aware=True, event_listeners=[reads])
    yield PushStorage(client[f"{TEST_ENV['MONGO_DB_PREFIX']}push"]), reads
    client.close()


def notice(username, at, kind="account_locked"):
    return {"_id": f"event-{uuid.uuid4().hex}", "username": username, "kind": kind, "occurred_at": at,
            "device_id": None, "context": {}}


def test_a_poll_shows_each_newer_notice_once_and_passes_over_older_ones_unread(storage_and_reads):
    storage, reads = storage_and_reads
    user, now = f"W{uuid.uuid4().int % 10**9:09d}", utcnow()
    before = notice(user, now - timedelta(minutes=5))
    storage.add_notice(before)
    storage.register_device({"device_id": f"dev_{uuid.uuid4().hex}", "username": user, "platform": "poll",
                             "push_token": None, "public_key": "pem", "device_name": "Phone"}, now)
    device = storage.active_devices(user)[0]
    after = notice(user, now + timedelta(seconds=1))
    storage.add_notice(after)
    storage.add_notice(after)            # a redelivered event: one entry, not two

    reads.ids.clear()
    assert [n["_id"] for n in storage.unseen_notices(device, 20)] == [after["_id"]]
    assert reads.ids == [after["_id"]]   # the one before the device is not read
    reads.ids.clear()
    assert storage.unseen_notices(device, 20) == []
    assert reads.ids == []               # seen: its claim says so, nothing is read


def test_a_box_kept_before_entries_had_their_time_still_works_and_is_purged(storage_and_reads):
    storage, _ = storage_and_reads
    user, now = f"W{uuid.uuid4().int % 10**9:09d}", utcnow()
    storage.register_device({"device_id": f"dev_{uuid.uuid4().hex}", "username": user, "platform": "poll",
                             "push_token": None, "public_key": "pem", "device_name": "Phone"},
                            now - timedelta(days=40))
    device = storage.active_devices(user)[0]
    old_style = notice(user, now - timedelta(days=35))
    storage.claim("notices", old_style["_id"], **{k: v for k, v in old_style.items() if k != "_id"})
    storage.add_to_set("notice_boxes", user, "notice_ids", old_style["_id"])
    new_style = notice(user, now - timedelta(days=1))
    storage.add_notice(new_style)

    assert [n["_id"] for n in storage.unseen_notices(device, 20)] == [new_style["_id"], old_style["_id"]]
    storage.purge_expired(now, 60)       # the month-old one goes, from either form of the box
    box = storage.db.notice_boxes.find_one({"_id": user})
    assert box["notice_ids"] == [] and [entry["id"] for entry in box["notices"]] == [new_style["_id"]]

"""Bounded storage (architecture.md §5): every collection of every service is purged of what
expired, on the real MongoDB-wire server.

Each test fills every collection of one service through that service's own storage
methods, as its flows would, then purges twice: now (nothing live may go) and far in the
future (everything that only matters for a while must go). What may stay is named: the
registries of users and devices, an admin's business (a fraud block, a hard lock).
"""
import secrets
from datetime import timedelta

import pytest

from shared.clock import utcnow
from shared.config import MongoSettings, load_settings
from shared.mongo import connect
from services.gateway.storage import GatewayStorage
from services.otp.lockout import LockState
from services.otp.storage import OtpStorage
from services.push.storage import PushStorage
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.integration

LATER = timedelta(days=400)   # past every retention rule


@pytest.fixture
def fresh(mongo_client):
    """connect(StorageClass) on databases of this test alone (dropped with the session's)."""
    environ = {**TEST_ENV, "MONGO_DB_PREFIX": f"{TEST_ENV['MONGO_DB_PREFIX']}purge{secrets.token_hex(3)}_"}
    clients = []

    def connect_to(storage_class):
        client, storage = connect(storage_class, load_settings(MongoSettings, environ=environ))
        clients.append(client)
        return storage

    yield connect_to
    for client in clients:
        client.close()


def counts(storage):
    return {name: storage.db[name].count_documents({}) for name in storage.db.list_collection_names()}


def assert_purged(storage, purge, filled, may_stay):
    """Nothing goes when nothing expired; after LATER only `may_stay` keeps documents."""
    assert set(filled) == set(counts(storage)), "the test must fill every collection the service has"
    assert all(filled.values()), filled
    purge(utcnow())
    assert counts(storage) == filled, "a purge now deleted something live"
    purge(utcnow() + LATER)
    left = {name: count for name, count in counts(storage).items() if count}
    assert set(left) <= set(may_stay), left
    for name, count in left.items():
        assert count <= may_stay[name], (name, count)


def test_otp_keeps_only_accounts_devices_and_hard_locks(fresh):
    otp = fresh(OtpStorage)
    now = utcnow()
    otp.add_activation_code("K7Q2", "hash", "W1", now, now + timedelta(days=7))
    otp.count_activation_failure(otp.find_activation_code("K7Q2"), now)
    otp.claim_activation_code("K7Q2", now)
    otp.add_authenticator("dev_1", "W1", "encrypted", "poll", "Phone", now)
    assert otp.accept_step(otp.find_authenticator("dev_1"), 1000, "attempt-1", now)
    # A made-up username's failures, and a real one's hard lock (100 failures).
    otp.count_failure(LockState("W-nobody", "0", 0), now)
    state = LockState("W1", "0", 0)
    for _ in range(100):
        state = otp.count_failure(state, now)
    otp.ensure_indexes()
    filled = counts(otp)
    assert_purged(otp, lambda at: otp.purge_expired(at, 100), filled,
                  may_stay={"accounts": 1, "authenticators": 1, "lockouts": 1})
    assert otp.db.lockouts.find_one({"_id": "W1"})["failures"] == 100   # only an admin ends it
    assert otp.lock_state("W-nobody").failures == 0


def test_push_keeps_only_devices_users_and_fraud_blocks(fresh):
    push = fresh(PushStorage)
    now = utcnow()
    push.register_device({"device_id": "dev_1", "username": "W1", "platform": "poll", "push_token": None,
                          "public_key": "pem", "device_name": "Phone"}, now)
    for _ in range(2):
        push.add_request("W1", now, 3, 300, lambda n: {
            "request_id": f"lr_{n}_x", "challenge_id": f"ch_{n}_x", "number": "42", "number_choices": [],
            "nonce": "n", "context": {}, "expires_at": now + timedelta(minutes=2)})
    answer = push.claim_answer(push.find_request("W1", 1), "denied", "dev_1", True, now, "user")
    push.mark_announced(answer["_id"], now)
    push.block_for_fraud("W1", "ch_1_x", "dev_1", now)
    push.claim_signature("dev_1", "signature-id", now)
    push.add_notice({"_id": "event-1", "username": "W1", "kind": "account_locked", "occurred_at": now,
                     "device_id": None, "context": {}})
    assert [n["_id"] for n in push.unseen_notices(push.find_device("dev_1"), 20)] == ["event-1"]
    push.ensure_indexes()
    filled = counts(push)
    assert_purged(push, lambda at: push.purge_expired(at, 60), filled,
                  may_stay={"devices": 1, "users": 1, "notice_boxes": 1, "fraud_blocks": 1})


def test_the_gateway_keeps_nothing_past_its_expiry(fresh):
    gateway = fresh(GatewayStorage)
    now = utcnow()
    gateway.create_session("W1", "code", "dev_1", now, now + timedelta(hours=8))
    gateway.remember("W1", now, now + timedelta(days=30))
    gateway.count_source_failure("203.0.113.7", now, 300)
    gateway.first_throttle_in_bucket("203.0.113.7", now)
    gateway.claim_session_for("lr_1", now)
    gateway.binding_key()
    gateway.ensure_indexes()
    filled = counts(gateway)
    assert_purged(gateway, lambda at: gateway.purge_expired(at, 300), filled, may_stay={"keys": 1})

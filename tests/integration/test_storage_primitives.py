"""The storage primitives that carry the security rules, on the real MongoDB-wire server,
raced from several processes at once as several service instances would."""
import multiprocessing
import secrets

import pytest

from shared.config import MongoSettings, load_settings
from shared.mongo import Storage, connect
from services.gateway.storage import GatewayStorage
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.integration


class Scratch(Storage):
    database_name = "scratch"


def _take_tickets(key, count, results):
    client, storage = connect(Scratch, load_settings(MongoSettings, environ=TEST_ENV))
    try:
        results.extend([storage.take_ticket("tickets", key) for _ in range(count)])
    finally:
        client.close()


def _claim(key, results):
    client, storage = connect(Scratch, load_settings(MongoSettings, environ=TEST_ENV))
    try:
        results.append(storage.claim("claims", key))
    finally:
        client.close()


@pytest.fixture
def scratch(mongo_client):
    client, storage = connect(Scratch, load_settings(MongoSettings, environ=TEST_ENV))
    yield storage
    client.close()


def test_tickets_taken_by_racing_processes_are_each_handed_out_once(scratch):
    key = f"user-{secrets.token_hex(4)}"
    with multiprocessing.Manager() as manager:
        results = manager.list()
        workers = [multiprocessing.Process(target=_take_tickets, args=(key, 10, results)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        numbers = sorted(results)
    # 40 failures counted as exactly 1..40: none lost, none counted twice.
    assert numbers == list(range(1, 41))
    assert scratch.has_ticket("tickets", key, 40) and not scratch.has_ticket("tickets", key, 41)


def test_a_claim_raced_by_many_processes_is_won_once(scratch):
    key = f"code-{secrets.token_hex(4)}"
    with multiprocessing.Manager() as manager:
        results = manager.list()
        workers = [multiprocessing.Process(target=_claim, args=(key, results)) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        outcomes = list(results)
    assert len(outcomes) == 8 and outcomes.count(True) == 1


def test_a_ticket_hint_skips_ahead_without_reusing_numbers(scratch):
    key = f"user-{secrets.token_hex(4)}"
    assert [scratch.take_ticket("tickets", key) for _ in range(3)] == [1, 2, 3]
    assert scratch.take_ticket("tickets", key, after=1) == 4   # a stale hint walks on
    assert scratch.take_ticket("tickets", key, after=10) == 11


def test_a_restarted_service_makes_its_indexes_again_without_losing_its_connection():
    """Every start makes the indexes; a collection with two of them (the gateway's
    sessions) once made FerretDB drop the connection the second time, and the pool's
    pause answered 503s for seconds."""
    client, storage = connect(GatewayStorage, load_settings(MongoSettings, environ={
        **TEST_ENV, "MONGO_DB_PREFIX": f"{TEST_ENV['MONGO_DB_PREFIX']}idx{secrets.token_hex(3)}_"}))
    try:
        assert len(GatewayStorage.indexes["sessions"]) > 1
        for _ in range(3):
            storage.ensure_indexes()
        assert storage.ping()
        assert {"expires_at_1", "username_1", "device_id_1"} <= set(storage.db.sessions.index_information())
    finally:
        client.drop_database(storage.db.name)
        client.close()


def test_a_storage_makes_each_collection_once_and_it_still_reads_and_writes(scratch):
    """pymongo makes a new Collection on every `db.name`; the storage's database keeps
    the one it made (shared/mongo.py `_Database`), for both spellings."""
    assert scratch.db.claims is scratch.db["claims"] is scratch.db.claims
    assert scratch.db.claims is not scratch.db.tickets
    key = secrets.token_hex(4)
    assert scratch.claim("claims", key) and not scratch.claim("claims", key)
    assert scratch.db.claims.find_one({"_id": key}) == {"_id": key}

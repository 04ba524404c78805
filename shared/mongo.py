"""One Mongo mechanism for every service: its own database, its indexes, a narrow storage.

Two properties of FerretDB v1 (the local and CI server) shape every storage here, and
both hold on MongoDB too, so the code is the same for both:
- Only inserts are exact under concurrency: a unique `_id` insert succeeds once, while
  conditional updates and `$inc` are read-modify-write and can lose or double updates
  (measured: 200 concurrent `$inc` counted 6). So whatever must happen once, or be
  counted exactly, is a unique insert: `claim` and `take_ticket` below.
- Only `_id` lookups are indexed; a query on any other field scans the collection. So
  every hot path reads documents by `_id`.

A service's storage class subclasses `Storage`, names its database and declares its
indexes; `MongoStorage(StorageClass)` is the nameko DependencyProvider that connects in
`setup()`, creates the indexes, hands every worker the same storage object and closes in
`stop()`. FerretDB (the local and CI server) has no TTL indexes, so expiry is enforced in
queries and by each storage's `purge_expired`, which the services run on a timer.

Every operation is bounded (pymongo's client-side operation timeout): by
MONGO_TIMEOUT_SECONDS, and inside an RPC by what is left of the caller's deadline, so a
database that is down or slow costs a 503 in time, and nothing commits after the caller
gave up. A database that is down when the service starts only delays the indexes.
"""
import logging
import time

import pymongo
from nameko.extensions import DependencyProvider
from pymongo.database import Database
from pymongo.errors import AutoReconnect, DuplicateKeyError, PyMongoError

from shared.config import MongoSettings, load_settings, settings_of
from shared.deadline import deadline_of, seconds_left
from shared.repair import Repairs

log = logging.getLogger(__name__)
# The operation timeout of a worker whose caller set a deadline that has already passed:
# small enough to fail at once, never zero (which pymongo reads as "no timeout").
_ALREADY_LATE = 0.001


class Storage:
    database_name = None   # the service's own database, without the deployment prefix
    indexes = {}           # {collection: [pymongo.IndexModel, ...]}

    def __init__(self, database):
        self.db = database
        self.repairs = Repairs()

    def ensure_indexes(self):
        for collection, models in self.indexes.items():
            for model in models:
                # One index per command: FerretDB v1 panics on a createIndexes naming two
                # or more indexes that all exist (FerretDB#3858) and drops the connection,
                # which pauses pymongo's pool. Every restart of the gateway (two indexes on
                # `sessions`) answered 503s for seconds, and /readyz with them (`make chaos`).
                self.db[collection].create_indexes([model])

    def ping(self):
        """True when the database answers; used by readiness checks."""
        try:
            with pymongo.timeout(2):
                self.db.command("ping")
            return True
        except PyMongoError:
            return False

    def purge_expired(self, now):
        """Delete what has expired; each storage overrides this for its collections."""
        return 0

    def claim(self, collection, key, **fields):
        """Insert `key` once: True for exactly one caller, however many race."""
        try:
            self.db[collection].insert_one({"_id": key, **fields})
            return True
        except DuplicateKeyError:
            return False

    def insert_surely(self, collection, document):
        """Insert a document with a fresh unique `_id`, retrying a lost connection within
        the operation's timeout. (FerretDB has no retryable writes.) A retry that finds
        the `_id` taken means the first try committed, so it counts as done."""
        for attempt in range(5):
            try:
                self.db[collection].insert_one(document)
                return
            except DuplicateKeyError:
                if attempt:
                    return
                raise
            except AutoReconnect as error:
                if error.timeout or attempt == 4:
                    raise
                time.sleep(0.05)

    def take_ticket(self, collection, key, after=0, **fields):
        """The next number in `key`'s sequence, each number handed out exactly once.

        Inserts `key#n` for n = after+1, after+2, ... until one is new; `after` is a hint
        (a count read earlier) that saves walking the sequence from 1.
        """
        number = max(0, int(after))
        while True:
            number += 1
            if self.claim(collection, f"{key}#{number}", **fields):
                return number

    def add_to_set(self, collection, key, field, value, attempts=5):
        """Add `value` to the array `field` of document `key` (made if missing), surely.

        `$addToSet` is read-modify-write on FerretDB: two concurrent additions to one
        document can drop one, so read back and repeat until the value is there.
        """
        for _ in range(attempts):
            try:
                self.db[collection].update_one({"_id": key}, {"$addToSet": {field: value}}, upsert=True)
            except DuplicateKeyError:
                continue  # two first additions raced to create the document
            document = self.db[collection].find_one({"_id": key})
            if document and value in document.get(field, []):
                return
        raise RuntimeError(f"could not add to {collection}.{field}")

    def has_ticket(self, collection, key, number):
        return self.db[collection].find_one({"_id": f"{key}#{number}"}, projection={"_id": 1}) is not None


class _Database(Database):
    """A database that makes each of its collections once. pymongo's makes a new
    Collection, its options resolved again, on every `db.name` and `db[name]`: a twentieth
    of otp's CPU per code login (py-spy). A collection's options here never change."""

    def __init__(self, client, name):
        super().__init__(client, name)
        self.__collections = {}

    def __getitem__(self, name):
        collection = self.__collections.get(name)
        if collection is None:
            collection = self.__collections[name] = super().__getitem__(name)
        return collection


def connect(storage_cls, settings=None):
    """A (client, storage) pair for `storage_cls`, outside nameko (scripts, tests)."""
    settings = settings or load_settings(MongoSettings)
    timeout_ms = int(settings["mongo_timeout_seconds"] * 1000)
    client = pymongo.MongoClient(
        settings["mongo_url"], tz_aware=True, timeoutMS=timeout_ms, connectTimeoutMS=min(timeout_ms, 5000),
        appname=f"mycepa-{storage_cls.database_name}",
    )
    storage = storage_cls(_Database(client, settings["mongo_db_prefix"] + storage_cls.database_name))
    return client, storage


class MongoStorage(DependencyProvider):
    def __init__(self, storage_cls):
        self.storage_cls = storage_cls
        self.client = None
        self.storage = None

    def setup(self):
        self.client, self.storage = connect(self.storage_cls, settings_of(self.container, MongoSettings))
        try:
            self.storage.ensure_indexes()
        except PyMongoError as error:
            log.warning("the database is not reachable yet (%s); creating the indexes when it is",
                        type(error).__name__)
            self.storage.repairs.later("creating the indexes", self.storage.ensure_indexes, for_seconds=24 * 3600)

    def stop(self):
        # Workers have finished (nameko stops dependencies after them); pending repairs
        # get a last chance before the client closes under them.
        if self.storage is not None:
            self.storage.repairs.drain(5)
        if self.client is not None:
            self.client.close()

    def get_dependency(self, worker_ctx):
        return self.storage

    def worker_setup(self, worker_ctx):
        # Inside an RPC, every operation of the call shares what is left of the caller's
        # deadline (less the reply's margin): the database operation's own timeout then
        # fits inside it, and an operation that would end after it is not attempted.
        if deadline_of(worker_ctx) is not None:
            budget = max(_ALREADY_LATE, seconds_left(worker_ctx, default=0))
            scope = pymongo.timeout(budget)
            scope.__enter__()
            worker_ctx.mongo_timeout_scope = scope

    def worker_teardown(self, worker_ctx):
        scope = getattr(worker_ctx, "mongo_timeout_scope", None)
        if scope is not None:
            scope.__exit__(None, None, None)


IndexModel = pymongo.IndexModel
ASCENDING = pymongo.ASCENDING

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
"""
import pymongo
from nameko.extensions import DependencyProvider
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared.config import MongoSettings, load_settings


class Storage:
    database_name = None   # the service's own database, without the deployment prefix
    indexes = {}           # {collection: [pymongo.IndexModel, ...]}

    def __init__(self, database):
        self.db = database

    def ensure_indexes(self):
        for collection, models in self.indexes.items():
            if models:
                self.db[collection].create_indexes(models)

    def ping(self):
        """True when the database answers; used by readiness checks."""
        try:
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


def connect(storage_cls, settings=None):
    """A (client, storage) pair for `storage_cls`, outside nameko (scripts, tests)."""
    settings = settings or load_settings(MongoSettings)
    client = pymongo.MongoClient(
        settings["mongo_url"], tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
        appname=f"mycepa-{storage_cls.database_name}",
    )
    storage = storage_cls(client[settings["mongo_db_prefix"] + storage_cls.database_name])
    return client, storage


class MongoStorage(DependencyProvider):
    def __init__(self, storage_cls):
        self.storage_cls = storage_cls
        self.client = None
        self.storage = None

    def setup(self):
        self.client, self.storage = connect(self.storage_cls)
        self.storage.ensure_indexes()

    def stop(self):
        if self.client is not None:
            self.client.close()

    def get_dependency(self, worker_ctx):
        return self.storage


IndexModel = pymongo.IndexModel
ASCENDING = pymongo.ASCENDING

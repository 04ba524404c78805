"""One Mongo mechanism for every service: its own database, its indexes, a narrow storage.

A service's storage class subclasses `Storage`, names its database and declares its
indexes; `MongoStorage(StorageClass)` is the nameko DependencyProvider that connects in
`setup()`, creates the indexes, hands every worker the same storage object and closes in
`stop()`. FerretDB (the local and CI server) has no TTL indexes, so expiry is enforced in
queries and by each storage's `purge_expired`, which the services run on a timer.
"""
import pymongo
from nameko.extensions import DependencyProvider
from pymongo.errors import PyMongoError

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

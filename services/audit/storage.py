"""The audit service's own database: the append-only trail, and the timelines it is read by.

Laid out for the MongoDB-wire server we test with (shared/mongo.py): it serves only `_id`
lookups from an index, and a query on any other field scans (measured: 2.5 s for one
user's entries among 100,000). So the trail is read by walking numbered timelines, each
step an `_id` lookup, and a query for one user costs the same among a million entries as
among a hundred.
- `entries` {_id: event_id, type, occurred_at, username, actor, device_id, reason, source,
  details, placed}: one per event, inserted once (a redelivered event finds it).
  `placed` names the timelines the entry was appended to: a delivery interrupted half way
  is finished by the next one.
- `timeline` {_id: "scope#n", event_id, type, occurred_at}: the n-th entry of a scope, a
  ticket (exact under any concurrency). The scopes: `all`, `type:<event type>` and
  `user:<username>`.
- `heads` {_id: scope, last}: where each scope's numbering is, for writers and readers;
  a type's head is also how many of that event there have been (the metrics' counters).
"""
from collections import OrderedDict
from datetime import timedelta

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from shared.batching import GroupCommit
from shared.mongo import ASCENDING, IndexModel, Storage

ALL = "all"
# Per process, the last number seen of the scopes written lately: a writer takes its
# ticket without reading the head first (the head is still written for readers).
HINTS_KEPT = 50_000
# How long a write waits for the records that come just after the first (a login's
# events arrive milliseconds apart): each write costs about the same for one or many.
LINGER_SECONDS = 0.05


DUPLICATE_KEY = 11000


def user_scope(username):
    return f"user:{username}"


def type_scope(event_type):
    return f"type:{event_type}"


def _scopes_of(record):
    return [ALL, type_scope(record["type"])] + ([user_scope(record["username"])] if record["username"] else [])


class AuditStorage(Storage):
    database_name = "audit"
    # Only the retention purge queries these.
    indexes = {
        "entries": [IndexModel([("occurred_at", ASCENDING)])],
        "timeline": [IndexModel([("occurred_at", ASCENDING)])],
    }

    def __init__(self, database):
        super().__init__(database)
        self.hints = OrderedDict()
        # The service's workers append through this: concurrent records share commands,
        # and records a moment apart too (the trail is read later, never waited on).
        self.writes = GroupCommit(self.append_many, linger_seconds=LINGER_SECONDS)

    # -- writing -----------------------------------------------------------------------

    def append(self, record):
        """Store an event's record once and append it to its timelines; True when this
        call stored it, False when an earlier delivery had (finishing what it left undone)."""
        return self.append_many([record])[0]

    def append_many(self, records):
        """`append` for many records in a few commands, whatever their number: the entries
        in one insert, the tickets of every timeline in one, the heads and the `placed`
        marks in one bulk write each (the audit service writes its trail in batches,
        shared/batching.py). One result per record, as `append` gives."""
        unique = list({record["_id"]: record for record in records}.values())
        fresh = self._insert_new([{**record, "placed": []} for record in unique], "entries")
        placed = {record["_id"]: [] if record["_id"] in fresh else
                  self.db.entries.find_one({"_id": record["_id"]}, projection={"placed": 1})["placed"]
                  for record in unique}
        tickets, done = [], {}
        for record in unique:
            scopes = _scopes_of(record)
            missing = [scope for scope in scopes if scope not in placed[record["_id"]]]
            tickets += [(scope, record) for scope in missing]
            if missing:
                done[record["_id"]] = scopes
        self._add_to_timelines(tickets)
        if done:
            self.db.entries.bulk_write([UpdateOne({"_id": event_id}, {"$set": {"placed": scopes}})
                                        for event_id, scopes in done.items()], ordered=False)
        return [record["_id"] in fresh for record in records]

    def _insert_new(self, documents, collection):
        """Insert what is new among `documents`: the `_id`s this call inserted."""
        try:
            self.db[collection].insert_many(documents, ordered=False)
            return {document["_id"] for document in documents}
        except BulkWriteError as error:
            errors = error.details.get("writeErrors", [])
            if any(failure.get("code") != DUPLICATE_KEY for failure in errors):
                raise
            taken = {documents[failure["index"]]["_id"] for failure in errors}
            return {document["_id"] for document in documents} - taken

    def _add_to_timelines(self, tickets):
        """Number each (scope, record) in its scope's timeline: the next numbers after
        the scope's last, taken by unique inserts, so a number another writer took first
        is simply taken again higher up."""
        while tickets:
            numbered, last = [], {}
            for scope, record in tickets:
                if scope not in last:
                    last[scope] = self.hints.get(scope) or self._last_written(scope)
                last[scope] += 1
                numbered.append((scope, last[scope], record))
            fresh = self._insert_new([{"_id": f"{scope}#{number}", "event_id": record["_id"],
                                       "type": record["type"], "occurred_at": record["occurred_at"]}
                                      for scope, number, record in numbered], "timeline")
            heads = {}
            for scope, number, _ in numbered:
                self.hints[scope] = max(number, self.hints.get(scope, 0))
                self.hints.move_to_end(scope)
                if f"{scope}#{number}" in fresh:
                    heads[scope] = max(number, heads.get(scope, 0))
            while len(self.hints) > HINTS_KEPT:
                self.hints.popitem(last=False)
            if heads:
                self._raise_heads(heads)
            tickets = [(scope, record) for scope, number, record in numbered if f"{scope}#{number}" not in fresh]

    def _raise_heads(self, heads):
        requests = [UpdateOne({"_id": scope}, {"$max": {"last": number}}, upsert=True)
                    for scope, number in heads.items()]
        try:
            self.db.heads.bulk_write(requests, ordered=False)
        except BulkWriteError as error:   # two first upserts of one head raced: once more
            if any(failure.get("code") != DUPLICATE_KEY for failure in error.details.get("writeErrors", [])):
                raise
            self.db.heads.bulk_write([requests[failure["index"]] for failure in error.details["writeErrors"]],
                                     ordered=False)

    def _last_written(self, scope):
        # Not the walk of `_head`: a number taken past the head only makes an insert
        # collide, and the collision moves the writer on.
        head = self.db.heads.find_one({"_id": scope})
        return head["last"] if head else 0

    def _head(self, scope):
        """The last number of a scope: the head, and the tickets a racing writer took past it."""
        head = self.db.heads.find_one({"_id": scope})
        last = head["last"] if head else 0
        while self.has_ticket("timeline", scope, last + 1):
            last += 1
        return last

    # -- reading -----------------------------------------------------------------------

    def walk(self, scope, before=None, until=None):
        """(number, timeline ticket) of a scope, newest first, from below ticket `before`
        (a cursor) or from the newest; with `until`, from the first ticket not after it
        (found by bisection: tickets are numbered in arrival order, which follows time
        within a delivery's delay). Ends at the first gap (the purge removes the oldest)."""
        last = self._head(scope) if before is None else before - 1
        if until is not None:
            last = self._last_not_after(scope, last, until)
        for number in range(last, 0, -1):
            ticket = self.db.timeline.find_one({"_id": f"{scope}#{number}"})
            if ticket is None:
                return
            yield number, ticket

    def _last_not_after(self, scope, last, until):
        low, high = 0, last          # the answer lies in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            ticket = self.db.timeline.find_one({"_id": f"{scope}#{middle}"}, projection={"occurred_at": 1})
            if ticket is None or ticket["occurred_at"] <= until:
                low = middle         # (a purged ticket is older than anything kept)
            else:
                high = middle - 1
        return low

    def counts(self, event_types):
        """{event type: how many were recorded} (from the type timelines' heads)."""
        heads = {head["_id"]: head["last"] for head in
                 self.db.heads.find({"_id": {"$in": [type_scope(name) for name in event_types]}})}
        return {name: heads.get(type_scope(name), 0) for name in event_types}

    def entries(self, event_ids):
        """The entries of `event_ids`, in that order (by `_id`, one lookup each)."""
        found = []
        for event_id in event_ids:
            entry = self.db.entries.find_one({"_id": event_id}, projection={"placed": 0})
            if entry is not None:
                found.append(entry)
        return found

    # -- housekeeping ------------------------------------------------------------------

    def purge_expired(self, now, retention_days):
        """Entries and tickets older than the retention; heads stay (numbering goes on)."""
        cutoff = now - timedelta(days=retention_days)
        deleted = self.db.timeline.delete_many({"occurred_at": {"$lt": cutoff}}).deleted_count
        return deleted + self.db.entries.delete_many({"occurred_at": {"$lt": cutoff}}).deleted_count

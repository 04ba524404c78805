"""The audit service: every event of architecture.md §3, kept append-only and queryable.

One durable queue bound to every event (shared/messaging.py `EventsConsumer`) feeds the
trail; a redelivered event is stored once (its `event_id` is the entry's `_id`). The
gateway asks it over RPC for the admin audit query, a user's own activity and their
previous login. Entries go after AUDIT_RETENTION_DAYS.
"""
import logging

from bson.errors import InvalidDocument
from nameko.timer import timer

from shared import events
from shared.clock import utcnow
from shared.config import SettingsProvider
from shared.errors import EXPECTED_ERRORS, Unavailable
from shared.messaging import consume_events, rpc
from shared.mongo import MongoStorage
from shared.validation import load_args
from services.audit.config import AuditSettings
from services.audit.dependencies import QueueDepth
from services.audit.query import Query, activity_of, page_of, previous_login_of
from services.audit.records import record_of
from services.audit.schemas import ActivityArgs, PreviousLoginArgs, QueryArgs
from services.audit.storage import AuditStorage

log = logging.getLogger(__name__)


class AuditService:
    name = "audit"

    config = SettingsProvider(AuditSettings)
    storage = MongoStorage(AuditStorage)
    backlog = QueueDepth()

    @rpc
    def ping(self):
        if not self.storage.ping():
            raise Unavailable("audit database unreachable")
        return {"service": self.name}

    @rpc
    def stats(self):
        """{backlog: events waiting in the queue, recorded: {event type: count}}."""
        return {"backlog": self.backlog(), "recorded": self.storage.counts(events.EVENT_TYPES)}

    @consume_events(events.ALL_EVENTS)
    def record(self, event_type, payload):
        try:
            record = record_of(event_type, payload)
        except events.ValidationError as error:
            # Redelivering it cannot help and would loop forever.
            log.error("dropping malformed %s event: %s", event_type, sorted(error.messages))
            return
        try:
            self.storage.writes.add(record)   # with what other workers record meanwhile
        except (InvalidDocument, UnicodeEncodeError) as error:
            log.error("dropping %s event the database cannot store: %s", event_type, type(error).__name__)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def query(self, **filters):
        """The admin audit query: `{events, next}`, newest first (services/audit/query.py)."""
        return page_of(self.storage, Query(**load_args(QueryArgs, **filters)))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def activity(self, username, limit=20):
        """A user's own last sign-ins, refusals, locks and device changes, newest first."""
        args = load_args(ActivityArgs, username=username, limit=limit)
        return activity_of(self.storage, args["username"], args["limit"])

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def previous_login(self, username, before):
        """The sign-in before the session that started at `before`, or None."""
        args = load_args(PreviousLoginArgs, username=username, before=before)
        return previous_login_of(self.storage, args["username"], args["before"])

    @timer(interval=3600)
    def purge_expired(self):
        deleted = self.storage.purge_expired(utcnow(), self.config["retention_days"])
        if deleted:
            log.info("audit retention: %d record(s) older than %d days deleted", deleted,
                     self.config["retention_days"])

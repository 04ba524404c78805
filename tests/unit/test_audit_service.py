"""AuditService one worker at a time (nameko's worker_factory): what reaches the trail."""
import logging

from nameko.testing.services import worker_factory

from shared import events
from services.audit.service import AuditService


def test_an_event_is_appended_as_its_record():
    worker = worker_factory(AuditService)
    payload = events.build_event(events.OtpRejected, username="W1", reason="replayed", consecutive_failures=2,
                                 source={"ip": "203.0.113.7", "user_agent": "x"})
    worker.record("OtpRejected", payload)
    (record,), _ = worker.storage.writes.add.call_args
    assert (record["_id"], record["type"], record["reason"]) == (payload["event_id"], "OtpRejected", "replayed")


def test_a_malformed_or_unknown_event_is_dropped_and_logged_not_requeued(caplog):
    worker = worker_factory(AuditService)
    with caplog.at_level(logging.ERROR):
        worker.record("OtpRejected", {"username": "W1"})
        worker.record("NoSuchEvent", {})
    worker.storage.writes.add.assert_not_called()
    assert len([r for r in caplog.records if "dropping malformed" in r.getMessage()]) == 2


def test_stats_are_the_backlog_and_the_counts_by_type():
    worker = worker_factory(AuditService)
    worker.backlog.return_value = 7
    worker.storage.counts.return_value = {"OtpVerified": 3}
    assert worker.stats() == {"backlog": 7, "recorded": {"OtpVerified": 3}}
    (asked,), _ = worker.storage.counts.call_args
    assert set(asked) == set(events.EVENT_TYPES)

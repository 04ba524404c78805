"""One notion of "now" for every service: timezone-aware UTC, millisecond precision.

Mongo stores milliseconds; trimming here keeps a value equal to itself after a round trip.
"""
from datetime import datetime, timezone


def utcnow():
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def isoformat(moment):
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text):
    """The aware datetime of an `isoformat` text."""
    return datetime.fromisoformat(text)

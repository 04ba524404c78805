"""The lockout count of code login in the REAL OtpStorage, on the real MongoDB-wire server:
what the unit tests take from FakeOtpStorage (tests/unit/conftest.py) must hold here.

- failures counted at once from the same read are numbered 1..N, and lock_state says N
  even when the summary's read-modify-write `$max` fell behind (FerretDB);
- a failure counted in an epoch a success or an unlock has ended does not bring the old
  count back;
- the purge forgets the failures of a made-up username, and keeps a hard lock of an
  account that exists (only an admin ends it);
- FakeOtpStorage, which the unit tests stand on, answers a lockout story as this does.

Each test has databases of its own (dropped with the session's).
"""
import secrets
from datetime import timedelta

import eventlet
import pytest

from shared.clock import utcnow
from shared.config import MongoSettings, load_settings
from shared.mongo import connect
from services.otp.lockout import LockState
from services.otp.storage import OtpStorage
from tests.conftest import TEST_ENV
from tests.unit.conftest import FakeOtpStorage

pytestmark = pytest.mark.integration

HARD_LOCK_FAILURES = 100   # OTP_HARD_LOCK_FAILURES' default and ceiling


@pytest.fixture
def otp(mongo_client):
    """A real OtpStorage on an otp database of this test alone."""
    environ = {**TEST_ENV, "MONGO_DB_PREFIX": f"{TEST_ENV['MONGO_DB_PREFIX']}lockout{secrets.token_hex(3)}_"}
    client, storage = connect(OtpStorage, load_settings(MongoSettings, environ=environ))
    yield storage
    client.close()


def username():
    return f"W{secrets.token_hex(4)}"


def ticket_ids(storage, user):
    """The ids of `user`'s failure tickets, of every epoch (few documents: a scan is fine)."""
    return [document["_id"] for document in storage.db.failures.find({}, projection={"_id": 1})
            if document["_id"].startswith(f"{user}#")]


def test_failures_counted_at_once_from_the_same_read_are_each_numbered_once(otp):
    # A burst of wrong guesses: every request read the clean state before any was counted.
    user, burst = username(), 20
    read = otp.lock_state(user)
    now = utcnow()
    pool = eventlet.GreenPool(burst)

    counted = list(pool.imap(lambda _: otp.count_failure(read, now), range(burst)))

    assert sorted(state.failures for state in counted) == list(range(1, burst + 1))
    assert {state.epoch for state in counted} == {read.epoch}
    # However far the summary fell behind, the tickets are counted past it.
    after = otp.lock_state(user)
    assert (after.epoch, after.failures, after.last_failure_at) == (read.epoch, burst, now)


def test_lock_state_counts_the_tickets_past_a_lagging_summary(otp):
    # What two racing `$max` updates can leave on FerretDB: the summary at 2, tickets to 5.
    user = username()
    state, now = otp.lock_state(user), utcnow()
    for _ in range(5):
        state = otp.count_failure(state, now)
    otp.db.lockouts.update_one({"_id": user}, {"$set": {"failures": 2}})

    assert otp.lock_state(user).failures == 5
    # and the next failure is the 6th, not a number handed out before
    assert otp.count_failure(otp.lock_state(user), now).failures == 6


def test_a_failure_of_an_ended_epoch_does_not_bring_its_count_back(otp):
    user, now = username(), utcnow()
    state = otp.lock_state(user)
    for _ in range(4):
        state = otp.count_failure(state, now)
    old = otp.lock_state(user)
    assert old.failures == 4

    assert otp.start_new_epoch(old) is True                # a success (or an unlock)
    late = otp.count_failure(old, now)                      # a guess that had read `old`

    # Ticket 5 of the old epoch, but what the caller learns is the new epoch's state: no
    # lock to announce for an epoch that has ended.
    assert otp.has_ticket("failures", f"{user}#{old.epoch}", 5)
    assert (late.epoch, late.failures) != (old.epoch, 5) and late.failures == 0
    summary = otp.db.lockouts.find_one({"_id": user})
    assert summary["epoch"] != old.epoch and summary["failures"] == 0   # ...which stays ended
    current = otp.lock_state(user)
    assert (current.epoch, current.failures) == (summary["epoch"], 0)
    assert otp.count_failure(current, now).failures == 1    # the new epoch counts from one


def test_a_new_epoch_is_written_only_when_something_was_counted(otp):
    user = username()
    assert otp.start_new_epoch(otp.lock_state(user)) is False   # the common success: no write
    assert otp.db.lockouts.find_one({"_id": user}) is None
    otp.count_failure(otp.lock_state(user), utcnow())
    counted = otp.lock_state(user)
    assert otp.start_new_epoch(counted) is True
    assert otp.lock_state(user).failures == 0


def test_the_purge_forgets_a_made_up_username_but_keeps_an_accounts_hard_lock(otp):
    now = utcnow()
    nobody, locked_user, tried_user = username(), username(), username()
    # Failures of a username that has no account (login does not tell which exist), as
    # many as a hard lock: a made-up name must not pin anything forever.
    state = LockState(nobody, "0", 0)
    for _ in range(HARD_LOCK_FAILURES):
        state = otp.count_failure(state, now)
    # A real account hard-locked, and another whose failures stayed below the hard lock.
    for user, failures in ((locked_user, HARD_LOCK_FAILURES), (tried_user, 10)):
        otp.add_authenticator(f"dev_{user}", user, b"encrypted", "poll", "Phone", now)
        state = otp.lock_state(user)
        for _ in range(failures):
            state = otp.count_failure(state, now)

    otp.purge_expired(now, HARD_LOCK_FAILURES)               # nothing has expired yet
    assert len(ticket_ids(otp, nobody)) == HARD_LOCK_FAILURES
    assert otp.db.lockouts.find_one({"_id": nobody}) is not None

    otp.purge_expired(now + timedelta(days=2), HARD_LOCK_FAILURES)

    assert ticket_ids(otp, nobody) == []
    assert otp.db.lockouts.find_one({"_id": nobody}) is None
    assert otp.lock_state(nobody).failures == 0
    # The hard lock stays, though its tickets are gone: only an admin ends it.
    assert otp.db.lockouts.find_one({"_id": locked_user})["failures"] == HARD_LOCK_FAILURES
    assert otp.lock_state(locked_user).failures == HARD_LOCK_FAILURES
    assert ticket_ids(otp, locked_user) == []
    # A lock below the hard one has long ended: nothing of it is needed any more.
    assert otp.db.lockouts.find_one({"_id": tried_user}) is None
    assert otp.lock_state(tried_user).failures == 0
    assert otp.db.accounts.find_one({"_id": locked_user}) is not None   # the account itself stays


def test_the_purge_keeps_a_hard_lock_whose_summary_a_burst_left_behind(otp):
    now = utcnow()
    user = username()
    otp.add_authenticator(f"dev_{user}", user, b"encrypted", "poll", "Phone", now)
    state = otp.lock_state(user)
    for _ in range(HARD_LOCK_FAILURES):
        state = otp.count_failure(state, now)
    # What a racing burst can leave: the summary behind the tickets.
    otp.db.lockouts.update_one({"_id": user}, {"$set": {"failures": HARD_LOCK_FAILURES - 3}})
    otp.purge_expired(now + timedelta(days=2), HARD_LOCK_FAILURES)
    assert ticket_ids(otp, user) == []
    assert otp.lock_state(user).failures == HARD_LOCK_FAILURES   # still hard-locked


def test_a_forced_new_epoch_of_a_username_with_no_summary_writes_nothing(otp):
    # An update without upsert: an unlock of a username never counted leaves no summary,
    # and a failure counted after it counts in the epoch it read.
    user, now = username(), utcnow()
    clean = otp.lock_state(user)
    assert otp.start_new_epoch(clean, force=True) is True
    assert otp.db.lockouts.find_one({"_id": user}) is None and otp.lock_state(user) == clean
    assert otp.count_failure(clean, now) == LockState(user, clean.epoch, 1, now)
    assert otp.lock_state(user).failures == 1


def lockout_story(storage, now):
    """What `storage` answers along a late failure's story and an unlock of a username
    never counted: (epoch, failures) pairs with each epoch named by when it first
    appeared (epochs are random), and the booleans start_new_epoch returns."""
    names = {}

    def seen(state):
        return names.setdefault((state.username, state.epoch), len(names)), state.failures

    user, story = username(), []
    state = storage.lock_state(user)
    story.append(seen(state))
    for _ in range(4):
        state = storage.count_failure(state, now)
        story.append(seen(state))
    old = storage.lock_state(user)
    story += [seen(old), storage.start_new_epoch(old), seen(storage.count_failure(old, now))]
    current = storage.lock_state(user)
    story += [seen(current), seen(storage.count_failure(current, now)), seen(storage.lock_state(user))]
    story += [storage.start_new_epoch(storage.lock_state(user), force=True), seen(storage.lock_state(user))]
    never = username()
    clean = storage.lock_state(never)
    story += [seen(clean), storage.start_new_epoch(clean, force=True), seen(storage.lock_state(never)),
              seen(storage.count_failure(clean, now)), seen(storage.lock_state(never))]
    return story


def test_the_unit_layers_fake_answers_as_the_real_storage(otp):
    # The unit tests stand on FakeOtpStorage (tests/unit/conftest.py): on the same story
    # it must say what the real storage says, epoch guard included.
    now = utcnow()
    real = lockout_story(otp, now)
    assert real[5:9] == [(0, 4), True, (1, 0), (1, 0)]     # the guard: the late failure changes nothing
    assert lockout_story(FakeOtpStorage(), now) == real

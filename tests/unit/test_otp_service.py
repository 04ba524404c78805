"""OtpService's business logic, one worker at a time: no database, no broker.

The worker comes from nameko's `worker_factory` (see conftest.py): `storage` is a Mock
that records every call and is answered by an in-memory FakeOtpStorage starting as a
clean database (seed it through `worker.storage.fake`), `dispatch` a Mock standing for
the EventDispatcher, `deadline` a Mock whose check() passes, `config` real settings,
`box` a real SecretBox, so secrets really are encrypted, and `lockout` the real LockoutPolicy.
Settings are those of tests/conftest.py: 3 free failures, then 1 s, 2 s, ... capped at
4 s, and a hard lock at 6 consecutive failures.
"""
import base64
import inspect
import itertools
import json
import logging
import os
import time
from datetime import datetime, timedelta
from unittest.mock import ANY, Mock, call

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared import events
from shared.clock import utcnow
from shared.errors import (
    Expired, InvalidCredentials, Locked, NotFound, Unavailable, ValidationFailed,
)
from services.otp import activation_codes, totp
from services.otp.lockout import HARD_LOCKED, LockState
from services.otp.service import ACTIVATION_USED, WRONG_ACTIVATION, WRONG_CODE
from services.otp.storage import OtpStorage
from tests.unit.conftest import FakeOtpStorage

USER = "W123456"
# What lock_state reports for a username with no failure recorded.
CLEAN = LockState(USER, "0", 0)


# -- helpers -------------------------------------------------------------------------

def add_authenticator(worker, device_id="dev_1", secret=None, status="active"):
    """Store one more authenticator of USER in the fake storage; its plain secret."""
    secret = secret or totp.new_secret()
    worker.storage.fake.seed_authenticator(device_id, USER, worker.box.encrypt(secret, device_id),
                                           status=status, now=utcnow())
    return secret


def lock_state_of(worker, username=USER):
    """The lock state as the service reads it (read from the fake: not recorded)."""
    return worker.storage.fake.lock_state(username)


def a_while_ago():
    """Longer ago than any wait of the test policy (4 s at most): a lock from then is over."""
    return utcnow() - timedelta(minutes=1)


def seed_and_read(worker, failures, at):
    """Seed `failures` consecutive failures of USER, the last at `at`; the state after."""
    worker.storage.fake.seed_failures(USER, failures, at)
    return lock_state_of(worker)


def current_step():
    """The TOTP time step of now (what verify() compares against, ±1)."""
    return int(time.time()) // totp.PERIOD


def code_for(secret, step):
    return totp.generator(secret).generate_otp(step)


def wrong_code_for(secret):
    """A well-formed code that is none of the codes the window accepts."""
    accepted = {code_for(secret, current_step() + offset) for offset in (-1, 0, 1)}
    return next(code for code in ("0000000000", "1111111111", "2222222222", "3333333333")
                if code not in accepted)


def dispatched(worker):
    """[(event name, payload)] in the order the worker dispatched them."""
    return [call.args for call in worker.dispatch.call_args_list]


def only_event(worker, name):
    payloads = [payload for event, payload in dispatched(worker) if event == name]
    assert len(payloads) == 1, dispatched(worker)
    return payloads[0]


def assert_envelope(event_cls, payload):
    """A payload built through shared.events: envelope filled in, valid for consumers."""
    assert set(payload) >= {"event_id", "occurred_at", "version"}
    assert payload["version"] == event_cls.version
    events.parse_event(event_cls, payload)   # raises if a consumer would refuse it


def assert_nothing_secret_dispatched(worker, *values):
    text = json.dumps(dispatched(worker), default=str)
    for value in values:
        assert value not in text


def public_key_pem(private_key=None):
    private_key = private_key or ec.generate_private_key(ec.SECP256R1())
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def foreign_key():
    """An OTP_ENCRYPTION_KEYS entry the worker's box does not have."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def otp_box(key):
    return totp.SecretBox([key])


# -- the fake storage keeps the real storage's interface ------------------------------

def _public_methods(cls):
    return {name: member for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_the_fake_storage_has_every_method_of_the_real_one_with_its_signature():
    # What the service may call on its storage: OtpStorage's own methods, and ping /
    # purge_expired from Storage. (The generic claim/take_ticket helpers are left out:
    # the service must go through the named methods.)
    real = {name: method for name, method in _public_methods(OtpStorage).items()
            if name in vars(OtpStorage) or name in ("ping", "purge_expired")}
    fake = _public_methods(FakeOtpStorage)
    for name, method in real.items():
        assert name in fake, name
        assert inspect.signature(fake[name]) == inspect.signature(method), name


def test_the_fake_storage_keeps_the_epoch_guard_of_the_real_one():
    # OtpStorage.count_failure's guard, on the fake the unit tests stand on: a failure
    # counted against an epoch that a success has ended gets its ticket, but neither
    # raises the current epoch's count nor is reported as the old epoch's count.
    # (tests/integration/test_otp_lockout_storage.py runs this on the real storage.)
    fake, now = FakeOtpStorage(), utcnow()
    state = fake.lock_state(USER)
    for _ in range(4):
        state = fake.count_failure(state, now)
    old = fake.lock_state(USER)
    assert (old.failures, old.last_failure_at) == (4, now)

    assert fake.start_new_epoch(old) is True                  # a success
    current = fake.lock_state(USER)
    assert current.epoch != old.epoch and current.failures == 0
    late = fake.count_failure(old, now)                       # a guess that had read `old`

    assert f"{USER}#{old.epoch}#5" in fake.failures           # the old epoch's 5th ticket
    assert late == fake.lock_state(USER) == current           # told the current epoch's state
    assert fake.lockouts[USER]["epoch"] == current.epoch and fake.lockouts[USER]["failures"] == 0
    assert fake.count_failure(current, now).failures == 1     # the new epoch counts from one


def test_the_fake_storage_starts_no_epoch_where_nothing_was_counted():
    # OtpStorage.start_new_epoch updates the summary without upsert: a forced new epoch
    # (an unlock) of a username with no summary writes nothing, and a failure counted
    # after it still counts in the epoch it read.
    fake, now = FakeOtpStorage(), utcnow()
    assert fake.start_new_epoch(CLEAN) is False
    assert fake.start_new_epoch(CLEAN, force=True) is True
    assert fake.lockouts == {} and fake.lock_state(USER) == CLEAN
    assert fake.count_failure(CLEAN, now) == LockState(USER, CLEAN.epoch, 1, now)


# -- verify: success -----------------------------------------------------------------

def test_verify_accepts_the_current_code(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    step = current_step()

    result = worker.verify(USER, code_for(secret, step))

    assert result == {"username": USER, "device_id": "dev_1"}
    # Read before the code is checked, and once more when it matched (a burst may have
    # locked code login meanwhile).
    assert worker.storage.lock_state.call_args_list == [call(USER), call(USER)]
    worker.storage.authenticators_of.assert_called_once_with(USER)
    (authenticator, accepted_step, _attempt, _now), _ = worker.storage.accept_step.call_args
    assert (authenticator["_id"], accepted_step) == ("dev_1", step)
    worker.storage.accept_step.assert_called_once()
    worker.storage.start_new_epoch.assert_called_once_with(CLEAN)
    worker.storage.count_failure.assert_not_called()
    # Nothing was counted, so nothing is written: the common success costs no write.
    assert worker.storage.fake.lockouts == {}
    assert worker.storage.fake.authenticators["dev_1"]["last_step"] == step


def test_verify_success_dispatches_otp_verified(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    code = code_for(secret, current_step())

    worker.verify(USER, code)

    assert [name for name, _ in dispatched(worker)] == ["OtpVerified"]
    payload = only_event(worker, "OtpVerified")
    assert_envelope(events.OtpVerified, payload)
    assert payload["username"] == USER and payload["device_id"] == "dev_1"
    assert_nothing_secret_dispatched(worker, code, secret)


@pytest.mark.parametrize("offset", [-1, 1])
def test_verify_accepts_a_code_of_the_neighbouring_step(make_otp_worker, offset):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    step = current_step() + offset

    assert worker.verify(USER, code_for(secret, step))["device_id"] == "dev_1"
    (authenticator, accepted_step, _attempt, _now), _ = worker.storage.accept_step.call_args
    assert (authenticator["_id"], accepted_step) == ("dev_1", step)


def test_verify_finds_the_device_whose_code_it_is(make_otp_worker):
    worker = make_otp_worker()
    add_authenticator(worker, "dev_1")
    second = add_authenticator(worker, "dev_2")

    assert worker.verify(USER, code_for(second, current_step()))["device_id"] == "dev_2"
    assert [call.args[0]["_id"] for call in worker.storage.accept_step.call_args_list] == ["dev_2"]


def test_a_revoked_device_does_not_verify(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker, status="revoked")

    with pytest.raises(InvalidCredentials):
        worker.verify(USER, code_for(secret, current_step()))

    worker.storage.authenticators_of.assert_called_once_with(USER)   # active only
    worker.storage.accept_step.assert_not_called()
    worker.storage.count_failure.assert_called_once_with(CLEAN, ANY)


def test_verify_after_an_expired_temporary_lock_accepts_a_good_code(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    locked = seed_and_read(worker, 4, a_while_ago())      # a 1 s lock, long over

    assert worker.verify(USER, code_for(secret, current_step()))["device_id"] == "dev_1"

    worker.storage.start_new_epoch.assert_called_once_with(locked)
    worker.storage.count_failure.assert_not_called()
    # A new epoch: consecutive failures count from zero again.
    after = lock_state_of(worker)
    assert after.failures == 0 and after.epoch != locked.epoch


def test_success_after_a_few_failures_starts_counting_again(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.storage.fake.seed_failures(USER, 2, utcnow())

    worker.verify(USER, code_for(secret, current_step()))
    with pytest.raises(InvalidCredentials):
        worker.verify(USER, wrong_code_for(secret))

    assert worker.storage.count_failure.call_count == 1
    assert only_event(worker, "OtpRejected")["consecutive_failures"] == 1


# -- verify: refusals ----------------------------------------------------------------

def test_replayed_code_is_refused_and_reported_as_replayed(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    code = code_for(secret, current_step())
    worker.verify(USER, code)                              # accepted once
    worker.storage.reset_mock()
    worker.dispatch.reset_mock()

    with pytest.raises(InvalidCredentials) as refused:
        worker.verify(USER, code)                          # the same code again

    assert refused.value.message == WRONG_CODE
    worker.storage.accept_step.assert_called_once()         # the step was found, and refused
    worker.storage.count_failure.assert_called_once_with(CLEAN, ANY)
    worker.storage.start_new_epoch.assert_not_called()
    assert lock_state_of(worker).failures == 1
    assert [name for name, _ in dispatched(worker)] == ["OtpRejected"]
    rejected = only_event(worker, "OtpRejected")
    assert_envelope(events.OtpRejected, rejected)
    assert (rejected["username"], rejected["reason"], rejected["consecutive_failures"]) == (USER, "replayed", 1)
    assert_nothing_secret_dispatched(worker, code, secret)


def test_a_step_accepted_elsewhere_is_refused_as_replayed(make_otp_worker):
    # Another otp instance accepted this code first: accept_step says no.
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.storage.accept_step.return_value = False

    with pytest.raises(InvalidCredentials):
        worker.verify(USER, code_for(secret, current_step()))

    worker.storage.start_new_epoch.assert_not_called()
    worker.storage.count_failure.assert_called_once_with(CLEAN, ANY)
    assert only_event(worker, "OtpRejected")["reason"] == "replayed"
    assert "OtpVerified" not in [name for name, _ in dispatched(worker)]


def test_wrong_code_counts_a_failure(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    wrong = wrong_code_for(secret)
    before = seed_and_read(worker, 1, utcnow())          # this is the 2nd consecutive failure

    with pytest.raises(InvalidCredentials) as refused:
        worker.verify(USER, wrong)

    assert refused.value.message == WRONG_CODE
    assert refused.value.retry_after is None
    worker.storage.count_failure.assert_called_once_with(before, ANY)
    worker.storage.accept_step.assert_not_called()
    worker.storage.start_new_epoch.assert_not_called()
    # Counted in the same epoch, at the moment the service passed: what a lock runs from.
    after = lock_state_of(worker)
    (_, counted_at), _ = worker.storage.count_failure.call_args
    assert (after.epoch, after.failures, after.last_failure_at) == (before.epoch, 2, counted_at)
    rejected = only_event(worker, "OtpRejected")
    assert (rejected["reason"], rejected["consecutive_failures"]) == ("invalid", 2)
    assert [name for name, _ in dispatched(worker)] == ["OtpRejected"]
    assert_nothing_secret_dispatched(worker, wrong, secret)


def test_unknown_user_gets_the_same_refusal_as_a_wrong_code(make_otp_worker):
    unknown = make_otp_worker()                       # no authenticators at all
    known = make_otp_worker()
    secret = add_authenticator(known)
    wrong = wrong_code_for(secret)

    with pytest.raises(InvalidCredentials) as unknown_refusal:
        unknown.verify("W999999", wrong)
    with pytest.raises(InvalidCredentials) as wrong_refusal:
        known.verify(USER, wrong)

    assert unknown_refusal.value.to_dict() == wrong_refusal.value.to_dict()
    # An unknown user's failures are counted too, so locking cannot tell them apart either.
    unknown.storage.count_failure.assert_called_once_with(LockState("W999999", "0", 0), ANY)
    assert lock_state_of(unknown, "W999999").failures == 1
    assert only_event(unknown, "OtpRejected")["reason"] == "invalid"


def test_the_failure_crossing_the_free_ones_locks_temporarily(make_otp_worker):
    worker = make_otp_worker()
    add_authenticator(worker)
    before = seed_and_read(worker, 3, utcnow())         # OTP_FREE_FAILURES=3, this is the 4th

    with pytest.raises(Locked) as refused:
        worker.verify(USER, "0123456789")

    assert refused.value.retry_after == 1              # OTP_LOCK_BASE_SECONDS
    assert "1 seconds" in refused.value.message
    worker.storage.count_failure.assert_called_once_with(before, ANY)
    (_, counted_at), _ = worker.storage.count_failure.call_args
    assert lock_state_of(worker).failures == 4
    assert [name for name, _ in dispatched(worker)] == ["OtpRejected", "AccountLocked"]
    locked = only_event(worker, "AccountLocked")
    assert_envelope(events.AccountLocked, locked)
    assert (locked["username"], locked["consecutive_failures"], locked["hard"]) == (USER, 4, False)
    # The lock runs from the failure that started it.
    assert datetime.fromisoformat(locked["until"]) == counted_at + timedelta(seconds=1)


def test_following_failures_double_the_lock_up_to_the_cap(make_otp_worker):
    # 4 -> 1 s, 5 -> 2 s; with a higher hard lock, 6 -> 4 s and 7 -> 4 s (the cap). Each
    # failure comes after the previous lock ended, so each is counted.
    outcomes, notices = [], []
    for failures in (4, 5, 6, 7):
        worker = make_otp_worker(OTP_HARD_LOCK_FAILURES=10)
        worker.storage.fake.seed_failures(USER, failures - 1, a_while_ago())
        with pytest.raises(Locked) as refused:
            worker.verify(USER, "0123456789")
        outcomes.append((lock_state_of(worker).failures, refused.value.retry_after))
        notices.append([name for name, _ in dispatched(worker)].count("AccountLocked"))
    assert outcomes == [(4, 1), (5, 2), (6, 4), (7, 4)]
    # Only the first lock of the epoch is announced; the longer ones that follow are not.
    assert notices == [1, 0, 0, 0]


def test_account_locked_is_sent_when_a_lock_starts_not_on_every_failure(make_otp_worker, monkeypatch):
    # The service's clock moves 10 s on at every call (the longest wait is 4 s): every
    # guess comes after the previous lock ended, so each of the first six is counted,
    # and the seventh finds the hard lock.
    worker = make_otp_worker()
    add_authenticator(worker)
    start, calls = utcnow(), itertools.count()
    monkeypatch.setattr("services.otp.service.utcnow", lambda: start + timedelta(seconds=10 * next(calls)))

    for _ in range(7):
        with pytest.raises((InvalidCredentials, Locked)):
            worker.verify(USER, "0123456789")

    rejected = [(payload["reason"], payload["consecutive_failures"])
                for name, payload in dispatched(worker) if name == "OtpRejected"]
    assert rejected == [("invalid", failures) for failures in range(1, 7)] + [("locked", 6)]
    locks = [(payload["consecutive_failures"], payload["hard"])
             for name, payload in dispatched(worker) if name == "AccountLocked"]
    assert locks == [(4, False), (6, True)]            # the first temporary lock, the hard lock


def test_hard_lock_at_the_hard_lock_failure(make_otp_worker):
    worker = make_otp_worker()
    before = seed_and_read(worker, 5, a_while_ago())    # OTP_HARD_LOCK_FAILURES=6: this is the 6th

    with pytest.raises(Locked) as refused:
        worker.verify(USER, "0123456789")

    assert refused.value.retry_after is None          # no Retry-After: it does not end by itself
    assert refused.value.message == HARD_LOCKED and "administrator" in refused.value.message
    worker.storage.count_failure.assert_called_once_with(before, ANY)
    locked = only_event(worker, "AccountLocked")
    assert (locked["hard"], locked["until"], locked["consecutive_failures"]) == (True, None, 6)
    assert lock_state_of(worker).failures == 6


def test_hard_locked_account_refuses_even_the_right_code(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.storage.fake.seed_failures(USER, 6, a_while_ago())

    with pytest.raises(Locked) as refused:
        worker.verify(USER, code_for(secret, current_step()))

    assert refused.value.retry_after is None
    assert refused.value.message == HARD_LOCKED
    worker.storage.lock_state.assert_called_once_with(USER)
    # Refused before looking at the code: nothing is accepted, nothing more is counted.
    worker.storage.authenticators_of.assert_not_called()
    worker.storage.accept_step.assert_not_called()
    worker.storage.count_failure.assert_not_called()
    worker.storage.start_new_epoch.assert_not_called()
    rejected = only_event(worker, "OtpRejected")
    assert (rejected["reason"], rejected["consecutive_failures"]) == ("locked", 6)
    assert [name for name, _ in dispatched(worker)] == ["OtpRejected"]


def test_temporarily_locked_account_refuses_with_retry_after(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.storage.fake.seed_failures(USER, 5, utcnow())    # the 5th failure locks for 2 s

    with pytest.raises(Locked) as refused:
        worker.verify(USER, code_for(secret, current_step()))

    assert refused.value.retry_after == 2
    worker.storage.authenticators_of.assert_not_called()
    worker.storage.accept_step.assert_not_called()
    # A try during a lock is not counted: waiting it out is enough.
    worker.storage.count_failure.assert_not_called()
    assert lock_state_of(worker).failures == 5
    rejected = only_event(worker, "OtpRejected")
    assert (rejected["reason"], rejected["consecutive_failures"]) == ("locked", 5)


def test_a_burst_of_wrong_guesses_counts_every_guess(make_otp_worker):
    # Five guesses racing: each read the clean state before any of them was counted, and
    # FerretDB's read-modify-write `$max` left the summary at the first failure. The
    # tickets are exact and lock_state counts them past the summary, so the burst counts
    # five. (The fake stands for the storage here; tests/integration/
    # test_otp_lockout_storage.py races the real one.)
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    burst = 5
    worker.storage.lock_state.side_effect = [CLEAN] * burst

    for _ in range(burst):
        with pytest.raises((InvalidCredentials, Locked)):
            worker.verify(USER, wrong_code_for(secret))
    worker.storage.lock_state.side_effect = None       # the fake answers again
    worker.storage.fake.lockouts[USER]["failures"] = 1

    counted = [payload["consecutive_failures"] for name, payload in dispatched(worker) if name == "OtpRejected"]
    assert counted == list(range(1, burst + 1))        # each guess its own number
    assert lock_state_of(worker).failures == burst
    with pytest.raises(Locked) as refused:
        worker.verify(USER, code_for(secret, current_step()))
    assert refused.value.retry_after == 2              # the wait after 5 failures, not after 1
    worker.storage.accept_step.assert_not_called()


def test_a_right_code_matching_after_a_burst_locked_code_login_is_refused(make_otp_worker):
    # This login read the clean state; a burst's four failures were counted before its
    # code matched. Accepting it would let a burst check more guesses than the count allows.
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.storage.fake.seed_failures(USER, 4, utcnow())
    worker.storage.lock_state.side_effect = [CLEAN, lock_state_of(worker)]

    with pytest.raises(Locked):
        worker.verify(USER, code_for(secret, current_step()))

    worker.storage.accept_step.assert_not_called()
    worker.storage.count_failure.assert_not_called()
    worker.storage.start_new_epoch.assert_not_called()
    rejected = only_event(worker, "OtpRejected")
    assert (rejected["reason"], rejected["consecutive_failures"]) == ("locked", 4)


def test_a_late_failure_that_would_have_locked_the_old_epoch_announces_no_lock(make_otp_worker):
    # The late guess was the old epoch's 4th failure (free + 1, the one that locks), but a
    # success started a new epoch meanwhile: code login is open, so no lock and no notice.
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    old = seed_and_read(worker, 3, utcnow())
    worker.verify(USER, code_for(secret, current_step()))
    reads = [old]                                     # what the late guess had read first
    worker.storage.lock_state.side_effect = lambda name: reads.pop() if reads else worker.storage.fake.lock_state(name)
    worker.dispatch.reset_mock()

    with pytest.raises(InvalidCredentials):
        worker.verify(USER, wrong_code_for(secret))
    assert "AccountLocked" not in [name for name, _ in dispatched(worker)]
    assert lock_state_of(worker).failures == 0


def test_a_late_failure_of_an_old_epoch_does_not_bring_its_count_back(make_otp_worker):
    # A wrong guess read the state, a right code then started a new epoch, and only then
    # was the wrong guess counted: its ticket belongs to the old epoch, and the summary of
    # the new one stays at zero. (The fake stands for the storage here;
    # tests/integration/test_otp_lockout_storage.py checks the real one.)
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    old = seed_and_read(worker, 2, utcnow())
    worker.verify(USER, code_for(secret, current_step()))       # the success: a new epoch
    assert lock_state_of(worker).epoch != old.epoch
    worker.storage.lock_state.side_effect = [old]               # what the late guess had read

    with pytest.raises(InvalidCredentials):                     # the old epoch's 3rd failure
        worker.verify(USER, wrong_code_for(secret))
    worker.storage.lock_state.side_effect = None

    worker.storage.count_failure.assert_called_once_with(old, ANY)
    after = lock_state_of(worker)
    assert after.epoch != old.epoch and after.failures == 0
    # Code login stays open and the next failure is the first of the new epoch.
    worker.dispatch.reset_mock()
    with pytest.raises(InvalidCredentials):
        worker.verify(USER, wrong_code_for(secret))
    assert only_event(worker, "OtpRejected")["consecutive_failures"] == 1


@pytest.mark.parametrize("break_it", ["key removed from the ring", "decrypt raises ValueError"])
def test_an_undecryptable_secret_is_refused_and_logged_without_the_secret(make_otp_worker, caplog, break_it):
    # A key was removed from OTP_ENCRYPTION_KEYS while a device's secret still uses it:
    # an ordinary refusal for the user, an error naming the device for the operator.
    worker = make_otp_worker()
    secret = totp.new_secret()
    if break_it == "key removed from the ring":
        blob = otp_box(foreign_key()).encrypt(secret, "dev_1")
        worker.storage.fake.seed_authenticator("dev_1", USER, blob)
    else:
        add_authenticator(worker, secret=secret)
        blob = worker.storage.fake.authenticators["dev_1"]["secret"]
        worker.box = Mock(wraps=worker.box)
        worker.box.decrypt.side_effect = ValueError("secret was encrypted with a key that is not configured")
    code = code_for(secret, current_step())

    with caplog.at_level(logging.ERROR, logger="services.otp.service"):
        with pytest.raises(InvalidCredentials) as refused:
            worker.verify(USER, code)

    assert refused.value.message == WRONG_CODE
    worker.storage.accept_step.assert_not_called()
    worker.storage.start_new_epoch.assert_not_called()
    worker.storage.count_failure.assert_called_once_with(CLEAN, ANY)
    assert only_event(worker, "OtpRejected")["reason"] == "invalid"
    errors = [record for record in caplog.records
              if record.name == "services.otp.service" and record.levelno == logging.ERROR]
    assert len(errors) == 1
    logged = errors[0].getMessage() + repr(errors[0].args) + repr(errors[0].exc_info)
    assert "dev_1" in errors[0].getMessage()
    for value in (secret, code, repr(blob), blob.hex()):
        assert value not in logged
    assert secret not in caplog.text and code not in caplog.text


def test_an_undecryptable_secret_does_not_stop_the_other_devices(make_otp_worker, caplog):
    worker = make_otp_worker()
    worker.storage.fake.seed_authenticator("dev_1", USER, otp_box(foreign_key()).encrypt(totp.new_secret(),
                                                                                         "dev_1"))
    second = add_authenticator(worker, "dev_2")

    with caplog.at_level(logging.ERROR, logger="services.otp.service"):
        assert worker.verify(USER, code_for(second, current_step()))["device_id"] == "dev_2"
    assert "dev_1" in caplog.text


@pytest.mark.parametrize("username, code", [
    (USER, "123456789"),                  # 9 digits
    (USER, "12345678901"),                # 11 digits
    (USER, "12345abcde"),
    (USER, 1234567890),                   # a number, not a string
    (USER, None),
    ({"$ne": None}, "1234567890"),        # a Mongo operator instead of a username
    ("", "1234567890"),
    ("W 123", "1234567890"),
    ("W" * 65, "1234567890"),
])
def test_invalid_input_is_refused_without_touching_storage(make_otp_worker, username, code):
    worker = make_otp_worker()

    with pytest.raises(ValidationFailed) as refused:
        worker.verify(username, code)

    assert refused.value.fields                       # names the bad field(s)
    assert worker.storage.method_calls == []
    worker.dispatch.assert_not_called()


def test_refusals_never_echo_the_code(make_otp_worker):
    worker = make_otp_worker()
    with pytest.raises(ValidationFailed) as refused:
        worker.verify(USER, "98765432101")
    assert "98765432101" not in json.dumps(refused.value.to_dict())


def test_a_late_call_is_refused_before_anything_is_counted(make_otp_worker):
    # The gateway has already answered 503; counting a failure or accepting a code now
    # would act on a login nobody waits for.
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.deadline.check.side_effect = Unavailable("late")

    with pytest.raises(Unavailable):
        worker.verify(USER, code_for(secret, current_step()))

    assert worker.storage.method_calls == []
    worker.dispatch.assert_not_called()


# -- activation ----------------------------------------------------------------------

CODE = "K7Q2-9XMB-4TNR-HW3C"


def activation_record(**overrides):
    now = utcnow()
    return {"_id": "K7Q2", "secret_hash": activation_codes.secret_hash("9XMB4TNRHW3C"), "username": USER,
            "created_at": now, "expires_at": now + timedelta(days=1), "used_at": None, "failed_tries": 0,
            **overrides}


def activation_worker(make_otp_worker, **record_overrides):
    """A worker whose storage holds the code CODE (with its wrong tries' tickets)."""
    worker = make_otp_worker()
    worker.storage.fake.seed_activation_code(activation_record(**record_overrides))
    return worker


def activate(worker, code=CODE, **overrides):
    arguments = {"activation_code": code, "public_key": public_key_pem(), "platform": "poll",
                 "device_name": "Test phone", **overrides}
    return worker.activate_device(**arguments)


def test_activation_success(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    pem = public_key_pem()

    result = activate(worker, public_key=pem)

    device_id, secret = result["device_id"], result["otp"]["secret"]
    assert device_id.startswith("dev_")
    assert result["username"] == USER
    assert result["otp"] == {"secret": secret, "digits": 10, "period": 30, "algorithm": "SHA1"}
    assert len(secret) == 32
    assert result["otpauth_uri"].startswith("otpauth://totp/") and "issuer=MyCepa" in result["otpauth_uri"]
    worker.storage.activation_tries_exhausted.assert_called_once_with(ANY, 5)   # OTP_ACTIVATION_MAX_TRIES
    worker.storage.claim_activation_code.assert_called_once_with("K7Q2", ANY)
    worker.storage.undo_activation.assert_not_called()
    worker.storage.count_activation_failure.assert_not_called()
    assert worker.storage.fake.activation_codes["K7Q2"]["used_at"] is not None

    # The stored secret is encrypted and bound to the device id.
    (stored_id, username, blob, platform, device_name, _now), _ = worker.storage.add_authenticator.call_args
    assert (stored_id, username, platform, device_name) == (device_id, USER, "poll", "Test phone")
    assert isinstance(blob, bytes) and blob != secret.encode() and secret.encode() not in blob
    assert worker.box.decrypt(blob, device_id) == secret
    assert [record["_id"] for record in worker.storage.fake.authenticators_of(USER)] == [device_id]

    activated = only_event(worker, "DeviceActivated")
    assert_envelope(events.DeviceActivated, activated)
    assert {key: activated[key] for key in ("device_id", "username", "platform", "push_token", "public_key",
                                            "device_name")} == {
        "device_id": device_id, "username": USER, "platform": "poll", "push_token": None,
        "public_key": pem, "device_name": "Test phone"}
    assert_nothing_secret_dispatched(worker, secret, "9XMB-4TNR-HW3C", "9XMB4TNRHW3C")


def test_an_activated_device_verifies(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    result = activate(worker)

    assert worker.verify(USER, code_for(result["otp"]["secret"], current_step())) == {
        "username": USER, "device_id": result["device_id"]}


def test_activation_code_as_typed_by_a_person(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    assert activate(worker, code="k7q2 9xmb 4tnr hw3c")["username"] == USER
    worker.storage.find_activation_code.assert_any_call("K7Q2")


def test_activation_for_a_push_platform_passes_the_push_token_on(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    activate(worker, platform="ios", push_token="apns-token")
    activated = only_event(worker, "DeviceActivated")
    assert (activated["platform"], activated["push_token"]) == ("ios", "apns-token")


def test_an_activation_code_works_once(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    activate(worker)
    worker.dispatch.reset_mock()

    with pytest.raises(Expired) as refused:
        activate(worker)

    assert refused.value.message == ACTIVATION_USED
    assert worker.storage.claim_activation_code.call_count == 1
    assert worker.storage.add_authenticator.call_count == 1
    worker.dispatch.assert_not_called()


@pytest.mark.parametrize("code", ["nope", "K7Q2-9XMB-4TNR", "K7Q2-9XMB-4TNR-HW3O"])
def test_badly_formed_activation_code_is_invalid_without_a_lookup(make_otp_worker, code):
    worker = activation_worker(make_otp_worker)

    with pytest.raises(InvalidCredentials) as refused:
        activate(worker, code=code)

    assert refused.value.message == WRONG_ACTIVATION
    worker.storage.find_activation_code.assert_not_called()
    worker.storage.add_authenticator.assert_not_called()


def test_unknown_activation_code_is_invalid(make_otp_worker):
    worker = make_otp_worker()                          # no code stored

    with pytest.raises(InvalidCredentials) as refused:
        activate(worker)

    assert refused.value.message == WRONG_ACTIVATION
    worker.storage.find_activation_code.assert_called_once_with("K7Q2")
    worker.storage.count_activation_failure.assert_not_called()
    worker.storage.claim_activation_code.assert_not_called()


def test_wrong_secret_part_counts_a_failure(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    record = worker.storage.fake.find_activation_code("K7Q2")

    with pytest.raises(InvalidCredentials) as refused:
        activate(worker, code="K7Q2-9XMB-4TNR-HW3D")

    assert refused.value.message == WRONG_ACTIVATION
    worker.storage.count_activation_failure.assert_called_once_with(record, ANY)
    assert worker.storage.fake.activation_codes["K7Q2"]["failed_tries"] == 1
    worker.storage.claim_activation_code.assert_not_called()
    worker.storage.add_authenticator.assert_not_called()
    worker.dispatch.assert_not_called()


def test_the_wrong_try_reaching_the_maximum_locks_the_code(make_otp_worker):
    worker = activation_worker(make_otp_worker, failed_tries=4)   # OTP_ACTIVATION_MAX_TRIES=5 (default)
    record = worker.storage.fake.find_activation_code("K7Q2")

    with pytest.raises(Locked):
        activate(worker, code="K7Q2-9XMB-4TNR-HW3D")

    worker.storage.count_activation_failure.assert_called_once_with(record, ANY)
    assert worker.storage.fake.activation_codes["K7Q2"]["failed_tries"] == 5
    worker.storage.claim_activation_code.assert_not_called()


def test_a_code_tried_too_often_refuses_even_the_right_secret(make_otp_worker):
    worker = activation_worker(make_otp_worker, failed_tries=5)
    record = worker.storage.fake.find_activation_code("K7Q2")

    with pytest.raises(Locked):
        activate(worker)

    worker.storage.activation_tries_exhausted.assert_called_once_with(record, 5)
    worker.storage.count_activation_failure.assert_not_called()
    worker.storage.claim_activation_code.assert_not_called()
    worker.storage.add_authenticator.assert_not_called()


def test_used_activation_code_is_expired(make_otp_worker):
    worker = activation_worker(make_otp_worker, used_at=utcnow() - timedelta(minutes=1))

    with pytest.raises(Expired) as refused:
        activate(worker)

    assert "already been used" in refused.value.message
    worker.storage.claim_activation_code.assert_not_called()
    worker.storage.count_activation_failure.assert_not_called()


def test_expired_activation_code_is_expired(make_otp_worker):
    worker = activation_worker(make_otp_worker, expires_at=utcnow() - timedelta(seconds=1))

    with pytest.raises(Expired) as refused:
        activate(worker)

    assert "expired" in refused.value.message
    worker.storage.claim_activation_code.assert_not_called()


def test_losing_the_claim_race_is_expired(make_otp_worker):
    # Another activation claimed the code between our read and our claim: its claim is
    # stored, its `used_at` not yet written.
    worker = activation_worker(make_otp_worker)
    worker.storage.fake.activation_claims.add("K7Q2")

    with pytest.raises(Expired) as refused:
        activate(worker)

    assert refused.value.message == ACTIVATION_USED
    worker.storage.claim_activation_code.assert_called_once_with("K7Q2", ANY)
    worker.storage.add_authenticator.assert_not_called()
    worker.storage.undo_activation.assert_not_called()   # the claim is not ours
    worker.dispatch.assert_not_called()


def test_storage_failure_releases_the_claim(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    worker.storage.add_authenticator.side_effect = RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        activate(worker)

    worker.storage.undo_activation.assert_called_once_with("K7Q2", ANY, USER)
    worker.dispatch.assert_not_called()
    # Nothing half-written: the code works again once the database is back.
    worker.storage.add_authenticator.side_effect = None
    assert activate(worker)["username"] == USER


def test_an_activation_push_never_heard_of_is_undone(make_otp_worker):
    # The broker refused DeviceActivated: push would never know the device, so otp
    # forgets it too and the activation code works again.
    worker = activation_worker(make_otp_worker)
    worker.dispatch.side_effect = [ConnectionResetError("broker gone"), None]

    with pytest.raises(ConnectionResetError):
        activate(worker)

    (code_id, device_id, username), _ = worker.storage.undo_activation.call_args
    assert (code_id, username) == ("K7Q2", USER)
    assert device_id not in worker.storage.fake.authenticators
    assert device_id not in worker.storage.fake.accounts.get(USER, [])
    assert activate(worker)["username"] == USER


@pytest.mark.parametrize("overrides, bad_field", [
    ({"public_key": "not a key"}, "public_key"),
    ({"public_key": rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()}, "public_key"),
    ({"platform": "ios"}, "push_token"),               # ios needs a push token
    ({"platform": "windows"}, "platform"),
    ({"device_name": ""}, "device_name"),
    ({"device_name": "x" * 65}, "device_name"),
    ({"code": {"$ne": None}}, "activation_code"),
])
def test_invalid_activation_input_is_refused_without_touching_storage(make_otp_worker, overrides, bad_field):
    worker = activation_worker(make_otp_worker)

    with pytest.raises(ValidationFailed) as refused:
        activate(worker, **overrides)

    assert bad_field in refused.value.fields
    assert worker.storage.method_calls == []
    worker.dispatch.assert_not_called()


def test_a_late_activation_is_refused_before_the_code_is_touched(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    worker.deadline.check.side_effect = Unavailable("late")

    with pytest.raises(Unavailable):
        activate(worker)

    assert worker.storage.method_calls == []
    worker.dispatch.assert_not_called()


# -- create_activation -------------------------------------------------------------------

def test_create_activation_stores_only_the_hash_of_the_secret_part(make_otp_worker):
    worker = make_otp_worker()

    result = worker.create_activation(USER)

    code = result["activation_code"]
    code_id, secret_part = activation_codes.parse(code)
    (stored_id, stored_hash, username, now, expires_at), _ = worker.storage.add_activation_code.call_args
    assert (stored_id, username) == (code_id, USER)
    assert activation_codes.matches(secret_part, stored_hash)
    assert secret_part not in stored_hash
    assert expires_at - now == timedelta(days=7)       # OTP_ACTIVATION_TTL_SECONDS default
    assert result["username"] == USER and result["expires_at"].endswith("Z")
    stored = worker.storage.fake.activation_codes[code_id]
    assert secret_part not in json.dumps(stored, default=str)


def test_create_activation_draws_again_when_the_id_is_taken(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.add_activation_code.side_effect = [False, False, True]

    result = worker.create_activation(USER)

    ids = [call.args[0] for call in worker.storage.add_activation_code.call_args_list]
    assert len(ids) == 3
    assert activation_codes.parse(result["activation_code"])[0] == ids[-1]


def test_create_activation_gives_up_with_unavailable(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.add_activation_code.return_value = False

    with pytest.raises(Unavailable):
        worker.create_activation(USER)
    assert worker.storage.add_activation_code.call_count == 10


def test_create_activation_validates_the_username(make_otp_worker):
    worker = make_otp_worker()
    with pytest.raises(ValidationFailed):
        worker.create_activation({"$gt": ""})
    assert worker.storage.method_calls == []


# -- administration ----------------------------------------------------------------------

def test_unlock_of_a_hard_lock_emits_account_unlocked(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    locked = seed_and_read(worker, 6, a_while_ago())

    assert worker.unlock(USER) == {"username": USER, "was_locked": True}

    worker.storage.lock_state.assert_called_once_with(USER)
    worker.storage.start_new_epoch.assert_called_once_with(locked, force=True)
    unlocked = only_event(worker, "AccountUnlocked")
    assert_envelope(events.AccountUnlocked, unlocked)
    assert (unlocked["username"], unlocked["by"]) == (USER, "admin")
    assert lock_state_of(worker).failures == 0
    # Unlocked for real: the right code is accepted again.
    assert worker.verify(USER, code_for(secret, current_step()))["device_id"] == "dev_1"


def test_unlock_of_a_running_temporary_lock_emits_account_unlocked(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    locked = seed_and_read(worker, 5, utcnow())         # locked for 2 s from now

    assert worker.unlock(USER)["was_locked"] is True
    worker.storage.start_new_epoch.assert_called_once_with(locked, force=True)
    assert [name for name, _ in dispatched(worker)] == ["AccountUnlocked"]
    after = lock_state_of(worker)
    assert after.failures == 0 and after.epoch != locked.epoch
    assert worker.verify(USER, code_for(secret, current_step()))["device_id"] == "dev_1"


@pytest.mark.parametrize("failures, at", [
    (2, utcnow),                                        # failures, no lock
    (4, a_while_ago),                                   # a lock that has ended
])
def test_unlock_without_a_lock_emits_nothing(make_otp_worker, failures, at):
    worker = make_otp_worker()
    counted = seed_and_read(worker, failures, at())

    assert worker.unlock(USER) == {"username": USER, "was_locked": False}
    worker.storage.start_new_epoch.assert_called_once_with(counted, force=True)
    worker.dispatch.assert_not_called()
    # Even so, the consecutive failures count from zero again.
    assert lock_state_of(worker).failures == 0


def test_unlock_of_a_username_with_no_failure_writes_nothing(make_otp_worker):
    worker = make_otp_worker()

    assert worker.unlock(USER) == {"username": USER, "was_locked": False}
    worker.storage.lock_state.assert_called_once_with(USER)
    worker.storage.start_new_epoch.assert_not_called()
    worker.dispatch.assert_not_called()
    assert worker.storage.fake.lockouts == {}


def test_unlock_validates_the_username(make_otp_worker):
    worker = make_otp_worker()
    with pytest.raises(ValidationFailed):
        worker.unlock({"$ne": None})
    assert worker.storage.method_calls == []


@pytest.mark.parametrize("reason", ["admin", "user", "replaced"])
def test_revoke_device_dispatches_device_revoked(make_otp_worker, reason):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    arguments = {} if reason == "admin" else {"reason": reason}   # "admin" is the default

    view = worker.revoke_device("dev_1", **arguments)

    assert (view["device_id"], view["status"]) == ("dev_1", "revoked") and view["revoked_at"]
    assert "secret" not in view and "last_step" not in view
    worker.storage.revoke_authenticator.assert_called_once_with("dev_1", ANY)
    worker.storage.find_authenticator.assert_called_once_with("dev_1")
    revoked = only_event(worker, "DeviceRevoked")
    assert_envelope(events.DeviceRevoked, revoked)
    assert (revoked["device_id"], revoked["username"], revoked["reason"]) == ("dev_1", USER, reason)
    assert revoked["active_devices_left"] == 0          # it was the user's only device
    assert_nothing_secret_dispatched(worker, secret)
    # Revoked for real: its codes no longer verify.
    with pytest.raises(InvalidCredentials):
        worker.verify(USER, code_for(secret, current_step()))


@pytest.mark.parametrize("other_devices, left", [
    ([], 0),
    ([("dev_2", "active")], 1),
    ([("dev_2", "active"), ("dev_3", "revoked")], 1),   # a device revoked before does not count
])
def test_device_revoked_says_how_many_active_devices_are_left(make_otp_worker, other_devices, left):
    # At 0 the gateway forgets the saved username: push login could not work any more.
    worker = make_otp_worker()
    add_authenticator(worker, "dev_1")
    for device_id, status in other_devices:
        add_authenticator(worker, device_id, status=status)

    worker.revoke_device("dev_1")

    revoked = only_event(worker, "DeviceRevoked")
    assert_envelope(events.DeviceRevoked, revoked)
    assert revoked["active_devices_left"] == left
    assert len(worker.storage.fake.authenticators_of(USER)) == left


@pytest.mark.parametrize("status", [None, "revoked"])
def test_revoke_unknown_or_revoked_device_is_not_found(make_otp_worker, status):
    worker = make_otp_worker()
    if status:
        add_authenticator(worker, status=status)

    with pytest.raises(NotFound):
        worker.revoke_device("dev_1")
    worker.storage.find_authenticator.assert_not_called()
    worker.dispatch.assert_not_called()


def test_revoke_with_an_unknown_reason_is_refused_before_revoking(make_otp_worker):
    # `reason` is validated at the RPC boundary: a reason DeviceRevoked cannot carry must
    # not revoke the device and then fail to tell push about it.
    worker = make_otp_worker()
    add_authenticator(worker)

    with pytest.raises(ValidationFailed) as refused:
        worker.revoke_device("dev_1", reason="stolen")

    assert "reason" in refused.value.fields
    worker.storage.revoke_authenticator.assert_not_called()
    assert worker.storage.method_calls == []
    assert worker.storage.fake.authenticators["dev_1"]["status"] == "active"
    worker.dispatch.assert_not_called()


def test_account_state_of_a_code_locked_account_keeps_push_available(make_otp_worker):
    # A locked code login does not stop push: the phone proves possession.
    worker = make_otp_worker()
    add_authenticator(worker)
    worker.storage.fake.seed_failures(USER, 5, utcnow())   # locked for 2 s

    assert worker.account_state(USER) == {"username": USER, "code_login_locked": True, "active_devices": 1}
    worker.storage.lock_state.assert_called_once_with(USER)
    worker.storage.authenticators_of.assert_called_once_with(USER)   # active ones only


@pytest.mark.parametrize("failures, at, locked", [
    (0, utcnow, False),
    (3, utcnow, False),                                 # free failures
    (5, a_while_ago, False),                            # a lock that has ended
    (6, a_while_ago, True),                             # a hard lock does not end
])
def test_account_state_says_whether_code_login_is_locked(make_otp_worker, failures, at, locked):
    worker = make_otp_worker()
    add_authenticator(worker, "dev_1")
    add_authenticator(worker, "dev_2")
    add_authenticator(worker, "dev_3", status="revoked")
    worker.storage.fake.seed_failures(USER, failures, at())

    assert worker.account_state(USER) == {"username": USER, "code_login_locked": locked, "active_devices": 2}


def test_account_state_of_an_unknown_username(make_otp_worker):
    worker = make_otp_worker()
    assert worker.account_state("W999999") == {"username": "W999999", "code_login_locked": False,
                                               "active_devices": 0}


def test_account_state_validates_the_username(make_otp_worker):
    worker = make_otp_worker()
    with pytest.raises(ValidationFailed):
        worker.account_state({"$ne": None})
    assert worker.storage.method_calls == []


def access_confirmed(username=USER):
    return events.build_event(events.AccessConfirmed, request_id="req_1", challenge_id="chal_1",
                              username=username, device_id="dev_1")


def test_a_push_login_resets_the_failed_codes_so_code_login_works_again(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    locked = seed_and_read(worker, 5, utcnow())         # code login locked for 2 s
    with pytest.raises(Locked):
        worker.verify(USER, code_for(secret, current_step()))

    worker.on_access_confirmed(access_confirmed())

    worker.storage.start_new_epoch.assert_called_once_with(locked)
    after = lock_state_of(worker)
    assert after.failures == 0 and after.epoch != locked.epoch
    assert worker.verify(USER, code_for(secret, current_step()))["device_id"] == "dev_1"


def test_a_push_login_without_failed_codes_writes_nothing(make_otp_worker):
    worker = make_otp_worker()

    worker.on_access_confirmed(access_confirmed())

    worker.storage.lock_state.assert_called_once_with(USER)
    worker.storage.start_new_epoch.assert_called_once_with(CLEAN)
    assert worker.storage.fake.lockouts == {}
    worker.dispatch.assert_not_called()


def test_a_push_login_resets_only_its_own_user(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.fake.seed_failures(USER, 5, utcnow())
    worker.storage.fake.seed_failures("W654321", 5, utcnow())

    worker.on_access_confirmed(access_confirmed("W654321"))

    assert (lock_state_of(worker).failures, lock_state_of(worker, "W654321").failures) == (5, 0)


@pytest.mark.parametrize("payload", [
    {"username": USER},                                             # no envelope, no ids
    {**access_confirmed(), "username": ""},                         # not a username
    {**access_confirmed(), "username": {"$ne": None}},
])
def test_a_malformed_access_confirmed_is_dropped(make_otp_worker, caplog, payload):
    worker = make_otp_worker()
    worker.storage.fake.seed_failures(USER, 5, utcnow())

    with caplog.at_level(logging.ERROR, logger="services.otp.service"):
        worker.on_access_confirmed(payload)                         # no exception: not requeued

    assert worker.storage.method_calls == []
    assert lock_state_of(worker).failures == 5
    assert "malformed AccessConfirmed" in caplog.text


def test_list_devices_never_returns_a_secret(make_otp_worker):
    worker = make_otp_worker()
    add_authenticator(worker, "dev_1")
    add_authenticator(worker, "dev_2", status="revoked")
    worker.storage.fake.authenticators["dev_1"]["last_step"] = 123

    devices = worker.list_devices(USER)

    assert [(device["device_id"], device["status"]) for device in devices] == [
        ("dev_1", "active"), ("dev_2", "revoked")]            # revoked ones are listed too
    for device in devices:
        assert "secret" not in device and "last_step" not in device
        assert set(device) == {"device_id", "username", "platform", "device_name", "status",
                               "created_at", "last_used_at", "revoked_at"}
    worker.storage.authenticators_of.assert_called_once_with(USER, active_only=False)


def test_list_devices_validates_the_username(make_otp_worker):
    worker = make_otp_worker()
    with pytest.raises(ValidationFailed):
        worker.list_devices({"$ne": None})
    assert worker.storage.method_calls == []


def test_ping_reports_an_unreachable_database(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.ping.return_value = False
    with pytest.raises(Unavailable):
        worker.ping()
    worker.storage.ping.return_value = True
    assert worker.ping() == {"service": "otp"}


# -- a login that does not answer 200 does not consume its code ------------------------

ATTEMPT, OTHER_ATTEMPT = "a" * 32, "b" * 32


def test_the_same_attempt_asking_again_is_accepted_again(make_otp_worker):
    # An otp instance died after accepting; RabbitMQ redelivered the call to another.
    worker = make_otp_worker()
    code = code_for(add_authenticator(worker), current_step())

    first = worker.verify(USER, code, ATTEMPT)
    again = worker.verify(USER, code, ATTEMPT)

    assert first == again == {"username": USER, "device_id": "dev_1"}
    with pytest.raises(InvalidCredentials):           # another attempt is a replay
        worker.verify(USER, code, OTHER_ATTEMPT)
    assert lock_state_of(worker).failures == 1


def test_an_accepted_code_is_released_unless_the_success_is_delivered(make_otp_worker):
    worker = make_otp_worker()
    code = code_for(add_authenticator(worker), current_step())

    worker.verify(USER, code, ATTEMPT)

    # What the RPC entrypoint runs when the reply cannot be sent (shared/messaging.py).
    (undo,), _ = worker.deadline.undo_unless_delivered.call_args
    assert f"dev_1#{current_step()}" in worker.storage.fake.used_steps
    undo()
    assert worker.storage.fake.used_steps == {}
    assert worker.verify(USER, code, OTHER_ATTEMPT)["device_id"] == "dev_1"


def test_a_refused_code_registers_nothing_to_undo(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)

    with pytest.raises(InvalidCredentials):
        worker.verify(USER, wrong_code_for(secret), ATTEMPT)

    worker.deadline.undo_unless_delivered.assert_not_called()


def test_login_abandoned_releases_that_attempts_code_only(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    add_authenticator(worker, "dev_2", secret=secret)
    step = current_step()
    worker.verify(USER, code_for(secret, step), ATTEMPT)
    worker.storage.fake.used_steps[f"dev_2#{step - 1}"] = OTHER_ATTEMPT

    worker.on_login_abandoned(events.build_event(events.LoginAbandoned, username=USER, attempt_id=ATTEMPT,
                                                 reason="unavailable"))

    assert worker.storage.fake.used_steps == {f"dev_2#{step - 1}": OTHER_ATTEMPT}
    assert worker.verify(USER, code_for(secret, step), OTHER_ATTEMPT)["device_id"] == "dev_1"


def test_a_malformed_login_abandoned_is_dropped(make_otp_worker):
    worker = make_otp_worker()
    worker.on_login_abandoned({"username": USER})
    worker.storage.authenticators_of.assert_not_called()

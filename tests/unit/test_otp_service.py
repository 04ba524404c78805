"""OtpService's business logic, one worker at a time: storage and dispatcher are mocks.

The worker comes from nameko's `worker_factory` (see conftest.py): `storage` is a Mock
starting as a clean database, `dispatch` a Mock standing for the EventDispatcher, and
`config` real settings and a real SecretBox, so secrets really are encrypted.
Settings are those of tests/conftest.py: 3 free failures, then 1 s, 2 s, ... capped at
4 s, and a hard lock at 6 consecutive failures.
"""
import json
import time
from datetime import datetime, timedelta, timezone
from unittest.mock import ANY

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared import events
from shared.clock import utcnow
from shared.errors import (
    Expired, InvalidCredentials, Locked, NotFound, Unavailable, ValidationFailed,
)
from services.otp import activation_codes, secrets
from services.otp.service import WRONG_ACTIVATION, WRONG_CODE

USER = "W123456"


# -- helpers -------------------------------------------------------------------------

def add_authenticator(worker, device_id="dev_1", secret=None):
    """Make the storage mock return one more active authenticator; its plain secret."""
    secret = secret or secrets.new_secret()
    record = {"_id": device_id, "username": USER, "status": "active",
              "secret": worker.config.box.encrypt(secret, device_id)}
    worker.storage.active_authenticators.return_value = [
        *worker.storage.active_authenticators.return_value, record]
    return secret


def current_step():
    """The TOTP time step of now (what verify() compares against, ±1)."""
    return int(time.time()) // secrets.PERIOD


def code_for(secret, step):
    return secrets.totp(secret).generate_otp(step)


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


# -- verify: success -----------------------------------------------------------------

def test_verify_accepts_the_current_code(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    step = current_step()

    result = worker.verify(USER, code_for(secret, step))

    assert result == {"username": USER, "device_id": "dev_1"}
    worker.storage.advance_last_step.assert_called_once_with("dev_1", step, ANY)
    worker.storage.clear_failures.assert_called_once_with(USER)
    worker.storage.count_failure.assert_not_called()


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
    worker.storage.advance_last_step.assert_called_once_with("dev_1", step, ANY)


def test_verify_finds_the_device_whose_code_it_is(make_otp_worker):
    worker = make_otp_worker()
    add_authenticator(worker, "dev_1")
    second = add_authenticator(worker, "dev_2")

    assert worker.verify(USER, code_for(second, current_step()))["device_id"] == "dev_2"
    assert [call.args[0] for call in worker.storage.advance_last_step.call_args_list] == ["dev_2"]


def test_verify_after_an_expired_temporary_lock_accepts_a_good_code(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.storage.lockout.return_value = {"failures": 4, "hard_locked": False,
                                           "locked_until": utcnow() - timedelta(seconds=1)}

    assert worker.verify(USER, code_for(secret, current_step()))["device_id"] == "dev_1"
    worker.storage.clear_failures.assert_called_once_with(USER)


# -- verify: refusals ----------------------------------------------------------------

def test_replayed_code_is_refused_and_reported_as_replayed(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    code = code_for(secret, current_step())
    worker.storage.advance_last_step.return_value = False   # this step was accepted before
    worker.storage.count_failure.return_value = 1

    with pytest.raises(InvalidCredentials) as refused:
        worker.verify(USER, code)

    assert refused.value.message == WRONG_CODE
    worker.storage.count_failure.assert_called_once_with(USER, ANY)
    worker.storage.clear_failures.assert_not_called()
    assert [name for name, _ in dispatched(worker)] == ["OtpRejected"]
    rejected = only_event(worker, "OtpRejected")
    assert_envelope(events.OtpRejected, rejected)
    assert (rejected["username"], rejected["reason"], rejected["consecutive_failures"]) == (USER, "replayed", 1)
    assert_nothing_secret_dispatched(worker, code, secret)


def test_wrong_code_counts_a_failure(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    wrong = "0000000000" if code_for(secret, current_step()) != "0000000000" else "1111111111"
    worker.storage.count_failure.return_value = 2

    with pytest.raises(InvalidCredentials) as refused:
        worker.verify(USER, wrong)

    assert refused.value.message == WRONG_CODE
    assert refused.value.retry_after is None
    worker.storage.count_failure.assert_called_once_with(USER, ANY)
    worker.storage.advance_last_step.assert_not_called()
    worker.storage.lock.assert_not_called()
    rejected = only_event(worker, "OtpRejected")
    assert (rejected["reason"], rejected["consecutive_failures"]) == ("invalid", 2)
    assert [name for name, _ in dispatched(worker)] == ["OtpRejected"]
    assert_nothing_secret_dispatched(worker, wrong, secret)


def test_unknown_user_gets_the_same_refusal_as_a_wrong_code(make_otp_worker):
    unknown = make_otp_worker()                       # no authenticators at all
    known = make_otp_worker()
    add_authenticator(known)

    with pytest.raises(InvalidCredentials) as unknown_refusal:
        unknown.verify("W999999", "0123456789")
    with pytest.raises(InvalidCredentials) as wrong_refusal:
        known.verify(USER, "0123456789")

    assert unknown_refusal.value.to_dict() == wrong_refusal.value.to_dict()
    # An unknown user's failures are counted too, so locking cannot tell them apart either.
    unknown.storage.count_failure.assert_called_once_with("W999999", ANY)
    assert only_event(unknown, "OtpRejected")["reason"] == "invalid"


def test_the_failure_crossing_the_free_ones_locks_temporarily(make_otp_worker):
    worker = make_otp_worker()
    add_authenticator(worker)
    worker.storage.count_failure.return_value = 4     # OTP_FREE_FAILURES=3, this is the 4th

    with pytest.raises(Locked) as refused:
        worker.verify(USER, "0123456789")

    assert refused.value.retry_after == 1              # OTP_LOCK_BASE_SECONDS
    assert "1 seconds" in refused.value.message
    (username, until, hard, now), _ = worker.storage.lock.call_args
    assert (username, hard) == (USER, False)
    assert until - now == timedelta(seconds=1)
    assert [name for name, _ in dispatched(worker)] == ["OtpRejected", "AccountLocked"]
    locked = only_event(worker, "AccountLocked")
    assert_envelope(events.AccountLocked, locked)
    assert (locked["username"], locked["consecutive_failures"], locked["hard"]) == (USER, 4, False)
    assert datetime.fromisoformat(locked["until"]) == until


def test_following_failures_double_the_lock_up_to_the_cap(make_otp_worker):
    # 4 -> 1 s, 5 -> 2 s; with a higher hard lock, 6 -> 4 s and 7 -> 4 s (the cap).
    outcomes = []
    for failures in (4, 5, 6, 7):
        worker = make_otp_worker(OTP_HARD_LOCK_FAILURES=10)
        worker.storage.count_failure.return_value = failures
        with pytest.raises(Locked) as refused:
            worker.verify(USER, "0123456789")
        outcomes.append(refused.value.retry_after)
    assert outcomes == [1, 2, 4, 4]


def test_hard_lock_at_the_hard_lock_failure(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.count_failure.return_value = 6     # OTP_HARD_LOCK_FAILURES

    with pytest.raises(Locked) as refused:
        worker.verify(USER, "0123456789")

    assert refused.value.retry_after is None          # no Retry-After: it does not end by itself
    assert "administrator" in refused.value.message
    worker.storage.lock.assert_called_once_with(USER, None, True, ANY)
    locked = only_event(worker, "AccountLocked")
    assert (locked["hard"], locked["until"], locked["consecutive_failures"]) == (True, None, 6)


def test_hard_locked_account_refuses_even_the_right_code(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.storage.lockout.return_value = {"failures": 6, "locked_until": None, "hard_locked": True}

    with pytest.raises(Locked) as refused:
        worker.verify(USER, code_for(secret, current_step()))

    assert refused.value.retry_after is None
    # Refused before looking at the code: nothing is accepted, nothing more is counted.
    worker.storage.active_authenticators.assert_not_called()
    worker.storage.advance_last_step.assert_not_called()
    worker.storage.count_failure.assert_not_called()
    rejected = only_event(worker, "OtpRejected")
    assert (rejected["reason"], rejected["consecutive_failures"]) == ("locked", 6)
    assert [name for name, _ in dispatched(worker)] == ["OtpRejected"]


def test_temporarily_locked_account_refuses_with_retry_after(make_otp_worker):
    worker = make_otp_worker()
    secret = add_authenticator(worker)
    worker.storage.lockout.return_value = {"failures": 5, "hard_locked": False,
                                           "locked_until": utcnow() + timedelta(seconds=3)}

    with pytest.raises(Locked) as refused:
        worker.verify(USER, code_for(secret, current_step()))

    assert refused.value.retry_after == 3
    worker.storage.advance_last_step.assert_not_called()
    worker.storage.count_failure.assert_not_called()
    assert only_event(worker, "OtpRejected")["reason"] == "locked"


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

    worker.storage.advance_last_step.assert_not_called()
    worker.storage.count_failure.assert_not_called()
    worker.dispatch.assert_not_called()


# -- activation ----------------------------------------------------------------------

CODE = "K7Q2-9XMB-4TNR-HW3C"


def activation_record(**overrides):
    now = utcnow()
    return {"_id": "K7Q2", "secret_hash": activation_codes.secret_hash("9XMB4TNRHW3C"), "username": USER,
            "created_at": now, "expires_at": now + timedelta(days=1), "used_at": None, "failed_tries": 0,
            **overrides}


def activation_worker(make_otp_worker, **record_overrides):
    worker = make_otp_worker()
    worker.storage.find_activation_code.return_value = activation_record(**record_overrides)
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
    worker.storage.claim_activation_code.assert_called_once_with("K7Q2", ANY)
    worker.storage.release_activation_code.assert_not_called()

    # The stored secret is encrypted and bound to the device id.
    (stored_id, username, blob, platform, device_name, _now), _ = worker.storage.add_authenticator.call_args
    assert (stored_id, username, platform, device_name) == (device_id, USER, "poll", "Test phone")
    assert isinstance(blob, bytes) and blob != secret.encode() and secret.encode() not in blob
    assert worker.config.box.decrypt(blob, device_id) == secret

    activated = only_event(worker, "DeviceActivated")
    assert_envelope(events.DeviceActivated, activated)
    assert {key: activated[key] for key in ("device_id", "username", "platform", "push_token", "public_key",
                                            "device_name")} == {
        "device_id": device_id, "username": USER, "platform": "poll", "push_token": None,
        "public_key": pem, "device_name": "Test phone"}
    assert_nothing_secret_dispatched(worker, secret, "9XMB-4TNR-HW3C", "9XMB4TNRHW3C")


def test_activation_code_as_typed_by_a_person(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    assert activate(worker, code="k7q2 9xmb 4tnr hw3c")["username"] == USER
    worker.storage.find_activation_code.assert_any_call("K7Q2")


def test_activation_for_a_push_platform_passes_the_push_token_on(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    activate(worker, platform="ios", push_token="apns-token")
    activated = only_event(worker, "DeviceActivated")
    assert (activated["platform"], activated["push_token"]) == ("ios", "apns-token")


@pytest.mark.parametrize("code", ["nope", "K7Q2-9XMB-4TNR", "K7Q2-9XMB-4TNR-HW3O"])
def test_badly_formed_activation_code_is_invalid_without_a_lookup(make_otp_worker, code):
    worker = activation_worker(make_otp_worker)

    with pytest.raises(InvalidCredentials) as refused:
        activate(worker, code=code)

    assert refused.value.message == WRONG_ACTIVATION
    worker.storage.find_activation_code.assert_not_called()
    worker.storage.add_authenticator.assert_not_called()


def test_unknown_activation_code_is_invalid(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.find_activation_code.return_value = None

    with pytest.raises(InvalidCredentials) as refused:
        activate(worker)

    assert refused.value.message == WRONG_ACTIVATION
    worker.storage.claim_activation_code.assert_not_called()


def test_wrong_secret_part_counts_a_failure(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    worker.storage.count_activation_failure.return_value = 1

    with pytest.raises(InvalidCredentials) as refused:
        activate(worker, code="K7Q2-9XMB-4TNR-HW3D")

    assert refused.value.message == WRONG_ACTIVATION
    worker.storage.count_activation_failure.assert_called_once_with("K7Q2")
    worker.storage.claim_activation_code.assert_not_called()
    worker.storage.add_authenticator.assert_not_called()
    worker.dispatch.assert_not_called()


def test_the_wrong_try_reaching_the_maximum_locks_the_code(make_otp_worker):
    worker = activation_worker(make_otp_worker, failed_tries=4)
    worker.storage.count_activation_failure.return_value = 5    # OTP_ACTIVATION_MAX_TRIES default

    with pytest.raises(Locked):
        activate(worker, code="K7Q2-9XMB-4TNR-HW3D")
    worker.storage.claim_activation_code.assert_not_called()


def test_a_code_tried_too_often_refuses_even_the_right_secret(make_otp_worker):
    worker = activation_worker(make_otp_worker, failed_tries=5)

    with pytest.raises(Locked):
        activate(worker)

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
    # Another activation claimed the code between our read and our claim.
    worker = activation_worker(make_otp_worker)
    worker.storage.claim_activation_code.return_value = False

    with pytest.raises(Expired):
        activate(worker)

    worker.storage.add_authenticator.assert_not_called()
    worker.dispatch.assert_not_called()


def test_storage_failure_releases_the_claim(make_otp_worker):
    worker = activation_worker(make_otp_worker)
    worker.storage.add_authenticator.side_effect = RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        activate(worker)

    worker.storage.release_activation_code.assert_called_once_with("K7Q2")
    worker.dispatch.assert_not_called()


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


# -- create_activation -------------------------------------------------------------------

def test_create_activation_stores_only_the_hash_of_the_secret_part(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.add_activation_code.return_value = True

    result = worker.create_activation(USER)

    code = result["activation_code"]
    code_id, secret_part = activation_codes.parse(code)
    (stored_id, stored_hash, username, now, expires_at), _ = worker.storage.add_activation_code.call_args
    assert (stored_id, username) == (code_id, USER)
    assert activation_codes.matches(secret_part, stored_hash)
    assert secret_part not in stored_hash
    assert expires_at - now == timedelta(days=7)       # OTP_ACTIVATION_TTL_SECONDS default
    assert result["username"] == USER and result["expires_at"].endswith("Z")


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
    worker.storage.unlock.return_value = {"_id": USER, "failures": 6, "hard_locked": True, "locked_until": None}

    assert worker.unlock(USER) == {"username": USER, "was_locked": True}

    worker.storage.unlock.assert_called_once_with(USER)
    unlocked = only_event(worker, "AccountUnlocked")
    assert_envelope(events.AccountUnlocked, unlocked)
    assert (unlocked["username"], unlocked["by"]) == (USER, "admin")


def test_unlock_of_a_running_temporary_lock_emits_account_unlocked(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.unlock.return_value = {"_id": USER, "failures": 4, "hard_locked": False,
                                          "locked_until": utcnow() + timedelta(seconds=30)}

    assert worker.unlock(USER)["was_locked"] is True
    assert [name for name, _ in dispatched(worker)] == ["AccountUnlocked"]


@pytest.mark.parametrize("previous", [
    None,                                                                   # nothing stored
    {"_id": USER, "failures": 2},                                           # failures, no lock
    {"_id": USER, "failures": 4, "hard_locked": False, "locked_until": None},
    {"_id": USER, "failures": 4, "hard_locked": False,
     "locked_until": datetime(2000, 1, 1, tzinfo=timezone.utc)},          # a lock that has ended
])
def test_unlock_without_a_lock_emits_nothing(make_otp_worker, previous):
    worker = make_otp_worker()
    worker.storage.unlock.return_value = previous

    assert worker.unlock(USER) == {"username": USER, "was_locked": False}
    worker.storage.unlock.assert_called_once_with(USER)
    worker.dispatch.assert_not_called()


def test_unlock_validates_the_username(make_otp_worker):
    worker = make_otp_worker()
    with pytest.raises(ValidationFailed):
        worker.unlock({"$ne": None})
    assert worker.storage.method_calls == []


def test_revoke_device_dispatches_device_revoked(make_otp_worker):
    worker = make_otp_worker()
    now = utcnow()
    worker.storage.revoke_authenticator.return_value = {"_id": "dev_1", "username": USER, "status": "active"}
    worker.storage.find_authenticator.return_value = {
        "_id": "dev_1", "username": USER, "platform": "poll", "device_name": "Test phone", "status": "revoked",
        "created_at": now, "last_used_at": None, "revoked_at": now}

    view = worker.revoke_device("dev_1")

    assert (view["device_id"], view["status"]) == ("dev_1", "revoked")
    revoked = only_event(worker, "DeviceRevoked")
    assert_envelope(events.DeviceRevoked, revoked)
    assert (revoked["device_id"], revoked["username"], revoked["reason"]) == ("dev_1", USER, "admin")


def test_revoke_unknown_device_is_not_found(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.revoke_authenticator.return_value = None

    with pytest.raises(NotFound):
        worker.revoke_device("dev_nope")
    worker.dispatch.assert_not_called()


def test_revoke_with_an_unknown_reason_is_refused_before_revoking(make_otp_worker):
    # BUG (reported): `reason` is not validated at the RPC boundary. The device is revoked
    # in storage first, then building DeviceRevoked raises marshmallow's ValidationError,
    # so push never hears of the revocation and the caller gets an unexpected error.
    worker = make_otp_worker()
    worker.storage.revoke_authenticator.return_value = {"_id": "dev_1", "username": USER}

    with pytest.raises(ValidationFailed):
        worker.revoke_device("dev_1", reason="stolen")
    worker.storage.revoke_authenticator.assert_not_called()


def test_list_devices_never_returns_a_secret(make_otp_worker):
    worker = make_otp_worker()
    now = utcnow()
    worker.storage.devices_of.return_value = [{
        "_id": "dev_1", "username": USER, "platform": "poll", "device_name": "Test phone", "status": "active",
        "created_at": now, "last_used_at": None, "revoked_at": None,
        "secret": b"encrypted", "last_step": 123}]

    devices = worker.list_devices(USER)

    assert len(devices) == 1
    assert devices[0]["device_id"] == "dev_1"
    assert "secret" not in devices[0] and "last_step" not in devices[0]
    worker.storage.devices_of.assert_called_once_with(USER)


def test_ping_reports_an_unreachable_database(make_otp_worker):
    worker = make_otp_worker()
    worker.storage.ping.return_value = False
    with pytest.raises(Unavailable):
        worker.ping()
    worker.storage.ping.return_value = True
    assert worker.ping() == {"service": "otp"}

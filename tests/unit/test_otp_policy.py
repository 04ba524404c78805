"""The otp service's pure policies: the lockout of code login and activation codes."""
import base64
import hashlib
import os
import re
from datetime import datetime, timedelta, timezone

import pytest

from shared.config import ConfigError, load_settings
from shared.errors import Locked
from services.otp import activation_codes
from services.otp.config import OtpSettings
from services.otp.lockout import HARD_LOCKED, LockoutPolicy, LockState
from tests.unit.conftest import otp_settings

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
USER = "W123456"


def policy(free=3, base=30, cap=3600, hard=10):
    return LockoutPolicy(free_failures=free, base_seconds=base, max_seconds=cap, hard_failures=hard)


def after(failures, at=NOW):
    """The lock state after `failures` consecutive failures, the last one at `at`."""
    return LockState(USER, "epoch", failures, at if failures else None)


def production_settings(**overrides):
    """OtpSettings as a deployment that sets only the required key gets them: every
    lockout setting is services/otp/config.py's default (the test environment's
    shortened lockout is not read)."""
    key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    return load_settings(OtpSettings, environ={"OTP_ENCRYPTION_KEYS": key, **overrides})


# -- lockout -------------------------------------------------------------------------

@pytest.mark.parametrize("failures", [0, 1, 2, 3])
def test_free_failures_do_not_lock(failures):
    lockout = policy(free=3)
    state = after(failures)

    assert lockout.wait_after(failures) == 0
    assert not lockout.hard(failures)
    assert not lockout.locked(state, NOW)              # not even at the moment of the failure
    assert lockout.refusal(state, NOW) is None


def test_no_failure_at_all_has_no_lock_end():
    assert policy().locked_until(LockState(USER, "0", 0)) is None


def test_each_failure_after_the_free_ones_doubles_the_wait():
    lockout = policy(free=3, base=30, cap=10**6, hard=20)
    waits = [lockout.wait_after(failures) for failures in range(4, 10)]
    assert waits == [30 * 2 ** k for k in range(6)]
    # The wait runs from the last failure.
    assert lockout.locked_until(after(5)) == NOW + timedelta(seconds=60)


def test_the_wait_is_capped_at_the_maximum():
    lockout = policy(free=3, base=30, cap=100, hard=20)
    assert [lockout.wait_after(failures) for failures in (4, 5, 6, 7, 19)] == [30, 60, 100, 100, 100]


def test_no_free_failures_locks_from_the_first():
    lockout = policy(free=0, base=5, cap=60, hard=3)
    assert lockout.wait_after(1) == 5
    assert lockout.locked(after(1), NOW + timedelta(seconds=4))


def test_hard_lock_at_exactly_hard_failures_and_beyond():
    lockout = policy(free=3, base=30, cap=100, hard=10)
    years_later = NOW + timedelta(days=3650)
    assert [lockout.hard(failures) for failures in (9, 10, 11)] == [False, True, True]
    # A temporary lock ends by itself; a hard one does not.
    assert not lockout.locked(after(9), years_later)
    assert lockout.locked(after(10), years_later)
    assert lockout.locked(after(11), years_later)


def test_the_largest_allowed_hard_lock_does_not_overflow():
    # hard_failures may be 100: base * 2^94 must be capped, not crash timedelta.
    lockout = policy(free=0, base=86400, cap=7 * 86400, hard=100)
    assert lockout.wait_after(99) == 7 * 86400
    assert lockout.locked_until(after(99)) == NOW + timedelta(days=7)
    assert lockout.wait_after(10**6) == 7 * 86400      # a count past the hard lock (a burst)
    refusal = lockout.refusal(after(99), NOW)
    assert refusal.retry_after == 7 * 86400


def test_refusal_of_a_temporary_lock_says_how_long_to_wait():
    lockout = policy(free=3, base=30, cap=100, hard=10)
    refusal = lockout.refusal(after(4), NOW + timedelta(seconds=10))

    assert isinstance(refusal, Locked)
    assert refusal.retry_after == 20
    assert "20 seconds" in refusal.message


def test_refusal_rounds_the_wait_up():
    # Retry-After in whole seconds: rounding down would invite a retry that is refused,
    # and 0 would mean "now" while the lock still runs.
    lockout = policy(free=3, base=30, cap=100, hard=10)
    assert lockout.refusal(after(4), NOW + timedelta(seconds=10.2)).retry_after == 20
    assert lockout.refusal(after(4), NOW + timedelta(seconds=29.9)).retry_after == 1


def test_no_refusal_once_the_wait_is_over():
    lockout = policy(free=3, base=30, cap=100, hard=10)
    until = lockout.locked_until(after(5))
    assert lockout.refusal(after(5), until - timedelta(seconds=1)) is not None
    assert lockout.refusal(after(5), until) is None
    assert lockout.refusal(after(5), until + timedelta(hours=1)) is None
    assert not lockout.locked(after(5), until)


def test_refusal_of_a_hard_lock_says_an_administrator_ends_it():
    lockout = policy(free=3, base=30, cap=100, hard=10)
    refusal = lockout.refusal(after(10), NOW + timedelta(days=3650))

    assert isinstance(refusal, Locked)
    assert refusal.message == HARD_LOCKED and "administrator" in HARD_LOCKED
    assert refusal.retry_after is None                 # no Retry-After: it does not end by itself


@pytest.mark.parametrize("free, hard", [(3, 10), (0, 4), (5, 100)])
def test_a_lock_starts_only_at_the_first_temporary_lock_and_at_the_hard_lock(free, hard):
    # What the user is told about (AccountLocked): not every failure that extends a lock.
    lockout = policy(free=free, hard=hard)
    assert [failures for failures in range(hard + 5) if lockout.starts_a_lock(failures)] == [free + 1, hard]


def test_the_policy_is_built_from_the_settings_it_names():
    # Four distinct values, so a setting read into the wrong field shows.
    lockout = LockoutPolicy.from_settings(otp_settings(
        OTP_FREE_FAILURES=2, OTP_LOCK_BASE_SECONDS=7, OTP_LOCK_MAX_SECONDS=50, OTP_HARD_LOCK_FAILURES=9))
    assert lockout == LockoutPolicy(free_failures=2, base_seconds=7, max_seconds=50, hard_failures=9)


def test_the_test_environment_policy():
    # tests/conftest.py: 3 free failures, 1 s doubling capped at 4 s, hard lock at 6;
    # the other otp tests rely on this schedule.
    lockout = LockoutPolicy.from_settings(otp_settings())
    assert [lockout.wait_after(failures) for failures in range(1, 6)] == [0, 0, 0, 1, 2]
    assert [failures for failures in range(1, 10) if lockout.hard(failures)] == [6, 7, 8, 9]


def test_the_production_defaults_are_the_documented_lockout():
    # README / architecture.md §5: 5 free failures, then 30 s, 60 s, 120 s ... capped at 15
    # minutes, and a hard lock at 100 consecutive failures (NIST 800-63B's ceiling).
    lockout = LockoutPolicy.from_settings(production_settings())
    waits = [lockout.wait_after(failures) for failures in range(1, 100)]

    assert waits[:5] == [0] * 5
    assert waits[5:9] == [30, 60, 120, 240]
    assert max(waits) == 15 * 60 and waits[-1] == 15 * 60
    assert all(later >= earlier for earlier, later in zip(waits, waits[1:]))
    assert (lockout.hard(99), lockout.hard(100)) == (False, True)
    assert [failures for failures in range(1, 101) if lockout.starts_a_lock(failures)] == [6, 100]


@pytest.mark.parametrize("setting, beyond_its_ceiling", [
    ("OTP_LOCK_MAX_SECONDS", 15 * 60 + 1),             # a lock is never longer than 15 minutes
    ("OTP_LOCK_BASE_SECONDS", 15 * 60 + 1),
    ("OTP_HARD_LOCK_FAILURES", 101),                   # never more than 100 guesses
])
def test_the_lockout_settings_cannot_exceed_the_documented_ceilings(setting, beyond_its_ceiling):
    with pytest.raises(ConfigError, match=setting):
        production_settings(**{setting: str(beyond_its_ceiling)})


def test_free_failures_must_be_below_the_hard_lock():
    with pytest.raises(ConfigError, match="OTP_FREE_FAILURES"):
        production_settings(OTP_FREE_FAILURES="10", OTP_HARD_LOCK_FAILURES="10")


# -- activation codes ----------------------------------------------------------------

CODE_SHAPE = re.compile(r"^[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}(-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}){3}$")


def test_alphabet_leaves_out_misreadable_characters():
    assert len(set(activation_codes.ALPHABET)) == len(activation_codes.ALPHABET) == 31
    for misread in "01OIL":
        assert misread not in activation_codes.ALPHABET


def test_new_code_has_the_documented_format_and_its_id_is_the_first_group():
    for _ in range(50):
        code_id, code = activation_codes.new_code()
        assert CODE_SHAPE.match(code), code
        assert code.split("-")[0] == code_id


def test_new_codes_are_unique():
    assert len({activation_codes.new_code()[1] for _ in range(500)}) == 500


def test_parse_splits_id_and_secret_part():
    assert activation_codes.parse("K7Q2-9XMB-4TNR-HW3C") == ("K7Q2", "9XMB4TNRHW3C")


@pytest.mark.parametrize("typed", [
    "k7q2-9xmb-4tnr-hw3c",
    "K7Q2 9XMB 4TNR HW3C",
    "K7Q29XMB4TNRHW3C",
    " k7q2--9xmb - 4tnr hw3c ",
])
def test_parse_tolerates_case_spaces_and_dashes(typed):
    assert activation_codes.parse(typed) == ("K7Q2", "9XMB4TNRHW3C")


def test_parse_round_trips_new_codes():
    code_id, code = activation_codes.new_code()
    parsed = activation_codes.parse(code)
    assert parsed[0] == code_id
    assert "-".join([parsed[0]] + [parsed[1][i:i + 4] for i in range(0, 12, 4)]) == code


@pytest.mark.parametrize("typed", [
    "",
    "K7Q2-9XMB-4TNR",                 # too short
    "K7Q2-9XMB-4TNR-HW3C-A",          # too long
    "K7Q2-9XMB-4TNR-HW3O",            # O is not in the alphabet
    "K7Q2-9XMB-4TNR-HW30",            # nor is 0
    "K7Q2-9XMB-4TNR-HW3!",
    "K7Q2_9XMB_4TNR_HW3C",            # underscores are not separators
    "K7Q2-9XMB-4TNR-HW3C" + " " * 60,  # over 64 characters, even if only spaces
])
def test_parse_refuses_what_cannot_be_a_code(typed):
    assert activation_codes.parse(typed) is None


@pytest.mark.parametrize("value", [None, 1234, b"K7Q2-9XMB-4TNR-HW3C", ["K7Q2-9XMB-4TNR-HW3C"], {"$ne": None}])
def test_parse_refuses_non_strings(value):
    assert activation_codes.parse(value) is None


def test_secret_hash_is_sha256_of_the_secret_part_only():
    assert activation_codes.secret_hash("9XMB4TNRHW3C") == hashlib.sha256(b"9XMB4TNRHW3C").hexdigest()


def test_matches_the_right_secret_part_only():
    stored = activation_codes.secret_hash("9XMB4TNRHW3C")
    assert activation_codes.matches("9XMB4TNRHW3C", stored)
    assert not activation_codes.matches("9XMB4TNRHW3D", stored)
    assert not activation_codes.matches("", stored)


def test_a_typed_variant_matches_the_hash_of_the_issued_code():
    # The hash is stored at creation from the canonical code; what a person types later
    # goes through parse() first and must match it.
    code_id, code = activation_codes.new_code()
    stored = activation_codes.secret_hash(activation_codes.parse(code)[1])
    typed_id, typed_secret = activation_codes.parse(code.lower().replace("-", " "))
    assert typed_id == code_id
    assert activation_codes.matches(typed_secret, stored)

"""The otp service's pure policies: lockout delays and activation codes."""
import hashlib
import re
from datetime import datetime, timedelta, timezone

import pytest

from services.otp import activation_codes
from services.otp.lockout import lock_after

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def policy(free=3, base=30, cap=3600, hard=10):
    return {"free_failures": free, "lock_base_seconds": base, "lock_max_seconds": cap,
            "hard_lock_failures": hard}


# -- lockout -------------------------------------------------------------------------

@pytest.mark.parametrize("failures", [0, 1, 2, 3])
def test_free_failures_do_not_lock(failures):
    assert lock_after(failures, policy(free=3), NOW) == (None, False)


def test_each_failure_after_the_free_ones_doubles_the_delay():
    delays = [lock_after(failures, policy(free=3, base=30, cap=10**6, hard=10), NOW)
              for failures in range(4, 10)]
    assert delays == [(NOW + timedelta(seconds=30 * 2 ** k), False) for k in range(6)]


def test_delay_is_capped_at_the_maximum():
    settings = policy(free=3, base=30, cap=100, hard=10)
    assert lock_after(4, settings, NOW) == (NOW + timedelta(seconds=30), False)
    assert lock_after(5, settings, NOW) == (NOW + timedelta(seconds=60), False)
    assert lock_after(6, settings, NOW) == (NOW + timedelta(seconds=100), False)   # 120 capped
    assert lock_after(9, settings, NOW) == (NOW + timedelta(seconds=100), False)


def test_hard_lock_at_exactly_hard_lock_failures_and_beyond():
    settings = policy(free=3, hard=10)
    assert lock_after(9, settings, NOW)[1] is False
    assert lock_after(10, settings, NOW) == (None, True)
    assert lock_after(11, settings, NOW) == (None, True)


def test_the_test_environment_policy():
    # tests/conftest.py: free 3, 1 s base, 4 s cap, hard lock at 6.
    settings = policy(free=3, base=1, cap=4, hard=6)
    outcomes = [lock_after(failures, settings, NOW) for failures in range(1, 8)]
    assert outcomes == [
        (None, False), (None, False), (None, False),
        (NOW + timedelta(seconds=1), False),
        (NOW + timedelta(seconds=2), False),
        (None, True), (None, True),
    ]


def test_no_free_failures_locks_from_the_first():
    assert lock_after(1, policy(free=0, base=5, cap=60, hard=3), NOW) == (NOW + timedelta(seconds=5), False)


def test_the_largest_allowed_policy_does_not_overflow():
    # hard_lock_failures may be 100: 2^95 * base must be capped, not crash timedelta.
    until, hard = lock_after(99, policy(free=0, base=86400, cap=7 * 86400, hard=100), NOW)
    assert (until, hard) == (NOW + timedelta(days=7), False)


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

"""services/otp/totp.py: 10-digit TOTP (RFC 6238), step matching, secrets, SecretBox."""
import base64
from datetime import datetime, timedelta, timezone

import pytest

from services.otp import totp

# RFC 6238 Appendix B: the SHA1 seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()

# RFC 6238 Appendix B, SHA1 column: unix time -> 8-digit TOTP.
RFC_6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


def at(unix_seconds):
    return datetime.fromtimestamp(unix_seconds, timezone.utc)


# -- TOTP parameters and test vectors ------------------------------------------------

def test_rfc_secret_is_the_rfc_seed():
    assert RFC_SECRET == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


def test_parameters_are_those_of_design_section_5():
    generator = totp.generator(RFC_SECRET)
    assert (generator.digits, generator.interval) == (10, 30)
    assert (totp.DIGITS, totp.PERIOD, totp.ALGORITHM, totp.WINDOW) == (10, 30, "SHA1", 1)


@pytest.mark.parametrize("unix_time, eight_digits", RFC_6238_SHA1)
def test_ten_digit_code_ends_with_the_rfc_8_digit_vector(unix_time, eight_digits):
    # Both are the same truncated integer, mod 10^10 and mod 10^8.
    code = totp.generator(RFC_SECRET).at(unix_time)
    assert len(code) == 10 and code.isdigit()
    assert code[-8:] == eight_digits


def test_ten_digit_code_is_the_full_truncated_value_zero_padded():
    # RFC 4226 Appendix D gives the truncated decimals of the same seed: counter 0 ->
    # 1284755224, counter 1 (T=59) -> 1094287082, counter 3 -> 1726969429, counter 8 ->
    # 673399871 (9 digits: a 10-digit code keeps its leading zero).
    generator = totp.generator(RFC_SECRET)
    assert generator.at(0) == "1284755224"
    assert generator.at(59) == "1094287082"
    assert generator.at(3 * 30) == "1726969429"
    assert generator.at(8 * 30) == "0673399871"


# -- matching_step: the window and single-use steps -----------------------------------

NOW = at(1234567890)           # step 41152263
STEP = 1234567890 // 30


def code_of_step(step, secret=RFC_SECRET):
    return totp.generator(secret).generate_otp(step)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_matching_step_accepts_one_step_either_side_and_says_which(offset):
    assert totp.matching_step(RFC_SECRET, code_of_step(STEP + offset), NOW) == STEP + offset


@pytest.mark.parametrize("offset", [-2, 2, -10, 10])
def test_matching_step_refuses_codes_outside_the_window(offset):
    assert totp.matching_step(RFC_SECRET, code_of_step(STEP + offset), NOW) is None


def test_matching_step_refuses_a_wrong_code():
    window = {code_of_step(STEP + offset) for offset in (-1, 0, 1)}
    wrong = next(candidate for candidate in ("0000000000", "1234567890", "9999999999") if candidate not in window)
    assert totp.matching_step(RFC_SECRET, wrong, NOW) is None


def test_matching_step_refuses_the_8_digit_form_of_a_valid_code():
    # The RFC's 8-digit code is a suffix of ours; it must not be accepted as a prefix match.
    assert totp.matching_step(RFC_SECRET, "89005924", NOW) is None
    assert totp.matching_step(RFC_SECRET, code_of_step(STEP)[:9], NOW) is None


def test_matching_step_refuses_a_code_of_another_secret():
    other = base64.b32encode(b"abcdefghijabcdefghij").decode()
    assert code_of_step(STEP, other) != code_of_step(STEP)
    assert totp.matching_step(RFC_SECRET, code_of_step(STEP, other), NOW) is None
    assert totp.matching_step(other, code_of_step(STEP, other), NOW) == STEP


def test_matching_step_uses_the_step_boundaries():
    # The last second of a step and the first of the next one give adjacent steps.
    last_second = at(STEP * 30 + 29)
    first_second_of_next = at((STEP + 1) * 30)
    code = code_of_step(STEP + 2)
    assert totp.matching_step(RFC_SECRET, code, last_second) is None
    assert totp.matching_step(RFC_SECRET, code, first_second_of_next) == STEP + 2


def test_matching_step_is_independent_of_the_time_zone_of_now():
    # The same instant expressed in UTC+2 must give the same step.
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert totp.matching_step(RFC_SECRET, code_of_step(STEP), plus_two) == STEP


# -- secrets -----------------------------------------------------------------------

def test_new_secret_is_160_bits_of_base32():
    secret = totp.new_secret()
    assert len(secret) == 32
    assert len(base64.b32decode(secret)) == 20


def test_new_secrets_are_unique():
    assert len({totp.new_secret() for _ in range(200)}) == 200


def test_provisioning_uri_describes_the_parameters_without_leaking_elsewhere():
    uri = totp.provisioning_uri(RFC_SECRET, "W123", "MyCepa")
    assert uri.startswith("otpauth://totp/MyCepa:W123?")
    assert f"secret={RFC_SECRET}" in uri
    assert "digits=10" in uri
    assert "issuer=MyCepa" in uri
    # SHA1 and 30 s are the defaults of the otpauth format; any other value would be named.
    assert "period=" not in uri or "period=30" in uri
    assert "algorithm=" not in uri or "algorithm=SHA1" in uri


# -- SecretBox: AES-256-GCM with a key ring --------------------------------------------

def test_box_round_trip():
    box = totp.SecretBox([totp.generate_key()])
    secret = totp.new_secret()
    blob = box.encrypt(secret, "dev_1")
    assert secret.encode() not in blob
    assert box.decrypt(blob, "dev_1") == secret


def test_box_decrypts_what_mongo_hands_back():
    # pymongo returns binary fields as bytes (or bson.Binary, a bytes subclass).
    box = totp.SecretBox([totp.generate_key()])
    blob = box.encrypt("SECRET", "dev_1")
    assert box.decrypt(bytearray(blob), "dev_1") == "SECRET"


def test_box_uses_a_fresh_nonce_every_time():
    box = totp.SecretBox([totp.generate_key()])
    blobs = {box.encrypt("SAME", "dev_1") for _ in range(20)}
    assert len(blobs) == 20
    # key id (4) | nonce (12) | ciphertext + tag (16)
    assert {len(blob) for blob in blobs} == {4 + 12 + len("SAME") + 16}


def test_box_binds_the_record_id():
    box = totp.SecretBox([totp.generate_key()])
    blob = box.encrypt("SECRET", "dev_1")
    # One error type for every unreadable secret, so the service handles them in one place.
    with pytest.raises(ValueError, match="corrupt or belongs to another record"):
        box.decrypt(blob, "dev_2")


def test_box_detects_tampering():
    box = totp.SecretBox([totp.generate_key()])
    blob = bytearray(box.encrypt("SECRET", "dev_1"))
    blob[-1] ^= 1
    with pytest.raises(ValueError, match="corrupt or belongs to another record"):
        box.decrypt(bytes(blob), "dev_1")


def test_key_rotation_new_key_encrypts_old_key_still_decrypts():
    old, new = totp.generate_key(), totp.generate_key()
    old_box = totp.SecretBox([old])
    rotated = totp.SecretBox([new, old])
    old_blob = old_box.encrypt("OLD-SECRET", "dev_1")

    assert rotated.decrypt(old_blob, "dev_1") == "OLD-SECRET"
    new_blob = rotated.encrypt("NEW-SECRET", "dev_1")
    assert new_blob[:4] != old_blob[:4]                # a different key id...
    assert totp.SecretBox([new]).decrypt(new_blob, "dev_1") == "NEW-SECRET"   # ...of the new key
    with pytest.raises(ValueError, match="not configured"):
        old_box.decrypt(new_blob, "dev_1")


def test_unknown_key_id_is_a_value_error():
    blob = totp.SecretBox([totp.generate_key()]).encrypt("SECRET", "dev_1")
    with pytest.raises(ValueError, match="not configured"):
        totp.SecretBox([totp.generate_key()]).decrypt(blob, "dev_1")


@pytest.mark.parametrize("keys", [
    [],
    [""],
    ["short"],
    [base64.urlsafe_b64encode(b"x" * 16).decode()],        # AES-128, not 256
    [base64.urlsafe_b64encode(b"x" * 33).decode()],
    ["é" * 43],                                             # not ASCII
])
def test_bad_keys_are_a_value_error(keys):
    with pytest.raises(ValueError):
        totp.SecretBox(keys)


def test_one_bad_key_in_the_ring_is_refused():
    with pytest.raises(ValueError):
        totp.SecretBox([totp.generate_key(), "not-a-key"])


def test_generate_key_gives_unpadded_urlsafe_32_bytes():
    key = totp.generate_key()
    assert "=" not in key and "+" not in key and "/" not in key
    assert len(base64.urlsafe_b64decode(key + "=")) == 32
    assert totp.generate_key() != key


def test_padded_key_is_accepted_too():
    key = base64.urlsafe_b64encode(bytes(range(32))).decode()   # with its '=' padding
    box = totp.SecretBox([key])
    assert box.decrypt(box.encrypt("S", "r"), "r") == "S"

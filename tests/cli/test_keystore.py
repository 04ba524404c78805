"""The app's keystore and argument parsing on their own: no stack, no network."""
import json
import stat

import pytest

from clients import keystore
from clients.app import group_digits, parse_activation

SECRETS = {"private_key": "-----BEGIN PRIVATE KEY-----\nMIGH...\n-----END PRIVATE KEY-----\n",
           "otp_secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"}


@pytest.fixture
def path(tmp_path, monkeypatch):
    monkeypatch.setenv("MYCEPA_APP_PIN_DELAY_BASE", "1")
    record = keystore.new_record("default", "http://127.0.0.1:8000", "dev_1", "W1234567", "phone", "poll",
                                 {"digits": 10, "period": 30, "algorithm": "SHA1"})
    target = tmp_path / "home" / "default.json"
    keystore.create(target, record, SECRETS, "8642")
    return target


def test_sealed_file_and_modes(path):
    text = path.read_text()
    assert SECRETS["otp_secret"] not in text and "BEGIN" not in text
    assert "8642" not in json.dumps({key: value for key, value in json.loads(text).items() if key != "sealed"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    record, secrets = keystore.unlock(path, "8642")
    assert secrets == SECRETS and record["username"] == "W1234567"
    # Two files sealed under the same PIN share neither salt nor nonce.
    keystore.create(path, record, SECRETS, "8642", overwrite=True)
    assert json.loads(path.read_text())["sealed"]["nonce"] != json.loads(text)["sealed"]["nonce"]
    with pytest.raises(keystore.KeystoreError):
        keystore.create(path, record, SECRETS, "8642")


def test_the_clear_fields_are_bound_to_the_pin(path):
    record = json.loads(path.read_text())
    record["username"] = "W7654321"
    path.write_text(json.dumps(record))
    with pytest.raises(keystore.WrongPin):
        keystore.unlock(path, "8642")


def test_wrong_pins_count_then_wait_and_success_resets(path):
    now = 1_000_000.0
    for failures in (1, 2):
        with pytest.raises(keystore.WrongPin) as wrong:
            keystore.unlock(path, "0000", now=now)
        assert wrong.value.failures == failures and wrong.value.delay == 0
    with pytest.raises(keystore.WrongPin) as wrong:
        keystore.unlock(path, "0000", now=now)
    assert wrong.value.delay == 1 and "wait 1.0 s" in str(wrong.value)
    with pytest.raises(keystore.PinDelay):
        keystore.unlock(path, "8642", now=now + 0.5)  # even the right PIN waits
    with pytest.raises(keystore.WrongPin) as wrong:
        keystore.unlock(path, "0000", now=now + 1.5)
    assert wrong.value.delay == 2
    with pytest.raises(keystore.BadPin):  # not a PIN: not counted
        keystore.unlock(path, "12ab", now=now + 10)
    assert json.loads(path.read_text())["pin"]["failures"] == 4
    keystore.unlock(path, "8642", now=now + 10)
    assert json.loads(path.read_text())["pin"] == {"failures": 0, "retry_after": None}


def test_the_wait_is_capped_even_when_the_clock_goes_back(path):
    record = json.loads(path.read_text())
    record["pin"] = {"failures": 30, "retry_after": 10_000_000.0}
    path.write_text(json.dumps(record))
    with pytest.raises(keystore.PinDelay) as waiting:
        keystore.unlock(path, "8642", now=1_000.0)
    assert waiting.value.remaining == keystore.MAX_DELAY_SECONDS
    keystore.unlock(path, "8642", now=1_000.0 + keystore.MAX_DELAY_SECONDS + 1)
    assert keystore.delay_after(40) == keystore.MAX_DELAY_SECONDS


def test_pin_rules_and_profile_names(tmp_path):
    for bad in ("123", "1234567890123", "12a4", "", None):
        with pytest.raises(keystore.BadPin):
            keystore.check_pin(bad)
    for bad in ("", "../x", "a/b", "x" * 65):
        with pytest.raises(keystore.KeystoreError):
            keystore.profile_path(bad, tmp_path)
    assert keystore.profile_path("work-2", tmp_path) == tmp_path / "work-2.json"


def test_activation_uri_and_code():
    uri = "mycepa://activate?code=K7Q2-9XMB-4TNR-HW3C&server=https%3A%2F%2Fmycepa.example%2F"
    assert parse_activation(uri, None) == ("K7Q2-9XMB-4TNR-HW3C", "https://mycepa.example")
    assert parse_activation(uri, "http://127.0.0.1:8000") == ("K7Q2-9XMB-4TNR-HW3C", "http://127.0.0.1:8000")
    assert parse_activation(" K7Q2-9XMB-4TNR-HW3C ", "http://h:1/") == ("K7Q2-9XMB-4TNR-HW3C", "http://h:1")
    assert group_digits("0123456789") == "01234 56789"

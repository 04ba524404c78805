"""shared/: configuration, event contracts, errors over RPC, log redaction, device keys."""
import base64
import json
import logging
import os
import uuid
import weakref
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from marshmallow import ValidationError
from nameko.exceptions import RemoteError, deserialize, serialize

from shared import device_keys, errors, events
from shared.config import Boolean, CommaList, ConfigError, MongoSettings, Settings, load_settings, settings_of
from shared.fields import OtpCode, Username
from shared.logging import RedactSecrets, redact
from services.gateway import schemas as http_schemas
from services.gateway.config import GatewaySettings
from services.otp import schemas as otp_schemas
from services.push import schemas as push_schemas
from services.otp.config import OtpSettings
from services.otp.totp import generate_key

ADMIN_TOKEN = "a" * 32


# -- shared/config.py ------------------------------------------------------------------

def test_defaults_apply_when_the_environment_is_silent():
    settings = load_settings(MongoSettings, environ={})
    assert settings == {"mongo_url": "mongodb://127.0.0.1:27017/", "mongo_db_prefix": "mycepa_",
                        "mongo_timeout_seconds": 5.0}


def test_values_come_from_the_given_mapping_not_os_environ():
    first = load_settings(MongoSettings, environ={"MONGO_DB_PREFIX": "one_"})
    second = load_settings(MongoSettings, environ={"MONGO_DB_PREFIX": "two_"})
    # An explicit mapping is never cached: each call reads its own.
    assert (first["mongo_db_prefix"], second["mongo_db_prefix"]) == ("one_", "two_")


def test_a_container_reads_its_settings_once_and_each_container_for_itself(monkeypatch):
    class Container:
        pass

    first, second = Container(), Container()
    monkeypatch.setenv("MONGO_DB_PREFIX", "one_")
    # Extensions hold a weak proxy of their container (nameko's bind), as here.
    settings = settings_of(weakref.proxy(first), MongoSettings)
    monkeypatch.setenv("MONGO_DB_PREFIX", "two_")
    assert settings_of(weakref.proxy(first), MongoSettings) is settings
    assert settings["mongo_db_prefix"] == "one_"
    assert settings_of(weakref.proxy(second), MongoSettings)["mongo_db_prefix"] == "two_"


def test_settings_are_read_only():
    settings = load_settings(MongoSettings, environ={})
    with pytest.raises(TypeError):
        settings["mongo_url"] = "mongodb://elsewhere/"


def test_unrelated_environment_variables_are_ignored():
    settings = load_settings(MongoSettings, environ={"PATH": "/bin", "HOME": "/root", "mongo_url": "junk"})
    assert settings["mongo_url"] == "mongodb://127.0.0.1:27017/"


def test_missing_required_setting_names_the_variable():
    with pytest.raises(ConfigError) as error:
        load_settings(GatewaySettings, environ={})
    assert "MYCEPA_ADMIN_TOKEN" in str(error.value)
    assert "GatewaySettings" in str(error.value)


def test_malformed_setting_names_the_variable():
    with pytest.raises(ConfigError) as error:
        load_settings(MongoSettings, environ={"MONGO_URL": "http://127.0.0.1:27017/"})
    assert "MONGO_URL" in str(error.value)
    assert "MONGO_DB_PREFIX" not in str(error.value)


def test_every_problem_is_named_in_one_message():
    with pytest.raises(ConfigError) as error:
        load_settings(GatewaySettings, environ={"MYCEPA_ENV": "staging", "RPC_TIMEOUT_SECONDS": "9"})
    message = str(error.value)
    for variable in ("MYCEPA_ADMIN_TOKEN", "MYCEPA_ENV", "RPC_TIMEOUT_SECONDS"):
        assert variable in message


def test_numbers_are_parsed_and_range_checked():
    settings = load_settings(GatewaySettings, environ={"MYCEPA_ADMIN_TOKEN": ADMIN_TOKEN,
                                                       "RPC_TIMEOUT_SECONDS": "2.5"})
    assert settings["rpc_timeout_seconds"] == 2.5
    assert settings["environment"] == "prod"          # secure cookies unless told otherwise
    with pytest.raises(ConfigError, match="RPC_TIMEOUT_SECONDS"):
        load_settings(GatewaySettings, environ={"MYCEPA_ADMIN_TOKEN": ADMIN_TOKEN, "RPC_TIMEOUT_SECONDS": "ten"})


def test_comma_list_and_boolean_fields():
    class Example(Settings):
        items = CommaList(data_key="ITEMS", required=True)
        flag = Boolean(data_key="FLAG", load_default=False)

    assert load_settings(Example, environ={"ITEMS": " a, ,b ,", "FLAG": "yes"}) == {"items": ["a", "b"], "flag": True}
    assert load_settings(Example, environ={"ITEMS": "a", "FLAG": "off"})["flag"] is False
    with pytest.raises(ConfigError, match="FLAG"):
        load_settings(Example, environ={"ITEMS": "a", "FLAG": "maybe"})


def otp_environ(**overrides):
    return {"OTP_ENCRYPTION_KEYS": generate_key(), **overrides}


def test_otp_settings_defaults():
    settings = load_settings(OtpSettings, environ=otp_environ())
    # architecture.md §5: a few free failures, waits capped at 15 minutes, a hard lock only at 100.
    assert (settings["free_failures"], settings["hard_lock_failures"], settings["activation_max_tries"]) == (5, 100, 5)
    assert (settings["lock_base_seconds"], settings["lock_max_seconds"]) == (30, 900)
    assert settings["issuer"] == "MyCepa"


def test_otp_settings_take_a_key_ring():
    new, old = generate_key(), generate_key()
    settings = load_settings(OtpSettings, environ=otp_environ(OTP_ENCRYPTION_KEYS=f"{new}, {old}"))
    assert settings["encryption_keys"] == [new, old]


@pytest.mark.parametrize("keys", [
    "",
    "not-a-key",
    base64.urlsafe_b64encode(os.urandom(16)).decode(),             # 128 bits only
    generate_key() + ",short",                                      # one bad key in the ring
])
def test_otp_settings_refuse_bad_encryption_keys(keys):
    with pytest.raises(ConfigError) as error:
        load_settings(OtpSettings, environ=otp_environ(OTP_ENCRYPTION_KEYS=keys))
    assert "OTP_ENCRYPTION_KEYS" in str(error.value)


def test_otp_settings_require_encryption_keys():
    with pytest.raises(ConfigError, match="OTP_ENCRYPTION_KEYS"):
        load_settings(OtpSettings, environ={})


def test_config_error_does_not_echo_a_key():
    # Almost a key (31 bytes): the message must say what is wrong without printing it.
    almost = base64.urlsafe_b64encode(os.urandom(31)).decode()
    with pytest.raises(ConfigError) as error:
        load_settings(OtpSettings, environ=otp_environ(OTP_ENCRYPTION_KEYS=almost))
    assert almost not in str(error.value)


def test_hard_lock_is_capped_at_100_failures():
    # architecture.md §5: at most 100 consecutive failures before a hard lock.
    assert load_settings(OtpSettings, environ=otp_environ(OTP_HARD_LOCK_FAILURES="100"))["hard_lock_failures"] == 100
    with pytest.raises(ConfigError, match="OTP_HARD_LOCK_FAILURES"):
        load_settings(OtpSettings, environ=otp_environ(OTP_HARD_LOCK_FAILURES="101"))
    with pytest.raises(ConfigError, match="OTP_HARD_LOCK_FAILURES"):
        load_settings(OtpSettings, environ=otp_environ(OTP_HARD_LOCK_FAILURES="0"))


def test_free_failures_must_be_below_the_hard_lock():
    with pytest.raises(ConfigError, match="OTP_FREE_FAILURES"):
        load_settings(OtpSettings, environ=otp_environ(OTP_FREE_FAILURES="6", OTP_HARD_LOCK_FAILURES="6"))


# -- shared/fields.py ------------------------------------------------------------------

@pytest.mark.parametrize("value", ["W123", "a", "w.1_2-3", "A" * 64])
def test_username_accepts_werkboeknummers(value):
    assert Username().deserialize(value) == value


@pytest.mark.parametrize("value", ["", "-W1", "W 1", "W1$", "A" * 65, "W1\x00"])
def test_username_refuses_other_strings(value):
    with pytest.raises(ValidationError):
        Username().deserialize(value)


@pytest.mark.parametrize("value", ["W123\n", "1234567890\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_username_or_code(value):
    # BUG (reported): the patterns end with `$`, which also matches before a final "\n",
    # so "W123\n" passes as a werkboeknummer and "1234567890\n" as "exactly 10 digits".
    field = Username() if value.startswith("W") else OtpCode()
    with pytest.raises(ValidationError):
        field.deserialize(value)


# A device's HTTP body (the gateway's schema) and the RPC arguments it becomes (the
# service's schema), for every field they share: both must accept and refuse alike.
_PROBES = ["", "x", "12", "1", "12\n", "approve", "deny", "ios", "poll", "nope", *("x" * n for n in (
    64, 65, 256, 257, 512, 513, 1024, 1025, 4096, 4097)), 0, -1, 2 ** 40, 2 ** 40 + 1, 1.5, True, None, b"x"]


@pytest.mark.parametrize("http_schema, rpc_schema", [
    (http_schemas.SignedPoll, push_schemas.PollArgs),
    (http_schemas.PushTokenUpdate, push_schemas.TokenArgs),
    (http_schemas.ChallengeAnswer, push_schemas.ResponseArgs),
    (http_schemas.ActivateRequest, otp_schemas.ActivateArgs),
])
def test_the_gateway_and_the_service_it_calls_check_a_device_field_alike(http_schema, rpc_schema):
    def accepts(field, value):
        try:
            field.deserialize(value)
            return True
        except ValidationError:
            return False

    http_fields, rpc_fields = http_schema().fields, rpc_schema().fields
    shared_names = set(http_fields) & set(rpc_fields)
    assert shared_names
    for name in shared_names:
        assert ([accepts(http_fields[name], value) for value in _PROBES]
                == [accepts(rpc_fields[name], value) for value in _PROBES]), name


# -- shared/events.py --------------------------------------------------------------------

def test_build_event_fills_the_envelope():
    before = datetime.now(timezone.utc)
    payload = events.build_event(events.OtpVerified, username="W1", device_id="dev_1")
    assert uuid.UUID(payload["event_id"]).version == 4
    occurred = datetime.fromisoformat(payload["occurred_at"])
    assert occurred.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= occurred <= datetime.now(timezone.utc)
    assert payload["version"] == 1
    assert (payload["username"], payload["device_id"]) == ("W1", "dev_1")
    json.dumps(payload)    # JSON-ready, as nameko's serializer needs


def test_every_event_gets_its_own_id():
    ids = {events.build_event(events.OtpVerified, username="W1", device_id="d")["event_id"] for _ in range(20)}
    assert len(ids) == 20


def test_build_event_turns_datetimes_into_iso_strings():
    until = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
    payload = events.build_event(events.AccountLocked, username="W1", consecutive_failures=4, hard=False, until=until)
    assert datetime.fromisoformat(payload["until"]) == until


@pytest.mark.parametrize("event_cls, payload", [
    (events.OtpVerified, {"username": "W1"}),                                          # missing device_id
    (events.OtpRejected, {"username": "W1", "reason": "bored", "consecutive_failures": 1}),
    (events.OtpVerified, {"username": "", "device_id": "d"}),
    (events.DeviceActivated, {"device_id": "d", "username": "W1", "platform": "symbian", "public_key": "k",
                              "device_name": "n"}),
])
def test_build_event_refuses_a_payload_that_breaks_the_schema(event_cls, payload):
    with pytest.raises(ValidationError):
        events.build_event(event_cls, **payload)


def test_parse_event_drops_unknown_fields():
    payload = events.build_event(events.DeviceRevoked, device_id="d", username="W1", reason="admin",
                                 active_devices_left=0)
    parsed = events.parse_event(events.DeviceRevoked, {**payload, "added_in_v2": True})
    assert "added_in_v2" not in parsed
    assert parsed["device_id"] == "d" and parsed["version"] == 1
    assert isinstance(parsed["event_id"], uuid.UUID)


def test_parse_event_drops_unknown_fields_inside_nested_objects():
    # BUG (reported): the nested BrowserContext schema keeps marshmallow's default
    # unknown=RAISE, so a newer producer adding a context field breaks older consumers,
    # contrary to the module's promise.
    payload = events.build_event(
        events.LoginRequested, request_id="r1", username="W1", number="42",
        context={"ip": "127.0.0.1", "user_agent": "test", "requested_at": datetime.now(timezone.utc)},
        expires_at=datetime.now(timezone.utc) + timedelta(minutes=2))
    payload["context"]["added_in_v2"] = "x"
    parsed = events.parse_event(events.LoginRequested, payload)
    assert "added_in_v2" not in parsed["context"]


def test_parse_event_refuses_a_malformed_payload():
    with pytest.raises(ValidationError):
        events.parse_event(events.DeviceRevoked, {"device_id": "d", "username": "W1", "reason": "admin"})  # no envelope


def test_every_event_has_a_unique_name_and_a_known_source():
    names = [event.name for event in events.ALL_EVENTS]
    assert len(names) == len(set(names)) == 18
    # Every event the module defines is listed: one left out of ALL_EVENTS would be
    # missing from EVENT_TYPES, the audit trail's figures and `__all__`.
    defined = {value for value in vars(events).values()
               if isinstance(value, type) and issubclass(value, events.Event) and value is not events.Event}
    assert defined == set(events.ALL_EVENTS)
    for event in events.ALL_EVENTS:
        # Importable under the name it is sent under: `LoginExpired = _event("LoginExpird",
        # ...)` would send a type no `events.LoginExpired` handler is bound to.
        assert getattr(events, event.name, None) is event, event.name
        assert event.service in (events.OTP, events.PUSH, events.GATEWAY)


def test_events_carry_no_secret_fields():
    forbidden = {"secret", "code", "otp", "password", "nonce", "token_hash", "signature", "activation_code"}
    for event in events.ALL_EVENTS:
        assert not forbidden & set(event().fields), event.name


def test_dispatch_event_sends_the_built_payload_under_the_event_name():
    sent = []
    payload = events.dispatch_event(lambda name, body: sent.append((name, body)), events.AccountUnlocked,
                                    username="W1", by="admin")
    assert sent == [("AccountUnlocked", payload)]
    assert payload["by"] == "admin"


def test_handles_binds_the_events_own_source_and_name():
    def handler(self, payload):
        pass

    events.handles(events.DeviceActivated, requeue_on_error=True)(handler)
    (entrypoint,) = handler.nameko_entrypoints
    assert (entrypoint.source_service, entrypoint.event_type) == ("otp", "DeviceActivated")
    assert entrypoint.requeue_on_error is True


# -- shared/errors.py ----------------------------------------------------------------

ERROR_CLASSES = [value for value in vars(errors).values()
                 if isinstance(value, type) and issubclass(value, errors.MycepaError) and value is not errors.MycepaError]


def over_rpc(exc):
    """What the caller gets back: nameko's serialize, JSON on the wire, deserialize."""
    return deserialize(json.loads(json.dumps(serialize(exc))))


def test_the_error_table_of_design_section_4():
    table = {cls.__name__: (cls.status, cls.code) for cls in ERROR_CLASSES}
    assert table == {
        "ValidationFailed": (400, "validation_error"), "InvalidCredentials": (401, "invalid_credentials"),
        "Unauthenticated": (401, "unauthenticated"), "Forbidden": (403, "forbidden"),
        "NotFound": (404, "not_found"), "Conflict": (409, "conflict"), "Expired": (410, "expired"),
        "Locked": (423, "locked"), "TooManyRequests": (429, "too_many_requests"),
        "Unavailable": (503, "unavailable"),
    }


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("kwargs", [
    {},
    {"fields": {"username": ["must be a werkboeknummer"], "nested": {"0": ["bad"]}}},
    {"retry_after": 30},
    {"fields": {"code": ["must be exactly 10 digits"]}, "retry_after": 7},
])
def test_errors_survive_the_rpc_round_trip(cls, kwargs):
    original = cls("Something went wrong", **kwargs)
    received = over_rpc(original)
    assert type(received) is cls
    assert received.message == "Something went wrong"
    assert received.fields == original.fields == kwargs.get("fields", {})
    assert received.retry_after == original.retry_after == kwargs.get("retry_after")
    assert received.to_dict() == original.to_dict()
    assert str(received) == "Something went wrong"


def test_an_unregistered_error_arrives_as_remote_error():
    assert isinstance(over_rpc(errors.MycepaError("base")), RemoteError)


@pytest.mark.parametrize("retry_after", [None, 0, -5, "None", "soon", True])
def test_retry_after_is_none_unless_a_positive_number_of_seconds(retry_after):
    assert errors.Locked("x", retry_after=retry_after).retry_after is None


def test_retry_after_accepts_the_stringified_form():
    assert errors.Locked("x", retry_after="30").retry_after == 30


def test_to_dict_is_the_public_error_shape():
    error = errors.ValidationFailed("Invalid request", fields={"username": ["required"]})
    assert error.to_dict() == {"error": "validation_error", "message": "Invalid request",
                               "fields": {"username": ["required"]}}
    assert errors.NotFound("gone", fields="not a dict").fields == {}


# -- shared/logging.py -------------------------------------------------------------------

def test_redact_masks_a_ten_digit_code():
    cleaned = redact("verify W123 with 0123456789 failed")
    assert "0123456789" not in cleaned and "[redacted]" in cleaned
    assert cleaned.startswith("verify W123 with ")


def test_redact_masks_an_activation_code_in_a_url_path():
    line = '127.0.0.1 - - "GET /api/admin/activations/K7Q2-9XMB-4TNR-HW3C/qr.svg HTTP/1.1" 200'
    cleaned = redact(line)
    assert "K7Q2" not in cleaned and "HW3C" not in cleaned
    assert "/api/admin/activations/[redacted]/qr.svg" in cleaned


@pytest.mark.parametrize("text, secret", [
    ('{"username": "W1", "password": "0123456789"}', "0123456789"),
    ('{"password": "hunter2"}', "hunter2"),
    ("password=hunter2", "hunter2"),
    ('{"activation_code": "K7Q2-9XMB-4TNR-HW3C"}', "9XMB"),
    ("mycepa://activate?code=K7Q2-9XMB-4TNR-HW3C&server=x", "9XMB"),
    ("otpauth://totp/MyCepa:W1?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=10", "GEZDGNBV"),
    ("Signature: MEUCIQDabc", "MEUCIQDabc"),
])
def test_redact_masks_secrets_by_name(text, secret):
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_redact_keeps_ordinary_text():
    text = "otp verify for W123 took 12 ms"
    assert redact(text) == text


def test_log_filter_redacts_the_formatted_message():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "code %s for %s", ("0123456789", "W1"), None)
    assert RedactSecrets().filter(record) is True          # a filter that redacts, not drops
    assert record.getMessage() == "code [redacted] for W1"


def test_log_filter_leaves_clean_records_alone():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("W1",), None)
    RedactSecrets().filter(record)
    assert (record.msg, record.args) == ("hello %s", ("W1",))


# -- shared/device_keys.py -------------------------------------------------------------

def pem_of(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(private_key, message):
    return base64.b64encode(private_key.sign(message, ec.ECDSA(hashes.SHA256()))).decode()


@pytest.fixture
def device_key():
    return ec.generate_private_key(ec.SECP256R1())


def test_signed_message_joins_the_fields():
    assert device_keys.signed_message("mycepa-poll-v1", "dev_1", 1700000000) == b"mycepa-poll-v1|dev_1|1700000000"


def test_a_real_signature_verifies(device_key):
    message = device_keys.signed_message("mycepa-push-v1", "ch_1", "nonce", "approve", "42")
    assert device_keys.verify_signature(pem_of(device_key), message, sign(device_key, message)) is True


def test_a_tampered_message_does_not_verify(device_key):
    signature = sign(device_key, device_keys.signed_message("mycepa-push-v1", "ch_1", "n", "deny", "42"))
    tampered = device_keys.signed_message("mycepa-push-v1", "ch_1", "n", "approve", "42")
    assert device_keys.verify_signature(pem_of(device_key), tampered, signature) is False


@pytest.mark.parametrize("signature", ["!!!not base64!!!", "", base64.b64encode(b"not DER").decode(), None, 42])
def test_garbage_signatures_do_not_verify(device_key, signature):
    assert device_keys.verify_signature(pem_of(device_key), b"message", signature) is False


def test_a_signature_in_urlsafe_base64_does_not_verify(device_key):
    # architecture.md §4: standard base64. Find a signature whose encodings differ, then send urlsafe.
    message = b"message"
    while True:
        raw = device_key.sign(message, ec.ECDSA(hashes.SHA256()))
        if base64.b64encode(raw) != base64.urlsafe_b64encode(raw):
            break
    assert device_keys.verify_signature(pem_of(device_key), message, base64.b64encode(raw).decode()) is True
    assert device_keys.verify_signature(pem_of(device_key), message, base64.urlsafe_b64encode(raw).decode()) is False


def test_another_keys_signature_does_not_verify(device_key):
    message = b"message"
    other = ec.generate_private_key(ec.SECP256R1())
    assert device_keys.verify_signature(pem_of(device_key), message, sign(other, message)) is False


def test_an_invalid_pem_does_not_verify(device_key):
    message = b"message"
    assert device_keys.verify_signature("not a pem", message, sign(device_key, message)) is False


def test_load_public_key_accepts_p256(device_key):
    key = device_keys.load_public_key(pem_of(device_key))
    assert isinstance(key.curve, ec.SECP256R1)


def test_load_public_key_refuses_rsa():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ValueError, match="EC P-256"):
        device_keys.load_public_key(pem_of(rsa_key))


def test_load_public_key_refuses_p384():
    with pytest.raises(ValueError, match="EC P-256"):
        device_keys.load_public_key(pem_of(ec.generate_private_key(ec.SECP384R1())))


@pytest.mark.parametrize("pem", ["", "not a pem", None, 42, "é",
                                 "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_load_public_key_refuses_what_is_not_a_pem_key(pem):
    with pytest.raises(ValueError, match="PEM"):
        device_keys.load_public_key(pem)


def test_load_public_key_refuses_a_private_key(device_key):
    private_pem = device_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()).decode()
    with pytest.raises(ValueError):
        device_keys.load_public_key(private_pem)

"""Login challenges: what a device is asked, and what it must sign to answer.

The browser shows one two-digit number; the device shows three distinct ones and the
user picks the same (or, with PUSH_NUMBER_ENTRY=type, no choices: the user types it). The device proves it holds its key by signing architecture.md §4's strings.
"""
import base64
import binascii
import hashlib
import re
import secrets

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from shared.device_keys import signed_message, verify_signature

# The order of P-256: (r, s) and (r, n - s) are both valid signatures of one message.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_random = secrets.SystemRandom()

POLL_PREFIX = "mycepa-poll-v1"
RESPONSE_PREFIX = "mycepa-push-v1"
TOKEN_PREFIX = "mycepa-token-v1"


_ID_SHAPE = re.compile(r"(?P<prefix>lr|ch)_(?P<number>[0-9]{1,9})_[0-9a-f]{32}")

PENDING, APPROVED, DENIED, EXPIRED = "pending", "approved", "denied", "expired"


def ids_for(number):
    """(request id, challenge id) of a user's `number`-th push request: the browser holds
    the first, the devices see the second; each names the request's number (with the
    username the gateway or the device proves, that is where it is stored) and a random
    part that must match."""
    return f"lr_{number}_{secrets.token_hex(16)}", f"ch_{number}_{secrets.token_hex(16)}"


def number_in(an_id, prefix):
    """The request number an id of `ids_for` carries, or None for any other text (ASCII
    only: str.isdigit takes other scripts' digits, and compare_digest refuses them)."""
    shape = _ID_SHAPE.fullmatch(an_id)
    return int(shape["number"]) if shape is not None and shape["prefix"] == prefix else None


def outcome_of(request, answer, now):
    """The one place a push login's state is decided: its answer, or expired once its
    time is up, else pending. The expiry clock, the browser and the devices all ask this."""
    if answer is not None:
        return answer["outcome"]
    return EXPIRED if request["expires_at"] <= now else PENDING


def number_choices(number):
    """Three distinct two-digit numbers, `number` among them, in random order."""
    choices = {number}
    while len(choices) < 3:
        choices.add(f"{_random.randint(10, 99)}")
    shuffled = list(choices)
    _random.shuffle(shuffled)
    return shuffled


def new_nonce():
    return secrets.token_urlsafe(24)


def poll_signature_valid(public_key, device_id, timestamp, signature):
    return verify_signature(public_key, signed_message(POLL_PREFIX, device_id, timestamp), signature)


def response_signature_valid(public_key, challenge_id, nonce, decision, number, signature):
    message = signed_message(RESPONSE_PREFIX, challenge_id, nonce, decision, number)
    return verify_signature(public_key, message, signature)


def token_signature_valid(public_key, device_id, timestamp, push_token, signature):
    return verify_signature(public_key, signed_message(TOKEN_PREFIX, device_id, timestamp, push_token), signature)


def signature_id(signature_b64):
    """What identifies a signature, whatever its encoding: a replay cannot pass as new by
    flipping `s` to `n - s` (ECDSA malleability) or by re-encoding the base64. Call it on
    a signature that verified."""
    try:
        r, s = decode_dss_signature(base64.b64decode(signature_b64, validate=True))
    except (ValueError, binascii.Error):
        return hashlib.sha256(signature_b64.encode()).hexdigest()[:32]
    return hashlib.sha256(f"{r}:{min(s, _P256_ORDER - s)}".encode()).hexdigest()[:32]

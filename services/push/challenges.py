"""Login challenges: what a device is asked, and what it must sign to answer.

The browser shows one two-digit number; the device shows three distinct ones and the
user picks the same (or, with PUSH_NUMBER_ENTRY=type, no choices: the user types it). The device proves it holds its key by signing architecture.md §4's strings.
"""
import base64
import binascii
import hashlib
import secrets

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from shared.device_keys import signed_message, verify_signature

# The order of P-256: (r, s) and (r, n - s) are both valid signatures of one message.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_random = secrets.SystemRandom()

POLL_PREFIX = "mycepa-poll-v1"
RESPONSE_PREFIX = "mycepa-push-v1"
TOKEN_PREFIX = "mycepa-token-v1"


def challenge_id_for(request_id):
    """The challenge of a login request: derived, so a redelivered request finds it."""
    return "ch_" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


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


def response_signature_valid(public_key, challenge, decision, number, signature):
    message = signed_message(RESPONSE_PREFIX, challenge["_id"], challenge["nonce"], decision, number)
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

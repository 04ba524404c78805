"""TOTP (the device secrets behind the 10-digit codes): generation, code matching, and
encryption at rest.

(Named totp, not secrets: a module named like the standard library's `secrets` shadows
it for its neighbours.)

TOTP per RFC 6238 with pyotp: 10 digits, 30-second steps, HMAC-SHA1 (what authenticator
apps implement), a window of one step either side. `matching_step` returns the step a
code belongs to, which is what makes codes single-use: the caller advances the
authenticator's last accepted step atomically and refuses a step it has seen.
"""
import base64
import binascii
import hashlib
import hmac
import os

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DIGITS = 10
PERIOD = 30
ALGORITHM = "SHA1"
WINDOW = 1
SECRET_BASE32_LENGTH = 32  # 32 base32 characters = 160 bits, RFC 4226's recommendation


def new_secret():
    return pyotp.random_base32(length=SECRET_BASE32_LENGTH)


def generator(secret):
    """The TOTP generator of `secret` with this service's parameters."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)


# How far back a released code's step may lie: its window (±1) plus the time a release
# may take to arrive (a minute); older steps' codes are no longer accepted anyway.
RELEASE_LOOKBACK_STEPS = WINDOW + 2


def time_step(now):
    return int(now.timestamp()) // PERIOD


def matching_step(secret, code, now):
    """The time step in now±WINDOW whose code equals `code`, else None (constant-time compare)."""
    totp = generator(secret)
    current = totp.timecode(now)
    matched = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        # Compare every candidate, not stopping at a match, so timing says nothing.
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step
    return matched


def provisioning_uri(secret, username, issuer):
    return generator(secret).provisioning_uri(name=username, issuer_name=issuer)


class SecretBox:
    """AES-256-GCM with a key ring: the first key encrypts, every key decrypts.

    The record id is bound in as associated data, so a ciphertext copied onto another
    authenticator does not decrypt. Stored form: key id (4 bytes) | nonce (12) | ciphertext.
    """

    def __init__(self, encoded_keys):
        if not encoded_keys:
            raise ValueError("at least one encryption key is required")
        self._keys = {}
        for encoded in encoded_keys:
            key = _decode_key(encoded)
            self._keys[hashlib.sha256(key).digest()[:4]] = AESGCM(key)
        self._primary_id = hashlib.sha256(_decode_key(encoded_keys[0])).digest()[:4]

    @classmethod
    def from_settings(cls, settings):
        return cls(settings["encryption_keys"])

    def encrypt(self, plaintext, record_id):
        nonce = os.urandom(12)
        sealed = self._keys[self._primary_id].encrypt(nonce, plaintext.encode(), record_id.encode())
        return self._primary_id + nonce + sealed

    def decrypt(self, blob, record_id):
        blob = bytes(blob)
        key = self._keys.get(blob[:4])
        if key is None:
            raise ValueError("secret was encrypted with a key that is not configured")
        try:
            return key.decrypt(blob[4:16], blob[16:], record_id.encode()).decode()
        except InvalidTag:
            raise ValueError("secret is corrupt or belongs to another record") from None


def _decode_key(encoded):
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError("each OTP_ENCRYPTION_KEYS entry must be urlsafe base64 of 32 random bytes")
    return key


def generate_key():
    """A fresh key for OTP_ENCRYPTION_KEYS."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")

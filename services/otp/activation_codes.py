"""Activation codes: what an admin hands a worker to activate the OTP app once.

A code reads like `K7Q2-9XMB-4TNR-HW3C`: the first group locates the record, the other
three (60 random bits) are the secret part, stored only as a SHA-256 hash. Because the
record is found without the secret, wrong tries can be counted per code and the code
locked after a few. The alphabet leaves out 0/O and 1/I/L, which people misread.
"""
import hashlib
import hmac
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
GROUP = 4
ID_GROUPS, SECRET_GROUPS = 1, 3


def new_code():
    """(code_id, full_code) for a fresh activation code."""
    groups = ["".join(secrets.choice(ALPHABET) for _ in range(GROUP)) for _ in range(ID_GROUPS + SECRET_GROUPS)]
    return groups[0], "-".join(groups)


def parse(text):
    """(code_id, secret_part) from what a person typed, or None if it cannot be a code."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    compact = "".join(ch for ch in text.upper() if ch not in "- ")
    if len(compact) != GROUP * (ID_GROUPS + SECRET_GROUPS) or any(ch not in ALPHABET for ch in compact):
        return None
    return compact[:GROUP], compact[GROUP:]


def secret_hash(secret_part):
    return hashlib.sha256(secret_part.encode()).hexdigest()


def matches(secret_part, stored_hash):
    return hmac.compare_digest(secret_hash(secret_part), stored_hash)

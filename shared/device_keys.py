"""The device key contract of architecture.md §4: EC P-256 public keys in PEM, ECDSA/SHA-256 signatures.

One place for parsing a device's public key and checking a device's signature, used by
every service that meets them.
"""
import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def load_public_key(pem):
    """The EC P-256 public key in `pem`, or ValueError saying why it is not one."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError, AttributeError):
        raise ValueError("public_key must be a PEM SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("public_key must be an EC P-256 key")
    return key


def signed_message(*parts):
    """The bytes a device signs: the fields joined by '|', UTF-8."""
    return "|".join(str(part) for part in parts).encode("utf-8")


def verify_signature(pem, message, signature_b64):
    """True when `signature_b64` (DER, standard base64) is the key's signature of `message`."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        load_public_key(pem).verify(signature, message, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return False

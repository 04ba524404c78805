"""A device as the OTP app is one: an EC P-256 key pair, an activation, 10-digit codes.

It speaks only the public device protocol of architecture.md §4, so tests, the demo and the
benchmark exercise the gateway exactly as a phone would.
"""
import base64
import json
import time
import urllib.request
from dataclasses import dataclass

import pyotp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.device_keys import signed_message


class GatewayError(Exception):
    def __init__(self, status, body):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


def call(base_url, method, path, body=None, headers=None, timeout=10):
    """(status, json body) of one JSON request; raises GatewayError for 4xx/5xx."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        raise GatewayError(error.code, payload) from None


@dataclass
class Device:
    base_url: str
    private_key: ec.EllipticCurvePrivateKey
    device_id: str = None
    username: str = None
    secret: str = None
    digits: int = 10
    period: int = 30

    @classmethod
    def new(cls, base_url):
        return cls(base_url, ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key_pem(self):
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def activate(self, activation_code, platform="poll", push_token=None, device_name="Test phone",
                 until_served=True):
        _, answer = call(self.base_url, "POST", "/api/devices/activate", {
            "activation_code": activation_code, "public_key": self.public_key_pem,
            "platform": platform, "push_token": push_token, "device_name": device_name})
        self.device_id, self.username = answer["device_id"], answer["username"]
        self.secret, self.digits, self.period = answer["otp"]["secret"], answer["otp"]["digits"], answer["otp"]["period"]
        if until_served:
            self.until_served()
        return answer

    def until_served(self, within=10.0):
        """Wait (at most `within` seconds) until the server can serve this device's signed
        requests: for a moment after an activation it may answer 503, while the push
        service hears of the device. Never raises: the activation is done, and its code
        is used up, whatever this first poll answers."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                poll(self)
                return
            except GatewayError as error:
                if error.status != 503:
                    return
            except OSError:
                return
            time.sleep(0.2)

    def code(self, at=None, step_offset=0):
        """The code the app shows now (or at unix time `at`), optionally a step later or earlier."""
        moment = (time.time() if at is None else at) + step_offset * self.period
        return pyotp.TOTP(self.secret, digits=self.digits, interval=self.period).at(moment)

    def sign(self, *parts):
        signature = self.private_key.sign(signed_message(*parts), ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()


def create_activation(base_url, admin_token, username):
    _, answer = call(base_url, "POST", "/api/admin/activations", {"username": username},
                     headers={"Authorization": f"Bearer {admin_token}"})
    return answer


def _poll_body(device, timestamp=None):
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"timestamp": timestamp, "signature": device.sign("mycepa-poll-v1", device.device_id, timestamp)}


def poll(device, timestamp=None):
    """{challenges, notices}: the login requests waiting for this device and the security
    notices it has not been shown (each is shown once), signed as architecture.md §4 says."""
    _, answer = call(device.base_url, "POST", f"/api/devices/{device.device_id}/challenges",
                     _poll_body(device, timestamp))
    return answer


def pending_challenges(device, timestamp=None):
    """The login requests waiting for this device (poll mode)."""
    return poll(device, timestamp)["challenges"]


def answer_challenge(device, challenge, decision, number, fraud=False, device_id=None):
    """Approve or deny `challenge` with the number the user picked."""
    signature = device.sign("mycepa-push-v1", challenge["challenge_id"], challenge["nonce"], decision, number)
    _, answer = call(device.base_url, "POST", f"/api/push/challenges/{challenge['challenge_id']}/response",
                     {"device_id": device_id or device.device_id, "decision": decision, "number": number,
                      "signature": signature, "fraud": fraud})
    return answer


def update_push_token(device, push_token, timestamp=None):
    """Tell the server the device's new push token, signed as architecture.md §4's other requests."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    _, answer = call(device.base_url, "POST", f"/api/devices/{device.device_id}/push-token", {
        "push_token": push_token, "timestamp": timestamp,
        "signature": device.sign("mycepa-token-v1", device.device_id, timestamp, push_token)})
    return answer

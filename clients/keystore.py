"""The local keystore of mycepa-app: one JSON file per profile, its secrets sealed by the PIN.

What the file holds in clear: the server, the device id, the username, the device name and
the OTP parameters (digits, period, algorithm), and the PIN failure counter. What it holds
sealed: the device's EC P-256 private key and its OTP secret, as AES-256-GCM under a key
derived from the PIN with scrypt (random salt, random nonce; the clear profile fields are
the additional authenticated data, so they cannot be changed without the PIN). The file is
written atomically with mode 0600 in a directory of mode 0700.

Wrong PINs: each one is counted in the file; from the third on, the next try must wait
2^(n-3) x the base delay (1 s unless MYCEPA_APP_PIN_DELAY_BASE says otherwise), at most
MAX_DELAY_SECONDS. The moment is stored, so starting the program again does not skip it;
the right PIN resets the count.

A PIN of 4-12 digits does not stand up to an offline attack on a copied file (scrypt makes
each guess cost about 0.2 s, so 10^4 PINs take well under an hour): the counter protects the
app as used, not a stolen file. A phone app keeps the key in the Secure Enclave / Android
Keystore instead.
"""
import base64
import contextlib
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock, the atomic replace still holds
    fcntl = None

FORMAT = "mycepa-app-keystore-v1"
PIN_PATTERN = re.compile(r"^[0-9]{4,12}\Z")
PROFILE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
FREE_PIN_FAILURES = 3
MAX_DELAY_SECONDS = 300.0
# scrypt cost: 64 MiB and about 0.2 s per unlock. Stored in each file, so it can be raised later.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 16, 8, 1
# The fields bound to the sealed secrets as AES-GCM associated data.
BOUND_FIELDS = ("format", "profile", "server", "device_id", "username")


class KeystoreError(Exception):
    """The keystore cannot be used; the message says why and what to do."""


class NoProfile(KeystoreError):
    pass


class BadPin(KeystoreError):
    """Not a PIN at all (4-12 digits); not counted as a wrong PIN."""


class WrongPin(KeystoreError):
    def __init__(self, failures, delay):
        self.failures, self.delay = failures, delay
        if delay:
            advice = f"{failures} wrong PINs in a row: wait {_seconds(delay)} before the next try."
        else:
            left = FREE_PIN_FAILURES - failures
            advice = f"{left} more {'try' if left == 1 else 'tries'} before each new try has to wait."
        super().__init__(f"Wrong PIN. {advice}")


class PinDelay(KeystoreError):
    def __init__(self, remaining):
        self.remaining = remaining
        super().__init__(f"Too many wrong PINs: try again in {_seconds(remaining)}.")


def _seconds(value):
    return f"{value:.1f} s" if value < 10 else f"{round(value)} s"


def app_home():
    """Where the profiles live: $MYCEPA_APP_HOME, else the user's config dir (~/.config/mycepa-app)."""
    home = os.environ.get("MYCEPA_APP_HOME")
    if home:
        return Path(home)
    import platformdirs
    return Path(platformdirs.user_config_dir("mycepa-app", appauthor=False))


def profile_path(profile, home=None):
    if not PROFILE_PATTERN.match(profile or ""):
        raise KeystoreError("A profile name is 1-64 letters, digits, '-' or '_'")
    return (home or app_home()) / f"{profile}.json"


def check_pin(pin):
    if not isinstance(pin, str) or not PIN_PATTERN.match(pin):
        raise BadPin("A PIN is 4 to 12 digits.")
    return pin


def delay_base():
    try:
        base = float(os.environ.get("MYCEPA_APP_PIN_DELAY_BASE", "1"))
    except ValueError:
        raise KeystoreError("MYCEPA_APP_PIN_DELAY_BASE must be a number of seconds") from None
    return max(base, 0.0)


def delay_after(failures):
    """How long the next try waits after `failures` wrong PINs in a row."""
    if failures < FREE_PIN_FAILURES:
        return 0.0
    return min(delay_base() * 2 ** (failures - FREE_PIN_FAILURES), MAX_DELAY_SECONDS)


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _derive(pin, kdf):
    return Scrypt(salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(
        pin.encode("utf-8"))


def _bound(record):
    return json.dumps({key: record.get(key) for key in BOUND_FIELDS}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def seal(record, secrets, pin):
    """`record` with `secrets` (a dict) sealed under `pin`."""
    check_pin(pin)
    kdf = {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(os.urandom(16))}
    nonce = os.urandom(12)
    plaintext = json.dumps(secrets).encode("utf-8")
    ciphertext = AESGCM(_derive(pin, kdf)).encrypt(nonce, plaintext, _bound(record))
    return {**record, "sealed": {"kdf": kdf, "cipher": "AES-256-GCM", "nonce": _b64(nonce),
                                 "ciphertext": _b64(ciphertext)},
            "pin": {"failures": 0, "retry_after": None}}


def _open_sealed(record, pin):
    sealed = record["sealed"]
    key = _derive(pin, sealed["kdf"])
    plaintext = AESGCM(key).decrypt(base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]),
                                    _bound(record))
    return json.loads(plaintext)


def new_record(profile, server, device_id, username, device_name, platform, otp):
    return {"format": FORMAT, "profile": profile, "server": server, "device_id": device_id,
            "username": username, "device_name": device_name, "platform": platform,
            "activated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "otp": {"digits": otp["digits"], "period": otp["period"], "algorithm": otp.get("algorithm", "SHA1")}}


def read(path):
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NoProfile(f"No activated profile at {path}: run 'mycepa-app activate' first.") from None
    except (OSError, ValueError) as error:
        raise KeystoreError(f"Cannot read the keystore {path}: {error}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or "sealed" not in record:
        raise KeystoreError(f"{path} is not a mycepa-app keystore")
    return record


def write(path, record):
    """Atomically replace `path` with `record`, mode 0600, its directory 0700."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def locked(path):
    """Other mycepa-app processes of this profile wait: no racing tries around the counter."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    descriptor = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def create(path, record, secrets, pin, overwrite=False):
    with locked(path):
        if Path(path).exists() and not overwrite:
            raise KeystoreError(f"{path} exists already")
        write(path, seal(record, secrets, pin))


def unlock(path, pin, now=None):
    """(record, secrets) of the profile at `path`, or WrongPin / PinDelay / BadPin / NoProfile."""
    with locked(path):
        record = read(path)
        now = time.time() if now is None else now
        state = record.get("pin") or {}
        failures = int(state.get("failures") or 0)
        retry_after = state.get("retry_after")
        if retry_after and retry_after > now:
            if retry_after > now + MAX_DELAY_SECONDS:  # the clock was set back: never wait longer than the cap
                record["pin"] = {"failures": failures, "retry_after": now + MAX_DELAY_SECONDS}
                write(path, record)
            raise PinDelay(min(retry_after - now, MAX_DELAY_SECONDS))
        check_pin(pin)
        try:
            secrets = _open_sealed(record, pin)
        except InvalidTag:
            failures += 1
            delay = delay_after(failures)
            record["pin"] = {"failures": failures, "retry_after": (now + delay) if delay else None}
            write(path, record)
            raise WrongPin(failures, delay) from None
        if failures or retry_after:
            record["pin"] = {"failures": 0, "retry_after": None}
            write(path, record)
        return record, secrets


def reseal(path, old_pin, new_pin):
    """Change the PIN: unlock with the old one (counted as any try), seal again under the new one."""
    check_pin(new_pin)
    record, secrets = unlock(path, old_pin)
    with locked(path):
        clear = {key: value for key, value in record.items() if key not in ("sealed", "pin")}
        write(path, seal(clear, secrets, new_pin))

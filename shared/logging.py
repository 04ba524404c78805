"""JSON logs, with a last line of defence against secrets reaching them.

`config/nameko.yaml` wires `JsonFormatter` and `RedactSecrets` into every service's
logging. Code never logs secrets on purpose; the filter catches what a library logs on
its own, such as the web server's access line for a URL that holds an activation code.
"""
import logging
import re

from pythonjsonlogger.json import JsonFormatter  # noqa: F401  (re-exported for the YAML config)

_SECRET_PATTERNS = (
    # activation codes in URLs: /api/admin/activations/<code>/qr.svg
    (re.compile(r"(/activations/)[^/\s?\"]+"), r"\1[redacted]"),
    # a run of 6-10 digits, the shape of an OTP code
    (re.compile(r"(?<!\d)\d{6,10}(?!\d)"), "[redacted]"),
    (re.compile(r"(?i)(\"?(?:password|secret|code|token|signature|nonce)\"?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,}]+)"),
     r"\1[redacted]"),
)


def redact(text):
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record):
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True

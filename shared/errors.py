"""The errors that cross service boundaries, and their public HTTP shape (architecture.md §4).

Each error is registered with nameko's `deserialize_to_instance`, so an error raised in
the otp service arrives in the gateway as the same class over RPC, and the gateway maps
it to HTTP in one place: `status` and `code` below.
"""
from nameko.exceptions import deserialize_to_instance


class MycepaError(Exception):
    status = 400
    code = "error"

    def __init__(self, message, fields=None, retry_after=None):
        # nameko rebuilds the instance as cls(*args) after RPC, having turned every arg
        # that is not a str, list or dict into its str(): None arrives as "None", 30 as "30".
        self.message = str(message)
        self.fields = fields if isinstance(fields, dict) else {}
        self.retry_after = int(retry_after) if str(retry_after).isdigit() and int(retry_after) > 0 else None
        super().__init__(self.message, self.fields, self.retry_after or 0)

    def __str__(self):
        return self.message

    def to_dict(self):
        return {"error": self.code, "message": self.message, "fields": self.fields}


def _error(name, status, code):
    cls = type(name, (MycepaError,), {"status": status, "code": code, "__module__": __name__})
    return deserialize_to_instance(cls)


ValidationFailed = _error("ValidationFailed", 400, "validation_error")
InvalidCredentials = _error("InvalidCredentials", 401, "invalid_credentials")
Unauthenticated = _error("Unauthenticated", 401, "unauthenticated")
Forbidden = _error("Forbidden", 403, "forbidden")
NotFound = _error("NotFound", 404, "not_found")
Conflict = _error("Conflict", 409, "conflict")
Expired = _error("Expired", 410, "expired")
Locked = _error("Locked", 423, "locked")
TooManyRequests = _error("TooManyRequests", 429, "too_many_requests")
Unavailable = _error("Unavailable", 503, "unavailable")

# Errors an RPC entrypoint may raise on purpose; nameko logs anything else as a crash.
EXPECTED_ERRORS = (MycepaError,)


def unavailable_from(error):
    """An Unavailable for an error that means a dependency (RabbitMQ, the database) is
    down or too slow, else None. One place decides what counts as "down", for every
    service: such a failure is a 503 for the caller, never a 500."""
    # Imported here: shared/errors.py is also imported by code that needs neither driver.
    from kombu.exceptions import OperationalError
    from nameko.exceptions import ContainerBeingKilled
    from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError
    import amqp.exceptions
    import eventlet

    if isinstance(error, Unavailable):
        return error
    if isinstance(error, (ConnectionFailure, ExecutionTimeout, WTimeoutError)) or (
            isinstance(error, PyMongoError) and getattr(error, "timeout", False)):
        return Unavailable("The database is unreachable or too slow; try again")
    if isinstance(error, (OperationalError, amqp.exceptions.ConnectionError, OSError, ContainerBeingKilled,
                          eventlet.Timeout)):
        return Unavailable("The message broker is unreachable; try again")
    return None

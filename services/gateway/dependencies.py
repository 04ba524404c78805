"""DependencyProviders of the gateway."""
import eventlet
import eventlet.event
import kombu
from kombu.exceptions import OperationalError
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.exceptions import UnknownService
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy

from shared.config import load_settings
from shared.deadline import set_deadline
from shared.errors import Unavailable
from services.gateway.config import GatewaySettings


class ServiceRpc(RpcProxy):
    """An RpcProxy whose calls give up after RPC_TIMEOUT_SECONDS with Unavailable (503).

    nameko 2's RpcProxy waits forever for a stopped service. Here the wait is bounded,
    and the request message carries the same expiration, so RabbitMQ drops a call nobody
    picked up in time; and the deadline travels in the call's headers (shared/deadline.py)
    so a service that was hung refuses the call instead of processing a stale login.
    """

    def setup(self):
        self.timeout = load_settings(GatewaySettings)["rpc_timeout_seconds"]
        self.options["expiration"] = self.timeout
        super().setup()

    def get_dependency(self, worker_ctx):
        return _BoundedProxy(super().get_dependency(worker_ctx), worker_ctx, self.target_service, self.timeout)


class _BoundedProxy:
    def __init__(self, proxy, worker_ctx, service_name, timeout):
        self._proxy = proxy
        self._worker_ctx = worker_ctx
        self._service_name = service_name
        self._timeout = timeout

    def __getattr__(self, method_name):
        method = getattr(self._proxy, method_name)

        def call(*args, **kwargs):
            set_deadline(self._worker_ctx, self._timeout)
            try:
                with eventlet.Timeout(self._timeout):
                    return method(*args, **kwargs)
            except eventlet.Timeout:
                raise Unavailable(f"The {self._service_name} service did not answer in time") from None
            except UnknownService:
                raise Unavailable(f"The {self._service_name} service is not running") from None
            except (OSError, OperationalError):
                raise Unavailable("The message broker is unreachable") from None

        return call


class BrokerCheck(DependencyProvider):
    """A callable telling whether RabbitMQ accepts a connection now (for /readyz)."""

    def get_dependency(self, worker_ctx):
        return self.reachable

    def reachable(self, timeout=2.0):
        try:
            with kombu.Connection(self.container.config[AMQP_URI_CONFIG_KEY], connect_timeout=timeout) as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)
            return True
        except Exception:
            return False


class LoginWaiters(DependencyProvider):
    """Browsers of this process waiting (long poll) for their push login's answer.

    Woken by the broadcast event handlers, which every gateway instance runs, so a
    browser learns the outcome at once whichever instance it is waiting on.
    """

    def setup(self):
        self.waiting = {}

    def get_dependency(self, worker_ctx):
        return self

    def wait(self, request_id, seconds):
        event = eventlet.event.Event()
        self.waiting.setdefault(request_id, set()).add(event)
        try:
            with eventlet.Timeout(seconds, False):
                event.wait()
        finally:
            waiters = self.waiting.get(request_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self.waiting[request_id]

    def wake(self, request_id):
        for event in self.waiting.pop(request_id, ()):
            event.send(True)

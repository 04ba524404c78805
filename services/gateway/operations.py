"""The gateway's operations room: health, readiness, metrics, the OpenAPI document, the purge."""

import eventlet
from nameko.timer import timer
from werkzeug.wrappers import Response

from shared.clock import utcnow
from services.gateway import metrics, schemas
from services.gateway.entrypoints import ROUTES, json_response, route
from services.gateway.openapi import build_spec


# How long /readyz and /metrics wait for the audit service's figures.
AUDIT_CHECK_SECONDS = 0.5


def _answers(ping):
    try:
        ping()
        return True
    except Exception:  # any failure means "not ready"; the reason is in that service's log
        return False


class Operations:
    """Routes and timers of operators (a part of GatewayService)."""

    # -- operations ------------------------------------------------------------------

    @route("GET", "/healthz", "The gateway process is up", "operations", responses={200: None})
    def healthz(self, request):
        return json_response({"status": "ok"})

    @route("GET", "/readyz", "RabbitMQ, the gateway's database, otp and push all answer", "operations",
           responses={200: schemas.Readiness, 503: schemas.Readiness})
    def readyz(self, request):
        checks = {"rabbitmq": self.broker_reachable, "database": self.storage.ping,
                  "otp": lambda: _answers(self.otp.ping), "push": lambda: _answers(self.push.ping),
                  "audit": self._audit_state}
        pool = eventlet.GreenPool(len(checks))
        results = dict(zip(checks, pool.imap(lambda check: check(), checks.values())))
        # Logins do not wait for the audit trail (its events queue up): it is detail, not
        # a condition of readiness.
        audit = results.pop("audit")
        down = [name for name, ok in results.items() if not ok]
        return json_response({"ready": not down, "checks": results, "down": down, "detail": {"audit": audit}},
                             503 if down else 200)

    def _audit_state(self):
        """{answering, backlog (events waiting in its queue), recorded (by type)}, within
        AUDIT_CHECK_SECONDS: a busy audit service must not slow readiness, which a
        restarting gateway is waited on by (measured: the full RPC bound, 4 s)."""
        try:
            with eventlet.Timeout(AUDIT_CHECK_SECONDS):
                return {"answering": True, **self.audit.stats()}
        except (Exception, eventlet.Timeout):   # not answering (in time); the reason is in its log
            return {"answering": False, "backlog": None, "recorded": {}}

    @route("GET", "/metrics", "Prometheus metrics", "operations", responses={200: None},
           content_type="text/plain")
    def metrics_page(self, request):
        metrics.observe_audit(self._audit_state())
        body, content_type = metrics.exposition()
        return Response(body, status=200, content_type=content_type)

    @route("GET", "/openapi.json", "This API's OpenAPI document", "operations", responses={200: None})
    def openapi(self, request):
        return json_response(build_spec(ROUTES, self.config["public_url"]))

    @timer(interval=300)
    def purge_expired(self):
        self.storage.purge_expired(utcnow(), self.config["source_failure_window_seconds"])


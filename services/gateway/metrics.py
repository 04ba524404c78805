"""Prometheus metrics of the gateway, registered once per process."""
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter("mycepa_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram("mycepa_http_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
LOGINS = Counter("mycepa_logins_total", "Login attempts by method and outcome", ["method", "outcome"])


# The audit service has no HTTP server of its own: its figures are read (over RPC) when
# the gateway is scraped. Gauges, as they are the trail's own counts, not this process's.
AUDIT_BACKLOG = Gauge("mycepa_audit_backlog_events", "Events waiting in the audit service's queue (its lag)")
AUDIT_RECORDED = Gauge("mycepa_audit_events_recorded", "Events in the audit trail, by type, since it began",
                       ["type"])
AUDIT_ANSWERING = Gauge("mycepa_audit_answering", "1 when the audit service answered the last scrape")


def observe_audit(state):
    AUDIT_ANSWERING.set(1 if state["answering"] else 0)
    if state.get("backlog") is not None:
        AUDIT_BACKLOG.set(state["backlog"])
    for event_type, count in state.get("recorded", {}).items():
        AUDIT_RECORDED.labels(event_type).set(count)


def observe_request(route, method, status, seconds):
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def exposition():
    return generate_latest(), CONTENT_TYPE_LATEST

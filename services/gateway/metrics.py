"""Prometheus metrics of the gateway, registered once per process."""
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

REQUESTS = Counter("mycepa_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram("mycepa_http_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
LOGINS = Counter("mycepa_logins_total", "Login attempts by method and outcome", ["method", "outcome"])


def observe_request(route, method, status, seconds):
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def exposition():
    return generate_latest(), CONTENT_TYPE_LATEST

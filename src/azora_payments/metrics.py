"""Prometheus metrics: HTTP requests by route and status, latencies, and the job queue."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "azora_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "azora_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# What the request cost us: its total less the time spent waiting on Stripe.
HTTP_OWN_TIME = Histogram(
    "azora_http_request_own_duration_seconds",
    "Time to answer an HTTP request, less the time spent waiting on Stripe",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STRIPE_REQUESTS = Counter(
    "azora_stripe_requests_total", "Calls made to Stripe", ["operation", "outcome"]
)
JOB_RUNS = Counter("azora_job_runs_total", "Jobs run", ["kind", "outcome"])
# Read from the database by whichever process is scraped: with several processes, any live one
# has the value ("livemax").
JOB_QUEUE_DEPTH = Gauge(
    "azora_job_queue_depth", "Jobs waiting to run", ["kind"], multiprocess_mode="livemax"
)
JOB_OLDEST_READY_AGE = Gauge(
    "azora_job_oldest_ready_age_seconds",
    "Age of the oldest job that is ready to run",
    multiprocess_mode="livemax",
)
JOB_DEAD = Gauge(
    "azora_jobs_dead", "Jobs that used up their attempts", ["kind"], multiprocess_mode="livemax"
)
WEBHOOK_EVENTS = Counter(
    "azora_webhook_events_total", "Stripe events received", ["type", "outcome"]
)
REDIS_BREAKER_OPEN = Gauge(
    "azora_redis_breaker_open",
    "1 while this process skips Redis after a failure",
    multiprocess_mode="livemax",
)
WEBHOOK_PARKED = Gauge(
    "azora_webhook_events_parked",
    "Stripe events that failed every attempt to apply them",
    multiprocess_mode="livemax",
)
WEBHOOK_OLDEST_UNAPPLIED_AGE = Gauge(
    "azora_webhook_oldest_unapplied_age_seconds",
    "Age of the oldest recorded Stripe event not applied yet",
    multiprocess_mode="livemax",
)

"""Process-wide Prometheus metrics (one service per process)."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "exchange_http_requests_total", "HTTP requests handled", ["service", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "exchange_http_request_seconds", "HTTP request latency", ["service", "method"]
)
MESSAGES_CONSUMED = Counter(
    "exchange_messages_consumed_total", "Messages whose effect was applied", ["consumer"]
)
MESSAGES_DUPLICATE = Counter(
    "exchange_messages_duplicate_total",
    "Redelivered messages recognised by the inbox",
    ["consumer"],
)
MESSAGES_FAILED = Counter(
    "exchange_messages_failed_total", "Message deliveries whose handler failed", ["consumer"]
)
MESSAGES_REJECTED = Counter(
    "exchange_messages_rejected_total",
    "Undecodable messages sent to the dead-letter queue",
    ["consumer"],
)
STREAM_GAPS = Gauge(
    "exchange_stream_gap_messages", "Messages missing below the highest sequence seen", ["consumer"]
)
OUTBOX_PUBLISHED = Counter(
    "exchange_outbox_published_total", "Outbox messages published and confirmed", ["schema"]
)
OUTBOX_PRUNED = Counter(
    "exchange_outbox_pruned_total", "Published outbox rows deleted after the retention", ["schema"]
)
INBOX_PRUNED = Counter(
    "exchange_inbox_pruned_total",
    "Inbox records deleted after the retention (their stream's position covers them)",
    ["schema"],
)
RELAY_ERRORS = Counter("exchange_outbox_relay_errors_total", "Failed relay batches", ["schema"])
READY = Gauge(
    "exchange_ready", "1 when the service's database and broker are reachable", ["service"]
)

"""The Prometheus text exposition of a node's counters (``GET /v1/metrics``)."""

from __future__ import annotations

from agentsync.sync import SyncMetrics

PREFIX = "agentsync_"


def exposition(
    metrics: SyncMetrics, *, auth_failures: int, peers: int, delta_buffer_bytes: int
) -> str:
    """The counters and gauges, each with its HELP and TYPE lines, in the text format."""
    rows = [
        ("sync_rounds_total", "counter", "Exchanges completed.", metrics.rounds),
        ("sync_bytes_sent_total", "counter", "Sync bytes sent.", metrics.bytes_sent),
        ("sync_bytes_received_total", "counter", "Sync bytes received.", metrics.bytes_received),
        ("sync_errors_total", "counter", "Refused or failed messages.", metrics.errors),
        (
            "full_state_fallbacks_total",
            "counter",
            "Snapshots sent to peers with no usable ack.",
            metrics.full_state_fallbacks,
        ),
        (
            "sync_forged_total",
            "counter",
            "Messages refused for claiming dots this replica never issued.",
            metrics.forged,
        ),
        (
            "sync_denied_total",
            "counter",
            "Received deltas dropped for names their sender may not write.",
            metrics.denied,
        ),
        (
            "auth_failures_total",
            "counter",
            "Requests refused with 401: unauthenticated, forged, replayed or stale.",
            auth_failures,
        ),
        ("peers", "gauge", "Known peers.", peers),
        ("delta_buffer_bytes", "gauge", "Bytes held by the delta buffer.", delta_buffer_bytes),
    ]
    lines: list[str] = []
    for name, kind, help_text, value in rows:
        lines += (
            f"# HELP {PREFIX}{name} {help_text}",
            f"# TYPE {PREFIX}{name} {kind}",
            f"{PREFIX}{name} {value}",
        )
    return "\n".join(lines) + "\n"

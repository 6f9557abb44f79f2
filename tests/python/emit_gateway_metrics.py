"""Sends seed 000's nine gateway metrics (and two GenAI metrics) through the
OpenTelemetry Python SDK's metrics pipeline over OTLP/HTTP protobuf, with
the SDK's default cumulative temporality, in two collection cycles.
Usage: emit_gateway_metrics.py ENDPOINT

Tally must turn the cumulative series into deltas: totals are what was
recorded, not twice the first cycle.
"""

import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

endpoint = sys.argv[1]
reader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"), export_interval_millis=3_600_000
)
provider = MeterProvider(
    metric_readers=[reader], resource=Resource.create({"service.name": "gateway"})
)
meter = provider.get_meter("gateway")

slot_duration = meter.create_histogram("concurrency_slot_duration_seconds", unit="s")
slot_release = meter.create_counter("concurrency_slot_release_total")
slots_in_use = meter.create_up_down_counter("concurrency_slots_in_use")
streaming_duration = meter.create_histogram("streaming_request_duration_seconds", unit="s")
request_total = meter.create_counter("request_total")
open_circuits = meter.create_gauge("health_open_circuits")
alias_total = meter.create_counter("model_alias_resolution_total")
alias_duration = meter.create_histogram("model_alias_resolution_duration_seconds", unit="s")
alias_conflicts = meter.create_counter("model_alias_conflict_total")
token_usage = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
op_duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")


def cycle(n):
    """Records one cycle's worth; n scales it so the cycles differ."""
    for i in range(10 * n):
        slot_duration.record(0.5 + i % 4, {"key_id": "k1", "exception": "false"})
        slot_release.add(1, {"key_id": "k1", "exception": "false"})
        request_total.add(1, {"type": "streaming" if i % 2 else "non-streaming", "status": "success"})
        streaming_duration.record(2.0 + i, {"key_id": "k1", "status": "success"})
        alias_total.add(1, {"method": "alias", "cache_hit": "true"})
        alias_duration.record(0.004, {"method": "alias"})
        token_usage.record(100 + i, {"gen_ai.token.type": "input", "gen_ai.request.model": "gpt-4o",
                                     "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"})
        op_duration.record(1.5, {"gen_ai.request.model": "gpt-4o", "gen_ai.operation.name": "chat",
                                 "gen_ai.provider.name": "openai"})
    request_total.add(n, {"type": "non-streaming", "status": "error"})
    alias_conflicts.add(1)
    slots_in_use.add(3 * n, {"key_id": "k1"})
    open_circuits.set(n)
    if not provider.force_flush(10_000):
        sys.exit("flush failed")


cycle(1)
cycle(2)
provider.shutdown()
print("ok")

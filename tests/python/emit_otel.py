"""Sends one agent run through the OpenTelemetry Python SDK, as an
instrumented app would: spans with GenAI attributes and a log record tied to
the LLM span. Usage: emit_otel.py http|grpc|json ENDPOINT SESSION

- http: the SDK's OTLP/HTTP protobuf exporters; ENDPOINT is the base URL.
- grpc: the SDK's OTLP/gRPC exporters; ENDPOINT is the gRPC endpoint
  (https:// for TLS, trusting OTEL_EXPORTER_OTLP_CERTIFICATE).
- http with an https:// ENDPOINT trusts OTEL_EXPORTER_OTLP_CERTIFICATE too.
- json: OTLP/HTTP with JSON bodies; ENDPOINT is the base URL. The SDK has no
  JSON exporter, so the small exporters below encode with the SDK's own
  protobuf encoders and turn the message into OTLP/JSON (lowerCamelCase keys,
  integer enums, trace and span ids as hex).

Prints the trace id (32 hex digits) on stdout when everything was exported;
exits non-zero when a JSON export was not answered with 200.
"""

import base64
import json
import logging
import sys
import urllib.request

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.trace import Status, StatusCode

# OTLP/JSON writes these bytes fields as hex; protobuf's JSON mapping as base64.
ID_KEYS = {"traceId", "spanId", "parentSpanId"}

# What the JSON exporters could not deliver, reported before exiting.
export_failures = []


def hex_ids(value):
    """Rewrites every trace/span id in an OTLP/JSON dict from base64 to hex,
    at any depth (spans, span links, log records)."""
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex() if key in ID_KEYS else hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [hex_ids(item) for item in value]
    return value


def post_otlp_json(url, message):
    """POSTs an Export*ServiceRequest as OTLP/JSON; True on a 200 answer
    that rejected nothing (no `partialSuccess` with rejections)."""
    document = hex_ids(MessageToDict(message, use_integers_for_enums=True))
    request = urllib.request.Request(
        url,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode(errors="replace")
            partial = (json.loads(body or "{}") or {}).get("partialSuccess") or {}
            # int64 in OTLP/JSON: a number or a string.
            rejected = int(partial.get("rejectedSpans", 0)) + int(
                partial.get("rejectedLogRecords", 0)
            )
            if response.status == 200 and not rejected:
                return True
            export_failures.append(f"POST {url}: {response.status} {body}")
    except Exception as error:  # HTTPError (non-2xx), connection errors
        detail = error.read().decode(errors="replace") if hasattr(error, "read") else ""
        export_failures.append(f"POST {url}: {error} {detail}")
    return False


class JsonSpanExporter(SpanExporter):
    """OTLP/HTTP JSON span exporter: the SDK's protobuf encoding, as JSON."""

    def __init__(self, url):
        self.url = url

    def export(self, spans):
        ok = post_otlp_json(self.url, encode_spans(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class JsonLogExporter(LogRecordExporter):
    """OTLP/HTTP JSON log exporter, the same way as `JsonSpanExporter`."""

    def __init__(self, url):
        self.url = url

    def export(self, batch):
        ok = post_otlp_json(self.url, encode_logs(batch))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self):
        pass


protocol, endpoint, session = sys.argv[1], sys.argv[2], sys.argv[3]
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    # No `insecure`: the exporter takes it from the scheme (http:// plain,
    # https:// TLS), as it does for OTEL_EXPORTER_OTLP_ENDPOINT.
    span_exporter = OTLPSpanExporter(endpoint=endpoint)
    log_exporter = OTLPLogExporter(endpoint=endpoint)
elif protocol == "json":
    span_exporter = JsonSpanExporter(f"{endpoint}/v1/traces")
    log_exporter = JsonLogExporter(f"{endpoint}/v1/logs")
elif protocol == "http":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    span_exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    log_exporter = OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")
else:
    sys.exit(f"unknown protocol {protocol!r}: expected http, grpc or json")

resource = Resource.create({"service.name": "support-agent"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
tracer = tracer_provider.get_tracer("tally-test")
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
log = logging.getLogger("agent")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(logger_provider=logger_provider))

with tracer.start_as_current_span("invoke_agent support") as root:
    root.set_attribute("gen_ai.operation.name", "invoke_agent")
    root.set_attribute("gen_ai.agent.name", "support")
    root.set_attribute("gen_ai.conversation.id", session)
    root.set_attribute("user.id", "alice")
    trace_id = format(root.get_span_context().trace_id, "032x")
    with tracer.start_as_current_span("chat gpt-4o") as llm:
        llm.set_attribute("gen_ai.operation.name", "chat")
        llm.set_attribute("gen_ai.provider.name", "openai")
        llm.set_attribute("gen_ai.request.model", "gpt-4o")
        llm.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
        llm.set_attribute("gen_ai.response.id", f"chatcmpl-{trace_id[:12]}")
        llm.set_attribute("gen_ai.usage.input_tokens", 1200)
        llm.set_attribute("gen_ai.usage.cache_read.input_tokens", 200)
        llm.set_attribute("gen_ai.usage.output_tokens", 300)
        llm.set_attribute("gen_ai.response.time_to_first_chunk", 0.25)
        llm.set_attribute("user.id", "alice")
        log.info("model answered")
    with tracer.start_as_current_span("execute_tool search") as tool:
        tool.set_attribute("gen_ai.operation.name", "execute_tool")
        tool.set_attribute("gen_ai.tool.name", "search")
        tool.set_status(Status(StatusCode.ERROR, "search backend timed out"))
    with tracer.start_as_current_span("embeddings text-embedding-3-small") as emb:
        emb.set_attribute("gen_ai.operation.name", "embeddings")
        emb.set_attribute("gen_ai.request.model", "text-embedding-3-small")
        emb.set_attribute("gen_ai.usage.input_tokens", 64)

tracer_provider.shutdown()
logger_provider.shutdown()
if export_failures:
    sys.exit("OTLP/JSON export failed:\n" + "\n".join(export_failures))
print(trace_id)

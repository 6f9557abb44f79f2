"""Sends one agent run through the OpenTelemetry Python SDK, as an
instrumented app would: spans with GenAI attributes and a log record tied to
the LLM span. Usage: emit_otel.py http|grpc ENDPOINT SESSION

Prints the trace id (32 hex digits) on stdout when everything was exported.
"""

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.trace import Status, StatusCode

protocol, endpoint, session = sys.argv[1], sys.argv[2], sys.argv[3]
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    span_exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    log_exporter = OTLPLogExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    span_exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    log_exporter = OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")

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
print(trace_id)

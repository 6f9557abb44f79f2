"""Sends one agent run carrying OpenInference attributes, the way Arize
Phoenix instrumentations write them, through the OpenTelemetry Python SDK's
OTLP/HTTP protobuf exporter. Usage: emit_openinference.py BASE_URL SESSION

The resource names the Phoenix project (`openinference.project.name` =
phoenix-demo). The trace:

    support-agent          AGENT      session.id, user.id
      answer-question      CHAIN
        retrieve-docs      RETRIEVER  two retrieval.documents
          embed-query      EMBEDDING  text-embedding-3-small, 32 prompt tokens
                                      and the whole 1536-float vector
        ChatCompletion     LLM        gpt-4o-mini, 500 prompt tokens (100 of
                                      them cache reads), 120 completion tokens
      lookup-order         TOOL

Prints the trace id (32 hex digits) last on stdout once the SDK has exported.
"""

import json
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

base_url, session = sys.argv[1], sys.argv[2]

# What a Phoenix `register(project_name=...)` puts on the resource.
resource = Resource.create({"openinference.project.name": "phoenix-demo"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(
    SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base_url}/v1/traces"))
)
tracer = tracer_provider.get_tracer("openinference.instrumentation.test")

QUESTION = "Where is my order 1234?"
ANSWER = "Order 1234 shipped yesterday and arrives on Friday."
# A deterministic stand-in for an embedding of QUESTION.
VECTOR = [((i * 7919) % 1000) / 1000.0 - 0.5 for i in range(1536)]


def context(span, session_id, user_id):
    """OpenInference's context attributes, copied onto every span as its
    `using_attributes` does."""
    span.set_attribute("session.id", session_id)
    span.set_attribute("user.id", user_id)


with tracer.start_as_current_span("support-agent") as agent:
    trace_id = format(agent.get_span_context().trace_id, "032x")
    agent.set_attribute("openinference.span.kind", "AGENT")
    agent.set_attribute("agent.name", "support-agent")
    agent.set_attribute("input.value", QUESTION)
    agent.set_attribute("input.mime_type", "text/plain")
    context(agent, session, "carol")

    with tracer.start_as_current_span("answer-question") as chain:
        chain.set_attribute("openinference.span.kind", "CHAIN")
        chain.set_attribute("input.value", QUESTION)
        context(chain, session, "carol")

        with tracer.start_as_current_span("retrieve-docs") as retriever:
            retriever.set_attribute("openinference.span.kind", "RETRIEVER")
            retriever.set_attribute("input.value", QUESTION)
            context(retriever, session, "carol")

            with tracer.start_as_current_span("embed-query") as embedding:
                embedding.set_attribute("openinference.span.kind", "EMBEDDING")
                embedding.set_attribute("embedding.model_name", "text-embedding-3-small")
                embedding.set_attribute("llm.system", "openai")
                embedding.set_attribute("embedding.embeddings.0.embedding.text", QUESTION)
                embedding.set_attribute("embedding.embeddings.0.embedding.vector", VECTOR)
                embedding.set_attribute("llm.token_count.prompt", 32)
                embedding.set_attribute("llm.token_count.total", 32)
                context(embedding, session, "carol")

            for i, (doc_id, text) in enumerate(
                [("kb-17", "Orders ship within 2 days."), ("kb-42", "Tracking: see account.")]
            ):
                prefix = f"retrieval.documents.{i}.document"
                retriever.set_attribute(f"{prefix}.id", doc_id)
                retriever.set_attribute(f"{prefix}.content", text)
                retriever.set_attribute(f"{prefix}.score", 0.9 - i * 0.2)

        with tracer.start_as_current_span("ChatCompletion") as llm:
            llm.set_attribute("openinference.span.kind", "LLM")
            llm.set_attribute("llm.model_name", "gpt-4o-mini")
            llm.set_attribute("llm.provider", "openai")
            llm.set_attribute("llm.system", "openai")
            llm.set_attribute(
                "llm.invocation_parameters", json.dumps({"model": "gpt-4o-mini", "temperature": 0})
            )
            llm.set_attribute("llm.input_messages.0.message.role", "system")
            llm.set_attribute("llm.input_messages.0.message.content", "You answer order questions.")
            llm.set_attribute("llm.input_messages.1.message.role", "user")
            llm.set_attribute("llm.input_messages.1.message.content", QUESTION)
            llm.set_attribute("llm.output_messages.0.message.role", "assistant")
            llm.set_attribute("llm.output_messages.0.message.content", ANSWER)
            # OpenAI-style usage: the prompt count includes the cache reads.
            llm.set_attribute("llm.token_count.prompt", 500)
            llm.set_attribute("llm.token_count.prompt_details.cache_read", 100)
            llm.set_attribute("llm.token_count.completion", 120)
            llm.set_attribute("llm.token_count.total", 620)
            llm.set_attribute("output.value", ANSWER)
            context(llm, session, "carol")

        chain.set_attribute("output.value", ANSWER)

    with tracer.start_as_current_span("lookup-order") as tool:
        tool.set_attribute("openinference.span.kind", "TOOL")
        tool.set_attribute("tool.name", "lookup_order")
        tool.set_attribute("tool.parameters", json.dumps({"order_id": "1234"}))
        tool.set_attribute("input.value", json.dumps({"order_id": "1234"}))
        tool.set_attribute("output.value", json.dumps({"status": "shipped"}))
        context(tool, session, "carol")

    agent.set_attribute("output.value", ANSWER)

tracer_provider.shutdown()
print(trace_id)

"""Sends one agent run through the Langfuse Python SDK pointed at Tally
(`LANGFUSE_BASE_URL` style). Usage: emit_langfuse.py BASE_URL SESSION, with
LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY when the server asks for keys.

Prints the trace id on stdout once the SDK has flushed.
"""

import datetime
import os
import sys

from langfuse import Langfuse, propagate_attributes

base_url, session = sys.argv[1], sys.argv[2]
# The SDK's own variables when set (a Tally key as the secret), else a pair
# that names the project `pk-lf-tally`.
langfuse = Langfuse(
    public_key=os.environ.get("LANGFUSE_PUBLIC_KEY", "pk-lf-tally"),
    secret_key=os.environ.get("LANGFUSE_SECRET_KEY", "sk-lf-tally"),
    base_url=base_url,
)

with langfuse.start_as_current_observation(as_type="agent", name="planner"), propagate_attributes(
    session_id=session, user_id="bob"
):
    trace_id = langfuse.get_current_trace_id()
    started = datetime.datetime.now(datetime.timezone.utc)
    with langfuse.start_as_current_observation(
        as_type="generation",
        name="draft answer",
        model="gpt-4o",
        # Langfuse's usage is exclusive: 700 uncached input tokens plus 300
        # cache reads, 150 output tokens plus 50 of reasoning.
        usage_details={
            "input": 700,
            "cache_read_input_tokens": 300,
            "output": 150,
            "output_reasoning_tokens": 50,
        },
        completion_start_time=started + datetime.timedelta(milliseconds=120),
    ):
        pass
    with langfuse.start_as_current_observation(
        as_type="tool", name="lookup", level="ERROR", status_message="not found"
    ):
        pass

langfuse.flush()
langfuse.shutdown()
print(trace_id)

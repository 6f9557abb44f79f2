"""Sends one generation with its input and output through the Langfuse Python
SDK pointed at Tally (`LANGFUSE_BASE_URL` style): the SDK writes them as
`langfuse.observation.input` / `.output`. The public key names the project.
Usage: emit_langfuse_content.py BASE_URL PUBLIC_KEY PROMPT COMPLETION

Prints the trace id on stdout once the SDK has flushed.
"""

import sys

from langfuse import Langfuse

base_url, public_key, prompt, completion = sys.argv[1:5]
langfuse = Langfuse(public_key=public_key, secret_key="sk-lf-tally", base_url=base_url)

with langfuse.start_as_current_observation(
    as_type="agent", name="assistant", input={"question": prompt}
) as agent:
    trace_id = langfuse.get_current_trace_id()
    with langfuse.start_as_current_observation(
        as_type="generation",
        name="answer",
        model="gpt-4o",
        input=[{"role": "user", "content": prompt}],
        usage_details={"input": 400, "output": 60},
    ) as generation:
        generation.update(output={"role": "assistant", "content": completion})
    agent.update(output=completion)

langfuse.flush()
langfuse.shutdown()
print(trace_id)

// The fixed data set the end-to-end test feeds a fresh Tally through its
// public ingest endpoints: usage reports, agent traces in four conventions
// (GenAI, OpenInference, Langfuse, Traceloop), logs, metric points and a
// budget. Everything is placed relative to `base` (unix ms, a whole minute),
// so a window around it holds all of it.

export const PROMPT = 'How do I reset the password for account 4417?';
export const ANSWER = 'Open Settings → Security and choose “Reset password”; a link goes to the account e-mail.';
export const RESEARCH_PROMPT = 'Summarise the 2025 solar capacity report in three bullet points.';

const MODELS = [
  ['gpt-4o', 'openai'],
  ['gpt-4o-mini', 'openai'],
  ['claude-sonnet-4-5', 'anthropic'],
  ['o3-mini', 'openai'],
  ['acme-llm-1', 'acme'],
];
const USERS = ['alice', 'bob', 'carol', 'dave'];
const KEYS = ['sk-live-aaaa', 'sk-live-bbbb', 'sk-live-cccc'];

/** 120 usage reports over the two hours before `base`. */
export function usageReports(base) {
  const out = [];
  for (let i = 0; i < 120; i++) {
    const [model, provider] = MODELS[i % MODELS.length];
    const completed = base - (i * 60_000 + 17_000);
    const duration = 300 + ((i * 137) % 2900);
    const input = 400 + ((i * 911) % 6000);
    out.push({
      id: `e2e-${i}`,
      model,
      provider,
      user: USERS[i % USERS.length],
      api_key: KEYS[i % KEYS.length],
      route: i % 2 ? '/v1/chat/completions' : '/v1/responses',
      tags: { team: i % 3 ? 'search' : 'support' },
      input_tokens: input,
      cache_read_tokens: i % 4 === 0 ? Math.floor(input / 2) : 0,
      output_tokens: 100 + ((i * 53) % 1500),
      reasoning_tokens: model === 'o3-mini' ? 60 : 0,
      started_at: completed - duration,
      completed_at: completed,
      duration_ms: duration,
      ttft_ms: i % 2 ? 80 + (i % 7) * 40 : undefined,
      streaming: i % 2 === 1,
      status: i % 17 === 0 ? 'error' : 'ok',
      error_type: i % 17 === 0 ? 'rate_limited' : undefined,
    });
  }
  return out;
}

const str = (key, value) => ({ key, value: { stringValue: value } });
const int = (key, value) => ({ key, value: { intValue: String(value) } });
const ns = (ms) => String(BigInt(Math.round(ms)) * 1_000_000n);

function span(traceId, spanId, parent, name, startMs, endMs, attributes, extra = {}) {
  return {
    traceId,
    spanId,
    parentSpanId: parent ?? '',
    name,
    startTimeUnixNano: ns(startMs),
    endTimeUnixNano: ns(endMs),
    attributes,
    ...extra,
  };
}

export const TRACES = {
  support: '5b8efff798038103d269b633813fc60c',
  research: '6c9f00a8a9149214e37ac744924ad71d',
  coding: '7da011b9ba25a325f48bd855a35be82e',
  workflow: '8eb122cacb36b436a59ce966b46cf93f',
  batch: '9fc233dbdc47c547b6adf077c57d0a40',
};

/** Spans in the batch run: a root, 30 steps, 9 tool calls under each. */
export const BATCH_SPANS = 1 + 30 + 30 * 9;

/** Four agent runs, one per convention, as OTLP/JSON. */
export function traces(base) {
  const t0 = base - 20 * 60_000;
  const support = [
    span(TRACES.support, 'a000000000000001', null, 'invoke_agent support', t0, t0 + 4200, [str('gen_ai.operation.name', 'invoke_agent'), str('gen_ai.agent.name', 'support'), str('user.id', 'alice'), str('gen_ai.conversation.id', 'conv-support-1')]),
    span(TRACES.support, 'a000000000000002', 'a000000000000001', 'retrieval kb', t0 + 100, t0 + 600, [str('gen_ai.operation.name', 'retrieval'), str('gen_ai.data_source.id', 'kb-articles')]),
    span(TRACES.support, 'a000000000000003', 'a000000000000001', 'chat gpt-4o', t0 + 650, t0 + 3100, [
      str('gen_ai.operation.name', 'chat'),
      str('gen_ai.provider.name', 'openai'),
      str('gen_ai.request.model', 'gpt-4o'),
      int('gen_ai.usage.input_tokens', 1800),
      int('gen_ai.usage.output_tokens', 240),
      str('gen_ai.system_instructions', JSON.stringify([{ type: 'text', content: 'You are the support assistant of Example Corp.' }])),
      str('gen_ai.input.messages', JSON.stringify([{ role: 'user', parts: [{ type: 'text', content: PROMPT }] }])),
      str('gen_ai.output.messages', JSON.stringify([
        { role: 'assistant', parts: [{ type: 'tool_call', id: 'call_1', name: 'lookup_account', arguments: { account: 4417 } }, { type: 'text', content: ANSWER }], finish_reason: 'stop' },
      ])),
    ]),
    span(TRACES.support, 'a000000000000004', 'a000000000000003', 'execute_tool lookup_account', t0 + 2000, t0 + 2600, [str('gen_ai.operation.name', 'execute_tool'), str('gen_ai.tool.name', 'lookup_account')]),
    span(TRACES.support, 'a000000000000005', 'a000000000000001', 'chat gpt-4o-mini', t0 + 3200, t0 + 4100, [
      str('gen_ai.operation.name', 'chat'), str('gen_ai.provider.name', 'openai'), str('gen_ai.request.model', 'gpt-4o-mini'),
      int('gen_ai.usage.input_tokens', 900), int('gen_ai.usage.output_tokens', 120),
    ], { status: { code: 2, message: 'upstream timeout' } }),
  ];
  const t1 = base - 35 * 60_000;
  const research = [
    span(TRACES.research, 'b000000000000001', null, 'research agent', t1, t1 + 9000, [str('openinference.span.kind', 'AGENT'), str('session.id', 'conv-research-7'), str('user.id', 'bob')]),
    span(TRACES.research, 'b000000000000002', 'b000000000000001', 'embed query', t1 + 200, t1 + 400, [str('openinference.span.kind', 'EMBEDDING'), str('embedding.model_name', 'text-embedding-3-small'), int('llm.token_count.prompt', 40), int('llm.token_count.total', 40)]),
    span(TRACES.research, 'b000000000000003', 'b000000000000001', 'ChatCompletion', t1 + 500, t1 + 8500, [
      str('openinference.span.kind', 'LLM'), str('llm.model_name', 'claude-sonnet-4-5'), str('llm.system', 'anthropic'),
      int('llm.token_count.prompt', 5200), int('llm.token_count.completion', 700),
      str('llm.input_messages.0.message.role', 'system'), str('llm.input_messages.0.message.content', 'You are a careful research assistant.'),
      str('llm.input_messages.1.message.role', 'user'), str('llm.input_messages.1.message.content', RESEARCH_PROMPT),
      str('llm.output_messages.0.message.role', 'assistant'), str('llm.output_messages.0.message.content', '• Capacity grew 30 %\n• China led installs\n• Storage paired with 40 % of new plants'),
    ]),
  ];
  const t2 = base - 50 * 60_000;
  const coding = [
    span(TRACES.coding, 'c000000000000001', null, 'coding-agent', t2, t2 + 6000, [str('langfuse.observation.type', 'agent'), str('langfuse.user.id', 'carol'), str('langfuse.session.id', 'conv-coding-3')]),
    span(TRACES.coding, 'c000000000000002', 'c000000000000001', 'generate patch', t2 + 300, t2 + 5200, [
      str('langfuse.observation.type', 'generation'), str('langfuse.observation.model.name', 'gpt-4o'),
      str('langfuse.observation.usage_details', JSON.stringify({ input: 2000, output: 600 })),
      str('langfuse.observation.input', JSON.stringify([{ role: 'user', content: 'Write a function that reverses a linked list in Rust.' }])),
      str('langfuse.observation.output', JSON.stringify({ role: 'assistant', content: 'fn reverse(head: Option<Box<Node>>) -> Option<Box<Node>> { … }' })),
    ]),
  ];
  const t3 = base - 65 * 60_000;
  const workflow = [
    span(TRACES.workflow, 'd000000000000001', null, 'nightly_digest.workflow', t3, t3 + 3000, [str('traceloop.span.kind', 'workflow'), str('traceloop.entity.name', 'nightly_digest')]),
    span(TRACES.workflow, 'd000000000000002', 'd000000000000001', 'summarize.task', t3 + 100, t3 + 2900, [
      str('traceloop.span.kind', 'task'), str('traceloop.entity.name', 'summarize'),
      str('traceloop.entity.input', JSON.stringify({ inputs: { messages: [{ role: 'user', content: 'Digest today’s 14 support tickets.' }] } })),
      str('traceloop.entity.output', JSON.stringify({ outputs: 'Most tickets were about password resets.' })),
    ]),
  ];
  const t4 = base - 80 * 60_000;
  const hex = (n) => n.toString(16).padStart(16, '0');
  const batch = [span(TRACES.batch, hex(0xe000), null, 'reindex batch', t4, t4 + 60_000, [str('gen_ai.operation.name', 'invoke_agent'), str('gen_ai.agent.name', 'indexer')])];
  for (let i = 0; i < 30; i++) {
    const step = hex(0xe100 + i);
    const start = t4 + i * 2000;
    batch.push(span(TRACES.batch, step, hex(0xe000), `step ${i}`, start, start + 1900, [str('tally.span.kind', 'chain')]));
    for (let j = 0; j < 9; j++) {
      batch.push(span(TRACES.batch, hex(0xf000 + i * 16 + j), step, `fetch page ${i}.${j}`, start + j * 200, start + j * 200 + 180, [str('gen_ai.operation.name', 'execute_tool'), str('gen_ai.tool.name', 'fetch')]));
    }
  }
  const resource = (service) => ({ attributes: [str('service.name', service)] });
  return {
    resourceSpans: [
      { resource: resource('support-agent'), scopeSpans: [{ spans: support }] },
      { resource: resource('research-agent'), scopeSpans: [{ spans: research }] },
      { resource: resource('coding-agent'), scopeSpans: [{ spans: coding }] },
      { resource: resource('digest-worker'), scopeSpans: [{ spans: workflow }] },
      { resource: resource('indexer'), scopeSpans: [{ spans: batch }] },
    ],
  };
}

/** Log records, some of them inside the support trace. */
export function logs(base) {
  const t0 = base - 20 * 60_000;
  const record = (ms, severityNumber, severityText, body, traceId, spanId) => ({
    timeUnixNano: ns(ms),
    severityNumber,
    severityText,
    body: { stringValue: body },
    traceId: traceId ?? '',
    spanId: spanId ?? '',
  });
  const records = [
    record(t0 + 700, 9, 'INFO', 'looking up account 4417', TRACES.support, 'a000000000000003'),
    record(t0 + 4050, 17, 'ERROR', 'gpt-4o-mini call failed: upstream timeout', TRACES.support, 'a000000000000005'),
  ];
  for (let i = 0; i < 20; i++) {
    records.push(record(base - (i + 1) * 180_000, i % 5 === 0 ? 13 : 9, i % 5 === 0 ? 'WARN' : 'INFO', i % 5 === 0 ? `queue depth high: ${40 + i}` : `batch ${i} processed`));
  }
  return { resourceLogs: [{ resource: { attributes: [str('service.name', 'support-agent')] }, scopeLogs: [{ logRecords: records }] }] };
}

/** Metric points: processing time per operation, and a queue size. */
export function points(base) {
  const out = [];
  for (let i = 0; i < 60; i++) {
    const t = base - i * 60_000 - 5_000;
    out.push({ name: 'processing_time', value: 0.1 + (i % 10) * 0.05, tags: { operation: i % 2 ? 'embed' : 'search' }, type: 'histogram', timestamp: t });
    out.push({ name: 'queue_size', value: 10 + (i % 13), timestamp: t });
  }
  return out;
}

export const BUDGET = {
  name: 'alice-daily',
  scope: { user: 'alice' },
  metric: 'cost_usd',
  limit: 2,
  period: 'rolling 24h',
  thresholds: [50, 80, 100],
};

async function post(url, body) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`POST ${url}: ${r.status} ${await r.text()}`);
  return r.json();
}

/** Sends the whole data set to the server at `url`. */
export async function feed(url, base) {
  await post(`${url}/api/v1/usage`, usageReports(base));
  const t = await post(`${url}/v1/traces`, traces(base));
  if (t.partialSuccess?.rejectedSpans) throw new Error(`spans rejected: ${JSON.stringify(t)}`);
  await post(`${url}/v1/logs`, logs(base));
  await post(`${url}/api/v1/points`, points(base));
  await post(`${url}/api/v1/budgets`, BUDGET);
}

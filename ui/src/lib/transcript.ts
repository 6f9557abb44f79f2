// Chat transcripts from an LLM span's attributes and events, in each
// convention that carries messages: OpenTelemetry GenAI
// (`gen_ai.input.messages` / `gen_ai.output.messages` /
// `gen_ai.system_instructions`, the older `gen_ai.prompt.N.*` and message
// events), OpenInference (`llm.input_messages.N.message.*`), Langfuse
// (`langfuse.observation.input` / `.output`) and Traceloop
// (`traceloop.entity.input` / `.output`). Pure: attributes in, messages out.

export type Part =
  | { kind: 'text'; text: string }
  | { kind: 'tool_call'; name: string; arguments: string; id?: string }
  | { kind: 'tool_result'; content: string; id?: string };

export interface Message {
  role: string;
  parts: Part[];
  /** Which side of the call: what was sent, or what came back. */
  direction: 'input' | 'output';
}

export interface Transcript {
  /** The convention the messages were read from. */
  convention: 'GenAI' | 'OpenInference' | 'Langfuse' | 'Traceloop';
  messages: Message[];
}

type Attrs = Record<string, unknown>;
interface SpanEvent {
  name: string;
  attributes?: Attrs;
}

/** A value that may be JSON sent as a string. */
function parsed(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const t = value.trim();
  if (!(t.startsWith('{') || t.startsWith('['))) return value;
  try {
    return JSON.parse(t);
  } catch {
    return value;
  }
}

function text(value: unknown): string {
  if (value == null) return '';
  if (typeof value === 'string') return value;
  return JSON.stringify(value, null, 2);
}

/** OpenAI-style content: a string or a list of parts (`{type: 'text', text}`). */
function contentParts(content: unknown): Part[] {
  const c = parsed(content);
  if (c == null || c === '') return [];
  if (typeof c === 'string') return [{ kind: 'text', text: c }];
  if (Array.isArray(c)) {
    return c.flatMap((item): Part[] => {
      if (typeof item === 'string') return [{ kind: 'text', text: item }];
      if (item && typeof item === 'object') {
        const o = item as Attrs;
        if (typeof o.text === 'string') return [{ kind: 'text', text: o.text }];
        if (typeof o.content === 'string') return [{ kind: 'text', text: o.content }];
      }
      return [{ kind: 'text', text: text(item) }];
    });
  }
  return [{ kind: 'text', text: text(c) }];
}

/** OpenAI-style tool calls: `[{id, function: {name, arguments}}]`. */
function toolCalls(calls: unknown): Part[] {
  const c = parsed(calls);
  if (!Array.isArray(c)) return [];
  return c.map((call) => {
    const o = (call ?? {}) as Attrs;
    const fn = (o.function ?? o) as Attrs;
    return { kind: 'tool_call', name: String(fn.name ?? 'tool'), arguments: text(parsed(fn.arguments ?? fn.input ?? '')), id: o.id ? String(o.id) : undefined };
  });
}

/** GenAI parts: `{type: 'text', content}`, `{type: 'tool_call', name, arguments}`, … */
function genAiParts(parts: unknown): Part[] {
  if (!Array.isArray(parts)) return contentParts(parts);
  return parts.map((p): Part => {
    const o = (p ?? {}) as Attrs;
    switch (o.type) {
      case 'tool_call':
        return { kind: 'tool_call', name: String(o.name ?? 'tool'), arguments: text(parsed(o.arguments ?? '')), id: o.id ? String(o.id) : undefined };
      case 'tool_call_response':
        return { kind: 'tool_result', content: text(parsed(o.response ?? o.result ?? '')), id: o.id ? String(o.id) : undefined };
      default:
        return { kind: 'text', text: text(o.content ?? o.text ?? (o.type === 'text' ? '' : o)) };
    }
  });
}

/** A message object in GenAI or OpenAI form. */
function message(raw: unknown, direction: Message['direction'], defaultRole: string): Message | null {
  const o = parsed(raw);
  if (o == null) return null;
  if (typeof o === 'string') return { role: defaultRole, parts: [{ kind: 'text', text: o }], direction };
  if (typeof o !== 'object' || Array.isArray(o)) return { role: defaultRole, parts: contentParts(o), direction };
  const m = o as Attrs;
  // OpenAI choices wrap the message.
  if (m.message && typeof m.message === 'object') return message(m.message, direction, defaultRole);
  // Not a message at all (a function's arguments, say): shown as JSON.
  if (m.role === undefined && m.content === undefined && m.parts === undefined && m.tool_calls === undefined) {
    return { role: defaultRole, parts: [{ kind: 'text', text: text(m) }], direction };
  }
  const parts = m.parts !== undefined ? genAiParts(m.parts) : contentParts(m.content);
  parts.push(...toolCalls(m.tool_calls));
  if (m.role === 'tool' && parts.length && parts.every((p) => p.kind === 'text')) {
    const content = parts.map((p) => (p.kind === 'text' ? p.text : '')).join('\n');
    return { role: 'tool', parts: [{ kind: 'tool_result', content, id: m.tool_call_id ? String(m.tool_call_id) : undefined }], direction };
  }
  return { role: String(m.role ?? defaultRole), parts, direction };
}

function messageList(value: unknown, direction: Message['direction'], defaultRole: string): Message[] {
  const v = parsed(value);
  if (Array.isArray(v)) return v.map((m) => message(m, direction, defaultRole)).filter((m): m is Message => m !== null);
  if (v && typeof v === 'object') {
    const o = v as Attrs;
    // Common wrappers: {messages: [...]}, OpenAI responses {choices: [...]}.
    if (Array.isArray(o.messages)) return messageList(o.messages, direction, defaultRole);
    if (Array.isArray(o.choices)) return messageList(o.choices, direction, defaultRole);
  }
  const m = message(v, direction, defaultRole);
  return m ? [m] : [];
}

/** Indexed flat attributes `PREFIX.N.REST` grouped by N, in order. */
function indexed(attrs: Attrs, prefix: string): Map<number, Attrs> {
  const out = new Map<number, Attrs>();
  for (const [key, value] of Object.entries(attrs)) {
    if (!key.startsWith(prefix)) continue;
    const rest = key.slice(prefix.length);
    const dot = rest.indexOf('.');
    if (dot <= 0) continue;
    const n = Number(rest.slice(0, dot));
    if (!Number.isInteger(n)) continue;
    const entry = out.get(n) ?? {};
    entry[rest.slice(dot + 1)] = value;
    out.set(n, entry);
  }
  return new Map([...out.entries()].sort((a, b) => a[0] - b[0]));
}

function openInference(attrs: Attrs, prefix: string, direction: Message['direction']): Message[] {
  const out: Message[] = [];
  for (const fields of indexed(attrs, prefix).values()) {
    const parts: Part[] = [];
    if (fields['message.content'] != null) parts.push(...contentParts(fields['message.content']));
    for (const c of indexed(fields, 'message.contents.').values()) {
      if (c['message_content.text'] != null) parts.push({ kind: 'text', text: text(c['message_content.text']) });
    }
    for (const call of indexed(fields, 'message.tool_calls.').values()) {
      parts.push({
        kind: 'tool_call',
        name: String(call['tool_call.function.name'] ?? 'tool'),
        arguments: text(parsed(call['tool_call.function.arguments'] ?? '')),
        id: call['tool_call.id'] ? String(call['tool_call.id']) : undefined,
      });
    }
    const role = String(fields['message.role'] ?? (direction === 'input' ? 'user' : 'assistant'));
    if (role === 'tool' && parts.every((p) => p.kind === 'text')) {
      const content = parts.map((p) => (p.kind === 'text' ? p.text : '')).join('\n');
      out.push({ role, parts: [{ kind: 'tool_result', content, id: fields['message.tool_call_id'] ? String(fields['message.tool_call_id']) : undefined }], direction });
    } else {
      out.push({ role, parts, direction });
    }
  }
  return out;
}

/** OpenLLMetry's legacy `gen_ai.prompt.N.role/content` and `gen_ai.completion.N.*`. */
function legacyGenAi(attrs: Attrs, prefix: string, direction: Message['direction']): Message[] {
  const out: Message[] = [];
  for (const fields of indexed(attrs, prefix).values()) {
    const parts = contentParts(fields.content);
    for (const call of indexed(fields, 'tool_calls.').values()) {
      parts.push({ kind: 'tool_call', name: String(call.name ?? 'tool'), arguments: text(parsed(call.arguments ?? '')), id: call.id ? String(call.id) : undefined });
    }
    out.push({ role: String(fields.role ?? (direction === 'input' ? 'user' : 'assistant')), parts, direction });
  }
  return out;
}

/** GenAI message events: `gen_ai.user.message`, `gen_ai.choice`, … */
function genAiEvents(events: SpanEvent[]): Message[] {
  const out: Message[] = [];
  for (const e of events) {
    const m = /^gen_ai\.(system|user|assistant|tool)\.message$/.exec(e.name);
    const a = e.attributes ?? {};
    if (m) {
      const msg = message({ role: a.role ?? m[1], content: a.content, tool_calls: a.tool_calls, tool_call_id: a.id }, 'input', m[1]);
      if (msg) out.push(msg);
    } else if (e.name === 'gen_ai.choice') {
      const msg = message(a.message ?? { role: 'assistant', content: a.content }, 'output', 'assistant');
      if (msg) out.push(msg);
    }
  }
  return out;
}

/** The transcript a span carries, or null when it carries no messages. */
export function extractTranscript(attrs: Attrs, events: SpanEvent[] = []): Transcript | null {
  // GenAI (current): structured messages as JSON.
  const genAi: Message[] = [];
  if (attrs['gen_ai.system_instructions'] != null) {
    const parts = genAiParts(parsed(attrs['gen_ai.system_instructions']));
    if (parts.length) genAi.push({ role: 'system', parts, direction: 'input' });
  }
  if (attrs['gen_ai.input.messages'] != null) genAi.push(...messageList(attrs['gen_ai.input.messages'], 'input', 'user'));
  if (attrs['gen_ai.output.messages'] != null) genAi.push(...messageList(attrs['gen_ai.output.messages'], 'output', 'assistant'));
  if (genAi.length) return { convention: 'GenAI', messages: genAi };

  const oi = [...openInference(attrs, 'llm.input_messages.', 'input'), ...openInference(attrs, 'llm.output_messages.', 'output')];
  if (oi.length) return { convention: 'OpenInference', messages: oi };

  const lfIn = attrs['langfuse.observation.input'];
  const lfOut = attrs['langfuse.observation.output'];
  if (lfIn != null || lfOut != null) {
    const messages = [...(lfIn != null ? messageList(lfIn, 'input', 'input') : []), ...(lfOut != null ? messageList(lfOut, 'output', 'output') : [])];
    if (messages.length) return { convention: 'Langfuse', messages };
  }

  const tlIn = attrs['traceloop.entity.input'];
  const tlOut = attrs['traceloop.entity.output'];
  if (tlIn != null || tlOut != null) {
    const unwrap = (v: unknown): unknown => {
      const p = parsed(v);
      // Traceloop wraps a function's arguments: {"inputs": {...}, "args": [...], "kwargs": {...}}.
      if (p && typeof p === 'object' && !Array.isArray(p)) {
        const o = p as Attrs;
        if (o.inputs !== undefined) return o.inputs;
        if (o.outputs !== undefined) return o.outputs;
        if (o.kwargs && typeof o.kwargs === 'object' && Array.isArray((o.kwargs as Attrs).messages)) return (o.kwargs as Attrs).messages;
      }
      return p;
    };
    const messages = [...(tlIn != null ? messageList(unwrap(tlIn), 'input', 'input') : []), ...(tlOut != null ? messageList(unwrap(tlOut), 'output', 'output') : [])];
    if (messages.length) return { convention: 'Traceloop', messages };
  }

  const legacy = [...legacyGenAi(attrs, 'gen_ai.prompt.', 'input'), ...legacyGenAi(attrs, 'gen_ai.completion.', 'output')];
  if (legacy.length) return { convention: 'GenAI', messages: legacy };

  const fromEvents = genAiEvents(events);
  if (fromEvents.length) return { convention: 'GenAI', messages: fromEvents };
  return null;
}

// The client of Tally's public HTTP API: every request the dashboard makes
// goes through `api`. It sends `Authorization: Bearer KEY` when the user gave
// a key (kept in sessionStorage, for this tab only), and reports a 401 so the
// shell can ask for one; `whoami` tries a key before it is kept.

const KEY_STORAGE = 'tally.apiKey';
/** The key when sessionStorage refuses it (private mode): it lasts until reload. */
let memoryKey: string | null = null;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function apiKey(): string | null {
  try {
    return sessionStorage.getItem(KEY_STORAGE) ?? memoryKey;
  } catch {
    return memoryKey;
  }
}

export function setApiKey(key: string | null): void {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage refused (private mode): the key lasts until reload.
  }
  memoryKey = key;
}

/** The server's reason for a 401, and the key the refused request carried. */
type Listener = (message: string, key: string | null) => void;
const unauthorizedListeners = new Set<Listener>();

/** Called whenever the API answers 401 to a request made with the kept key. */
export function onUnauthorized(listener: Listener): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export type Params = Record<string, string | number | boolean | null | undefined | (string | number)[]>;

export function query(params: Params): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v == null || v === '') continue;
    if (Array.isArray(v)) for (const item of v) q.append(k, String(item));
    else q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { accept: 'application/json', ...extra };
  const key = apiKey();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

interface Options {
  body?: unknown;
  signal?: AbortSignal;
  /** Send this key instead of the kept one, and tell no listener of a 401. */
  trial?: { key: string | null };
}

async function request<T>(method: string, path: string, params: Params = {}, options: Options = {}): Promise<T> {
  const { body, signal, trial } = options;
  const extra: Record<string, string> = body !== undefined ? { 'content-type': 'application/json' } : {};
  const key = trial ? trial.key : apiKey();
  const sent = trial ? { ...extra, accept: 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) } : headers(extra);
  let response: Response;
  try {
    response = await fetch(`${path}${query(params)}`, {
      method,
      headers: sent,
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal,
    });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError(0, 'network', `Tally did not answer (${(err as Error).message}); is the server running?`);
  }
  const text = await response.text();
  let json: unknown = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!response.ok) {
    const error = (json as { error?: { code?: string; message?: string } } | null)?.error;
    const failure = new ApiError(response.status, error?.code ?? `http_${response.status}`, error?.message ?? `${response.status} ${response.statusText}`);
    if (response.status === 401 && !trial) for (const l of unauthorizedListeners) l(failure.message, key);
    throw failure;
  }
  return json as T;
}

export const api = {
  get: <T>(path: string, params?: Params, signal?: AbortSignal) => request<T>('GET', path, params, { signal }),
  post: <T>(path: string, body: unknown) => request<T>('POST', path, {}, { body }),
  put: <T>(path: string, body: unknown) => request<T>('PUT', path, {}, { body }),
  del: <T>(path: string) => request<T>('DELETE', path),
};

/**
 * `GET /api/v1/auth/whoami` with `key` (none: no Authorization header),
 * whatever key is kept; a 401 is thrown as an `ApiError` and not reported
 * to the `onUnauthorized` listeners.
 */
export function whoami(key: string | null): Promise<unknown> {
  return request<unknown>('GET', '/api/v1/auth/whoami', {}, { trial: { key } });
}

// ---- Response shapes (see /api/v1/openapi.json) ----

export interface Quantiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

/** The token counts of the ledger: one call's, or a sum. */
export interface LedgerTokens {
  input_tokens: number;
  output_tokens: number;
  cache_read_tokens: number;
  cache_write_tokens: number;
  reasoning_tokens: number;
  total_tokens: number;
}

export interface UsageTotals extends LedgerTokens {
  requests: number;
  errors: number;
  estimated: number;
  unpriced: number;
  cost_usd: number;
  reported_cost_usd: number;
  latency_ms: Quantiles;
  ttft_ms: Quantiles;
}

export interface UsageGroup extends UsageTotals {
  key: Record<string, string>;
}

export interface UsageSummary {
  from: number;
  to: number;
  groups: UsageGroup[];
  other: UsageTotals | null;
  total: UsageTotals;
  truncated: boolean;
  groups_total: number;
}

export interface UsagePoint extends UsageTotals {
  t: number;
}

export interface UsageSeries {
  from: number;
  to: number;
  tier: string;
  groups: { key: Record<string, string>; points: UsagePoint[] }[];
  other: { points: UsagePoint[] } | null;
  truncated: boolean;
}

export interface UsageRecord extends LedgerTokens {
  id: string | null;
  time_ms: number;
  model: string;
  provider: string | null;
  operation: string;
  user: string | null;
  api_key: string | null;
  session: string | null;
  route: string | null;
  cluster: string | null;
  status: string;
  error_type: string | null;
  tags: Record<string, string>;
  requests: number;
  cost_usd: number;
  price_id: string | null;
  duration_ms: number | null;
  ttft_ms: number | null;
  streaming: boolean | null;
  completed: boolean;
  estimated: boolean;
  source: string;
  trace_id: string | null;
  span_id: string | null;
}

export interface TraceRow {
  trace_id: string;
  root_name: string;
  service: string | null;
  start_ms: number;
  duration_ms: number;
  span_count: number;
  error_count: number;
  llm_calls: number;
  input_tokens: number;
  output_tokens: number;
  cache_read_tokens: number;
  cost_usd: number;
  user: string | null;
  session: string | null;
}

export interface SpanEvent {
  name: string;
  time_ms: number;
  offset_ms: number;
  attributes: Record<string, unknown>;
}

export interface SpanNode {
  span_id: string;
  parent_span_id: string | null;
  name: string;
  kind: string;
  service: string | null;
  start_ms: number;
  offset_ms: number;
  duration_ms: number;
  self_ms: number;
  status: string;
  status_message: string | null;
  model: string | null;
  provider: string | null;
  user: string | null;
  session: string | null;
  input_tokens: number;
  output_tokens: number;
  cache_read_tokens: number;
  cost_usd: number;
  llm_call: boolean;
  attributes: Record<string, unknown>;
  events: SpanEvent[];
  children: SpanNode[];
  subtree: { spans: number; llm_calls: number; errors: number; input_tokens: number; output_tokens: number; cost_usd: number };
}

export interface LogRecord {
  time_ms: number;
  offset_ms?: number;
  severity_text?: string | null;
  severity_number?: number | null;
  severity?: string | null;
  body: unknown;
  attributes?: Record<string, unknown>;
  trace_id?: string | null;
  span_id?: string | null;
  service?: string | null;
}

export interface TraceDetail {
  trace_id: string;
  start_ms: number;
  duration_ms: number;
  span_count: number;
  error_count: number;
  totals: { spans: number; llm_calls: number; errors: number; input_tokens: number; output_tokens: number; cache_read_tokens: number; cost_usd: number };
  spans: SpanNode[];
  logs: LogRecord[];
  truncated: boolean;
  spans_left_out: number;
  logs_truncated: boolean;
}

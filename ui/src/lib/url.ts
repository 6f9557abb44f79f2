// The view state lives in the URL: the page in the path, the window, the
// refresh setting and every filter in the query. Copying the URL copies the
// view. Pure helpers here; `navigate` and `useLocation` in ../router.ts.

import { PRESETS, type Preset, type WindowSpec, parseInstant } from './time';

export const DEFAULT_PRESET: Preset = '24h';

/** The window the URL names: `range=1h`, or `from`/`to` (unix ms or ISO 8601). */
export function readWindow(params: URLSearchParams): WindowSpec {
  const from = parseInstant(params.get('from'));
  const to = parseInstant(params.get('to'));
  if (from != null && to != null && to > from) return { kind: 'range', from, to };
  const range = params.get('range');
  if (range && (PRESETS as readonly string[]).includes(range)) return { kind: 'preset', preset: range as Preset };
  return { kind: 'preset', preset: DEFAULT_PRESET };
}

/** `params` with the window set to `spec` (other keys kept). */
export function writeWindow(params: URLSearchParams, spec: WindowSpec): URLSearchParams {
  const next = new URLSearchParams(params);
  next.delete('range');
  next.delete('from');
  next.delete('to');
  if (spec.kind === 'preset') {
    if (spec.preset !== DEFAULT_PRESET) next.set('range', spec.preset);
  } else {
    next.set('from', String(Math.round(spec.from)));
    next.set('to', String(Math.round(spec.to)));
  }
  return next;
}

/** `params` with `key` set to `value`, or removed when it is empty. */
export function withParam(params: URLSearchParams, key: string, value: string | null | undefined): URLSearchParams {
  const next = new URLSearchParams(params);
  if (value == null || value === '') next.delete(key);
  else next.set(key, value);
  return next;
}

/** `params` with every `key` replaced by `values` (repeatable parameters). */
export function withParams(params: URLSearchParams, key: string, values: string[]): URLSearchParams {
  const next = new URLSearchParams(params);
  next.delete(key);
  for (const v of values) if (v !== '') next.append(key, v);
  return next;
}

/** The parameters that carry over when moving to another page: window and refresh. */
export function shared(params: URLSearchParams): URLSearchParams {
  const next = new URLSearchParams();
  for (const key of ['range', 'from', 'to', 'refresh', 'project']) {
    const v = params.get(key);
    if (v != null) next.set(key, v);
  }
  return next;
}

export function href(path: string, params: URLSearchParams): string {
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

/** `filter=DIM:VALUE` parameters, grouped by dimension. */
export function readFilters(params: URLSearchParams): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const f of params.getAll('filter')) {
    const i = f.indexOf(':');
    if (i <= 0) continue;
    const dim = f.slice(0, i);
    out.set(dim, [...(out.get(dim) ?? []), f.slice(i + 1)]);
  }
  return out;
}

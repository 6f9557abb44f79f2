// Time windows: the presets, absolute ranges, the step a chart uses and the
// window before (for "change against the previous window"). Pure: `now` is
// always an argument.

export const PRESETS = ['15m', '1h', '6h', '24h', '7d', '30d'] as const;
export type Preset = (typeof PRESETS)[number];

/** What the URL says: a preset ending now, or an absolute range (unix ms). */
export type WindowSpec = { kind: 'preset'; preset: Preset } | { kind: 'range'; from: number; to: number };

/** A window resolved against a clock. */
export interface Window {
  from: number;
  to: number;
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "15m" → 900000; null when it does not parse. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)([smhd])$/.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * UNIT_MS[m[2]];
}

export function resolve(spec: WindowSpec, now: number): Window {
  if (spec.kind === 'range') return { from: spec.from, to: spec.to };
  return { from: now - (parseDuration(spec.preset) ?? 3_600_000), to: now };
}

/** The window of the same length just before `w`. */
export function previous(w: Window): Window {
  const length = w.to - w.from;
  return { from: w.from - length, to: w.from };
}

/** Steps a chart may use, finest first. */
const LADDER = ['10s', '30s', '1m', '5m', '15m', '30m', '1h', '3h', '6h', '12h', '1d'];

/**
 * The finest step from the ladder, at least `min`, that gives at most
 * `maxPoints` points over the window: 1 h → 1m, 24 h → 15m, 7 d → 3h.
 */
export function stepFor(w: Window, min = '1m', maxPoints = 120): string {
  const length = Math.max(1, w.to - w.from);
  const minMs = parseDuration(min) ?? 60_000;
  for (const step of LADDER) {
    const stepMs = parseDuration(step)!;
    if (stepMs >= minMs && length / stepMs <= maxPoints) return step;
  }
  return LADDER[LADDER.length - 1];
}

/** A timestamp from the URL: unix ms, or anything Date parses (ISO 8601). */
export function parseInstant(text: string | null): number | null {
  if (!text) return null;
  if (/^\d+$/.test(text)) return Number(text);
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t;
}

/** The value of a `datetime-local` input for an instant, in the browser's zone. */
export function toLocalInput(msSinceEpoch: number): string {
  const d = new Date(msSinceEpoch);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** An instant from a `datetime-local` value, read in the browser's zone. */
export function fromLocalInput(value: string): number | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(value)) return null;
  const t = new Date(value).getTime();
  return Number.isNaN(t) ? null : t;
}

/** "Last 1 h", or the range in the browser's zone. */
export function describe(spec: WindowSpec, fmt: (ms: number) => string): string {
  if (spec.kind === 'preset') return `Last ${spec.preset.replace(/(\d+)/, '$1 ')}`;
  return `${fmt(spec.from)} – ${fmt(spec.to)}`;
}

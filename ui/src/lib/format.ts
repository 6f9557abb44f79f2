// Numbers and times formatted for people, each with an exact form for
// tooltips. Pure functions: the tests pin them (test/format.test.ts).

const thousands = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** Dollars: "$3.41", "$0.0042", "$12.3 K"; 0 is "$0.00". */
export function cost(usd: number | null | undefined): string {
  if (usd == null || !Number.isFinite(usd)) return '—';
  const sign = usd < 0 ? '-' : '';
  const v = Math.abs(usd);
  if (v === 0) return '$0.00';
  if (v >= 100_000) return `${sign}$${compact(v)}`;
  if (v >= 1) return `${sign}$${v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  if (v >= 0.01) return `${sign}$${v.toFixed(2)}`;
  if (v < 0.0001) return `${sign}<$0.0001`;
  // Small amounts keep two significant digits: "$0.0042".
  return `${sign}$${Number(v.toPrecision(2)).toFixed(Math.min(10, 1 - Math.floor(Math.log10(v))))}`;
}

/** The exact dollar amount, for tooltips: "$0.00345 (0.0034500000000000004)" trimmed. */
export function costExact(usd: number | null | undefined): string {
  if (usd == null || !Number.isFinite(usd)) return 'no value';
  return `$${trimZeros(usd.toFixed(8))} USD`;
}

/** Counts: "840", "12,400", "1.2 M", "3.4 B". */
export function count(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return '—';
  if (Math.abs(n) < 100_000) return Number.isInteger(n) ? thousands.format(n) : trimZeros(n.toFixed(2));
  return compact(n);
}

export function countExact(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return 'no value';
  return Number.isInteger(n) ? thousands.format(n) : String(n);
}

/** 1.2 K, 3.4 M, 5.6 B, 7.8 T with one decimal below 100. */
export function compact(n: number): string {
  const units: [number, string][] = [[1e12, 'T'], [1e9, 'B'], [1e6, 'M'], [1e3, 'K']];
  const v = Math.abs(n);
  for (const [size, unit] of units) {
    if (v >= size) {
      const scaled = n / size;
      const digits = Math.abs(scaled) < 100 ? 1 : 0;
      return `${trimZeros(scaled.toFixed(digits))} ${unit}`;
    }
  }
  return trimZeros(n.toFixed(1));
}

/** Durations: "840 ms", "1.24 s", "2 m 03 s", "1 h 05 m", "3 d 4 h". */
export function ms(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  if (a < 1) return `${trimZeros(v.toFixed(2))} ms`;
  if (a < 1000) return `${Math.round(v)} ms`;
  if (a < 60_000) return `${trimZeros((v / 1000).toFixed(a < 10_000 ? 2 : 1))} s`;
  const s = Math.round(a / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, '0')} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} m`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

export function msExact(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return 'no value';
  return `${trimZeros(v.toFixed(3))} ms`;
}

/** A share 0..1 as "3.4 %"; below 0.1 % keeps two significant digits. */
export function percent(share: number | null | undefined): string {
  if (share == null || !Number.isFinite(share)) return '—';
  const p = share * 100;
  if (p === 0) return '0 %';
  if (Math.abs(p) < 0.1) return `${Number(p.toPrecision(2))} %`;
  return `${trimZeros(p.toFixed(1))} %`;
}

/** The change from `before` to `now`, as "+12 %", "−3.4 %", "new" or "—". */
export function change(now: number, before: number): { text: string; direction: 'up' | 'down' | 'flat' } {
  if (!Number.isFinite(now) || !Number.isFinite(before)) return { text: '—', direction: 'flat' };
  if (before === 0) return now === 0 ? { text: '±0 %', direction: 'flat' } : { text: 'new', direction: 'up' };
  const r = (now - before) / Math.abs(before);
  if (Math.abs(r) < 0.0005) return { text: '±0 %', direction: 'flat' };
  const text = `${r > 0 ? '+' : '−'}${percent(Math.abs(r))}`;
  return { text, direction: r > 0 ? 'up' : 'down' };
}

function trimZeros(s: string): string {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/** The browser's time zone, named: "Europe/Paris". */
export function zoneName(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** A time in the browser's zone: "Dec 4, 2026, 20:42:43". */
export function time(msSinceEpoch: number | null | undefined): string {
  if (msSinceEpoch == null || !Number.isFinite(msSinceEpoch)) return '—';
  return dateTime.format(new Date(msSinceEpoch));
}

/** Only the clock, for times within the last day. */
export function clock(msSinceEpoch: number): string {
  return timeOnly.format(new Date(msSinceEpoch));
}

/** The exact instant, for tooltips: ISO 8601 in UTC. */
export function timeExact(msSinceEpoch: number | null | undefined): string {
  if (msSinceEpoch == null || !Number.isFinite(msSinceEpoch)) return 'no value';
  return new Date(msSinceEpoch).toISOString();
}

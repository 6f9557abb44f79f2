// Aligns the API's sparse series (a point only where something happened)
// on one time grid, so stacked and side-by-side series line up.

/** Bucket starts from the one holding `from` to the one holding `to`, every `stepMs` (UTC-aligned, as the API aligns them). */
export function grid(from: number, to: number, stepMs: number, maxPoints = 2000): number[] {
  const first = Math.floor(from / stepMs) * stepMs;
  const out: number[] = [];
  for (let t = first; t < to && out.length < maxPoints; t += stepMs) out.push(t);
  return out;
}

/**
 * The values of `points` on `times`: `get(point)` where a point exists,
 * else `missing` (0 for counts and sums, null for quantiles).
 */
export function align<P extends { t: number }>(times: number[], points: P[], get: (p: P) => number | null, missing: number | null): (number | null)[] {
  const byTime = new Map<number, P>();
  for (const p of points) byTime.set(p.t, p);
  return times.map((t) => {
    const p = byTime.get(t);
    return p ? get(p) : missing;
  });
}

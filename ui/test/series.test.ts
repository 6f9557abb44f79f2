import { describe, expect, it } from 'vitest';
import { align, grid } from '../src/lib/series';

describe('series alignment', () => {
  it('lays buckets from the one holding `from` to the end', () => {
    expect(grid(90_000, 300_000, 60_000)).toEqual([60_000, 120_000, 180_000, 240_000]);
    expect(grid(0, 10 * 60_000, 60_000, 3)).toHaveLength(3);
  });
  it('fills missing buckets with zero for counts and null for quantiles', () => {
    const times = [0, 60_000, 120_000];
    const points = [{ t: 60_000, v: 5, q: 12 }];
    expect(align(times, points, (p) => p.v, 0)).toEqual([0, 5, 0]);
    expect(align(times, points, (p) => p.q, null)).toEqual([null, 12, null]);
  });
});

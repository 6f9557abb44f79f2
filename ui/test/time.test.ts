import { describe, expect, it } from 'vitest';
import { fromLocalInput, parseDuration, parseInstant, previous, resolve, stepFor, toLocalInput } from '../src/lib/time';

const NOW = Date.UTC(2026, 11, 4, 20, 0, 0);

describe('windows', () => {
  it('resolves presets against the clock and ranges as they are', () => {
    expect(resolve({ kind: 'preset', preset: '1h' }, NOW)).toEqual({ from: NOW - 3_600_000, to: NOW });
    expect(resolve({ kind: 'preset', preset: '30d' }, NOW)).toEqual({ from: NOW - 30 * 86_400_000, to: NOW });
    expect(resolve({ kind: 'range', from: 5, to: 10 }, NOW)).toEqual({ from: 5, to: 10 });
  });
  it('gives the previous window of the same length', () => {
    expect(previous({ from: 100, to: 160 })).toEqual({ from: 40, to: 100 });
  });
  it('parses durations and instants', () => {
    expect(parseDuration('15m')).toBe(900_000);
    expect(parseDuration('7d')).toBe(604_800_000);
    expect(parseDuration('soon')).toBeNull();
    expect(parseInstant('1796416963492')).toBe(1_796_416_963_492);
    expect(parseInstant('2026-12-04T20:00:00Z')).toBe(NOW);
    expect(parseInstant('not a time')).toBeNull();
  });
  it('reads datetime-local values in the local zone, both ways', () => {
    const local = toLocalInput(NOW);
    expect(fromLocalInput(local)).toBe(NOW);
    expect(fromLocalInput('')).toBeNull();
  });
});

describe('step', () => {
  const span = (ms: number) => ({ from: NOW - ms, to: NOW });
  it('adapts to the window and keeps at most 120 points', () => {
    expect(stepFor(span(15 * 60_000))).toBe('1m');
    expect(stepFor(span(15 * 60_000), '10s')).toBe('10s');
    expect(stepFor(span(3_600_000))).toBe('1m');
    expect(stepFor(span(6 * 3_600_000))).toBe('5m');
    expect(stepFor(span(24 * 3_600_000))).toBe('15m');
    expect(stepFor(span(7 * 86_400_000))).toBe('3h');
    expect(stepFor(span(30 * 86_400_000))).toBe('6h');
    expect(stepFor(span(400 * 86_400_000))).toBe('1d');
  });
});

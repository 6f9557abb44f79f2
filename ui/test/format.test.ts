import { describe, expect, it } from 'vitest';
import * as fmt from '../src/lib/format';

describe('cost', () => {
  it('shows cents for ordinary amounts and thousands separators', () => {
    expect(fmt.cost(3.4149)).toBe('$3.41');
    expect(fmt.cost(1234.5)).toBe('$1,234.50');
    expect(fmt.cost(0)).toBe('$0.00');
    expect(fmt.cost(0.5)).toBe('$0.50');
  });
  it('keeps two significant digits below a cent, and a floor below that', () => {
    expect(fmt.cost(0.0042)).toBe('$0.0042');
    expect(fmt.cost(0.00345)).toMatch(/^\$0\.003[45]$/);
    expect(fmt.cost(0.0000008)).toBe('<$0.0001');
  });
  it('goes compact for large amounts and keeps the sign', () => {
    expect(fmt.cost(1_234_567)).toBe('$1.2 M');
    expect(fmt.cost(-2.5)).toBe('-$2.50');
  });
  it('says so when there is no value', () => {
    expect(fmt.cost(null)).toBe('—');
    expect(fmt.cost(Number.NaN)).toBe('—');
  });
  it('gives the exact amount for tooltips', () => {
    expect(fmt.costExact(0.0034500000000000004)).toBe('$0.00345 USD');
    expect(fmt.costExact(3)).toBe('$3 USD');
  });
});

describe('count', () => {
  it('writes small counts in full and large ones compact', () => {
    expect(fmt.count(840)).toBe('840');
    expect(fmt.count(99_228)).toBe('99,228');
    expect(fmt.count(1_234_567)).toBe('1.2 M');
    expect(fmt.count(413_000)).toBe('413 K');
    expect(fmt.count(3_400_000_000)).toBe('3.4 B');
    expect(fmt.countExact(1_234_567)).toBe('1,234,567');
  });
});

describe('ms', () => {
  it('picks the unit a person reads', () => {
    expect(fmt.ms(840)).toBe('840 ms');
    expect(fmt.ms(0.25)).toBe('0.25 ms');
    expect(fmt.ms(1240)).toBe('1.24 s');
    expect(fmt.ms(12_340)).toBe('12.3 s');
    expect(fmt.ms(123_000)).toBe('2 m 03 s');
    expect(fmt.ms(3_900_000)).toBe('1 h 05 m');
    expect(fmt.ms(3 * 86_400_000 + 4 * 3_600_000)).toBe('3 d 4 h');
    expect(fmt.msExact(840.1234)).toBe('840.123 ms');
  });
});

describe('percent and change', () => {
  it('formats shares', () => {
    expect(fmt.percent(0.071)).toBe('7.1 %');
    expect(fmt.percent(0)).toBe('0 %');
    expect(fmt.percent(0.00042)).toBe('0.042 %');
  });
  it('compares with the previous window', () => {
    expect(fmt.change(112, 100)).toEqual({ text: '+12 %', direction: 'up' });
    expect(fmt.change(50, 100)).toEqual({ text: '−50 %', direction: 'down' });
    expect(fmt.change(5, 0)).toEqual({ text: 'new', direction: 'up' });
    expect(fmt.change(0, 0)).toEqual({ text: '±0 %', direction: 'flat' });
  });
});

describe('times', () => {
  it('gives the exact instant in UTC for tooltips', () => {
    expect(fmt.timeExact(1_796_416_963_492)).toBe('2026-12-04T20:42:43.492Z');
    expect(fmt.time(null)).toBe('—');
  });
  it('names the zone', () => {
    expect(fmt.zoneName()).toBe(Intl.DateTimeFormat().resolvedOptions().timeZone);
  });
});

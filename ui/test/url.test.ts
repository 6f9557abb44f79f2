import { describe, expect, it } from 'vitest';
import { href, readFilters, readWindow, shared, withParam, withParams, writeWindow } from '../src/lib/url';

describe('URL state', () => {
  it('reads the window the URL names, defaulting to 24 h', () => {
    expect(readWindow(new URLSearchParams(''))).toEqual({ kind: 'preset', preset: '24h' });
    expect(readWindow(new URLSearchParams('range=15m'))).toEqual({ kind: 'preset', preset: '15m' });
    expect(readWindow(new URLSearchParams('range=13m'))).toEqual({ kind: 'preset', preset: '24h' });
    expect(readWindow(new URLSearchParams('from=1000&to=5000&range=1h'))).toEqual({ kind: 'range', from: 1000, to: 5000 });
    expect(readWindow(new URLSearchParams('from=2026-12-04T00:00:00Z&to=2026-12-05T00:00:00Z'))).toEqual({
      kind: 'range',
      from: Date.UTC(2026, 11, 4),
      to: Date.UTC(2026, 11, 5),
    });
    // An empty or reversed range falls back to the preset.
    expect(readWindow(new URLSearchParams('from=5000&to=1000&range=6h'))).toEqual({ kind: 'preset', preset: '6h' });
  });
  it('writes the window back, keeping every other parameter', () => {
    const p = new URLSearchParams('group_by=user&filter=model:a&filter=model:b&range=1h');
    const ranged = writeWindow(p, { kind: 'range', from: 1, to: 2 });
    expect(ranged.toString()).toBe('group_by=user&filter=model%3Aa&filter=model%3Ab&from=1&to=2');
    expect(readWindow(ranged)).toEqual({ kind: 'range', from: 1, to: 2 });
    expect(writeWindow(ranged, { kind: 'preset', preset: '24h' }).toString()).toBe('group_by=user&filter=model%3Aa&filter=model%3Ab');
    expect(writeWindow(ranged, { kind: 'preset', preset: '7d' }).get('range')).toBe('7d');
  });
  it('round-trips a view through its URL', () => {
    let p = new URLSearchParams();
    p = writeWindow(p, { kind: 'preset', preset: '6h' });
    p = withParam(p, 'group_by', 'tag.team');
    p = withParams(p, 'filter', ['user:alice', 'model:gpt-4o']);
    const url = href('/usage', p);
    const back = new URL(url, 'http://x');
    expect(back.pathname).toBe('/usage');
    expect(readWindow(back.searchParams)).toEqual({ kind: 'preset', preset: '6h' });
    expect(back.searchParams.get('group_by')).toBe('tag.team');
    expect([...readFilters(back.searchParams)]).toEqual([
      ['user', ['alice']],
      ['model', ['gpt-4o']],
    ]);
  });
  it('removes empty parameters and carries only the shared ones across pages', () => {
    expect(withParam(new URLSearchParams('a=1'), 'a', '').toString()).toBe('');
    expect(shared(new URLSearchParams('range=1h&refresh=off&group_by=user&project=p')).toString()).toBe('range=1h&refresh=off&project=p');
    expect(href('/', new URLSearchParams())).toBe('/');
  });
  it('keeps colons inside filter values', () => {
    expect(readFilters(new URLSearchParams('filter=model:ft:gpt-4o:acme&filter=bad'))).toEqual(new Map([['model', ['ft:gpt-4o:acme']]]));
  });
});

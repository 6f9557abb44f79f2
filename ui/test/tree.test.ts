import { describe, expect, it } from 'vitest';
import type { SpanNode } from '../src/api';
import { slowestStep, visibleRows } from '../src/lib/tree';

function span(id: string, self: number, children: SpanNode[] = []): SpanNode {
  return { span_id: id, self_ms: self, children } as unknown as SpanNode;
}

const tree = [span('root', 10, [span('a', 50, [span('a1', 5)]), span('b', 200)]), span('orphan', 1)];

describe('the waterfall rows', () => {
  it('lists spans depth first in order, with their depth', () => {
    expect(visibleRows(tree, new Set()).map((r) => [r.span.span_id, r.depth])).toEqual([
      ['root', 0],
      ['a', 1],
      ['a1', 2],
      ['b', 1],
      ['orphan', 0],
    ]);
  });
  it('leaves out what a collapsed span holds', () => {
    expect(visibleRows(tree, new Set(['a'])).map((r) => r.span.span_id)).toEqual(['root', 'a', 'b', 'orphan']);
    expect(visibleRows(tree, new Set(['root'])).map((r) => r.span.span_id)).toEqual(['root', 'orphan']);
  });
  it('walks a chain thousands deep without recursion', () => {
    let deep = span('leaf', 1);
    for (let i = 0; i < 5000; i++) deep = span(`s${i}`, 1, [deep]);
    expect(visibleRows([deep], new Set())).toHaveLength(5001);
  });
  it('names the step with the most time of its own', () => {
    expect(slowestStep(tree)?.span_id).toBe('b');
    expect(slowestStep([])).toBeNull();
  });
});

// The span tree of a trace as the waterfall walks it. Pure, and iterative:
// traces may nest hundreds of levels deep.

import type { SpanNode } from '../api';

export interface Row {
  span: SpanNode;
  depth: number;
}

/** The spans in display order, skipping the children of collapsed spans. */
export function visibleRows(roots: SpanNode[], collapsed: Set<string>): Row[] {
  const out: Row[] = [];
  const stack: Row[] = roots.map((span) => ({ span, depth: 0 })).reverse();
  while (stack.length) {
    const row = stack.pop()!;
    out.push(row);
    if (collapsed.has(row.span.span_id)) continue;
    for (let i = row.span.children.length - 1; i >= 0; i--) stack.push({ span: row.span.children[i], depth: row.depth + 1 });
  }
  return out;
}

/** The span with the most time of its own: where the run spent its time. */
export function slowestStep(roots: SpanNode[]): SpanNode | null {
  let best: SpanNode | null = null;
  const stack = [...roots];
  while (stack.length) {
    const s = stack.pop()!;
    if (!best || s.self_ms > best.self_ms) best = s;
    stack.push(...s.children);
  }
  return best;
}


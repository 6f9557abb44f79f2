// Small building blocks: numbers with exact tooltips, panels with their
// loading, empty and error states, the stat tile and the data table.

import type { ComponentChildren } from 'preact';
import * as fmt from '../lib/format';

type NumKind = 'cost' | 'count' | 'ms' | 'percent';

const human: Record<NumKind, (v: number | null | undefined) => string> = {
  cost: fmt.cost,
  count: fmt.count,
  ms: fmt.ms,
  percent: fmt.percent,
};
const exact: Record<NumKind, (v: number | null | undefined) => string> = {
  cost: fmt.costExact,
  count: fmt.countExact,
  ms: fmt.msExact,
  percent: (v) => (v == null ? 'no value' : `${v * 100} %`),
};

/** A number for people, its exact value in the tooltip and in `data-value`. */
export function Num({ value, kind, testId }: { value: number | null | undefined; kind: NumKind; testId?: string }) {
  return (
    <span class="num" title={exact[kind](value)} data-value={value ?? ''} data-testid={testId}>
      {human[kind](value)}
    </span>
  );
}

/** A table cell holding a number, right-aligned. */
export function NumCell(props: { value: number | null | undefined; kind: NumKind; testId?: string }) {
  return (
    <td class="n">
      <Num {...props} />
    </td>
  );
}

export function Time({ ms }: { ms: number | null | undefined }) {
  return (
    <time dateTime={ms != null ? new Date(ms).toISOString() : undefined} title={fmt.timeExact(ms)}>
      {fmt.time(ms)}
    </time>
  );
}

interface PanelProps {
  title?: string;
  loading?: boolean;
  error?: Error | null;
  empty?: boolean;
  emptyText?: string;
  actions?: ComponentChildren;
  children?: ComponentChildren;
  class?: string;
  testId?: string;
}

/** A titled panel showing its state: loading, the API's error, empty, or its content. */
export function Panel({ title, loading, error, empty, emptyText, actions, children, class: cls, testId }: PanelProps) {
  let body: ComponentChildren = children;
  if (error) {
    body = (
      <p class="state error" role="alert">
        {error.message}
      </p>
    );
  } else if (loading && empty) {
    body = (
      <p class="state loading" aria-live="polite">
        Loading…
      </p>
    );
  } else if (empty) {
    body = <p class="state empty">{emptyText ?? 'Nothing in this window.'}</p>;
  }
  return (
    <section class={`panel ${cls ?? ''}`} aria-busy={loading ? 'true' : 'false'} data-testid={testId}>
      {(title || actions) && (
        <header class="panel-head">
          {title && <h2>{title}</h2>}
          {actions && <div class="panel-actions">{actions}</div>}
        </header>
      )}
      {body}
    </section>
  );
}

/** A stat tile: its label over a large value, and a note under it when there is one. */
export function Tile({ label, note, children }: { label: string; note?: ComponentChildren; children: ComponentChildren }) {
  return (
    <div class="stat">
      <div class="stat-label">{label}</div>
      <div class="stat-value">{children}</div>
      {note}
    </div>
  );
}

/** A headline number with its change against the previous window. */
export function Stat({ label, value, kind, before, testId, upIsGood = false }: { label: string; value: number | null | undefined; kind: NumKind; before?: number | null; testId?: string; upIsGood?: boolean }) {
  const delta = before != null && value != null ? fmt.change(value, before) : null;
  const good = delta && delta.direction !== 'flat' ? (delta.direction === 'up') === upIsGood : null;
  const note = delta && (
    <div class={`stat-change ${good === null ? '' : good ? 'good' : 'bad'}`} title={`previous window: ${human[kind](before)}`}>
      {delta.text} <span class="muted">vs previous</span>
    </div>
  );
  return (
    <Tile label={label} note={note}>
      <Num value={value} kind={kind} testId={testId} />
    </Tile>
  );
}

/** A horizontal bar for a share (0..1) in a table cell. */
export function Bar({ share, label }: { share: number; label?: string }) {
  const w = Math.max(0, Math.min(1, share)) * 100;
  return (
    <div class="bar" role="img" aria-label={label ?? `${w.toFixed(0)} %`}>
      <div class="bar-fill" style={{ width: `${w}%` }} />
    </div>
  );
}

export function Select({ label, value, options, onChange, id }: { label: string; value: string; options: (string | [string, string])[]; onChange: (v: string) => void; id: string }) {
  return (
    <label class="field" for={id}>
      <span>{label}</span>
      <select id={id} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {options.map((o) => {
          const [v, text] = Array.isArray(o) ? o : [o, o];
          return (
            <option key={v} value={v}>
              {text}
            </option>
          );
        })}
      </select>
    </label>
  );
}

export function TextInput({ label, value, onCommit, id, placeholder }: { label: string; value: string; onCommit: (v: string) => void; id: string; placeholder?: string }) {
  return (
    <label class="field" for={id}>
      <span>{label}</span>
      <input
        id={id}
        type="search"
        value={value}
        placeholder={placeholder}
        onKeyDown={(e) => {
          if (e.key === 'Enter') onCommit((e.target as HTMLInputElement).value.trim());
        }}
        onBlur={(e) => {
          const v = (e.target as HTMLInputElement).value.trim();
          if (v !== value) onCommit(v);
        }}
      />
    </label>
  );
}

/** Back and forward through cursor-paged results: `cursors` are the pages
 *  opened so far (the last is shown), `next` the cursor of the page after. */
export function Pager({ cursors, next, onChange, back, forward }: { cursors: string[]; next: string | null | undefined; onChange: (cursors: string[]) => void; back: string; forward: string }) {
  return (
    <>
      <button type="button" disabled={!cursors.length} onClick={() => onChange(cursors.slice(0, -1))}>
        {back}
      </button>
      <button type="button" disabled={!next} onClick={() => next && onChange([...cursors, next])}>
        {forward}
      </button>
    </>
  );
}

/** A column heading: plain text, or a label (text or a node) that may be a number column (right-aligned). */
export type Column = string | { label: ComponentChildren; numeric?: boolean };

type TableProps = {
  children: ComponentChildren;
  foot?: ComponentChildren;
  testId?: string;
} & ({ columns: Column[] } | { head: ComponentChildren });

/**
 * A scrolling data table: its column headings (or, as `head`, heading cells
 * of its own, such as sort buttons), the rows as children, and an optional
 * footer of rows.
 */
export function Table(props: TableProps) {
  const head =
    'head' in props
      ? props.head
      : props.columns.map((c, i) => {
          const { label, numeric } = typeof c === 'string' ? { label: c, numeric: false } : c;
          return (
            <th key={i} scope="col" class={numeric ? 'n' : undefined}>
              {label}
            </th>
          );
        });
  return (
    <div class="table-wrap">
      <table data-testid={props.testId}>
        <thead>
          <tr>{head}</tr>
        </thead>
        <tbody>{props.children}</tbody>
        {props.foot && <tfoot>{props.foot}</tfoot>}
      </table>
    </div>
  );
}

/** A number column's heading. */
export const numCol = (label: ComponentChildren): Column => ({ label, numeric: true });

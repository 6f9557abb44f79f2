// Usage filters: `filter=DIMENSION:VALUE` parameters in the URL, shown as
// removable chips, with a form to add one.

import { useState } from 'preact/hooks';
import { href, withParams } from '../lib/url';
import { navigate, useLocation } from '../router';

export const DIMENSIONS = ['model', 'provider', 'operation', 'user', 'api_key', 'route', 'status', 'cluster'];

export function UsageFilters({ records = false }: { records?: boolean }) {
  const { path, params } = useLocation();
  const filters = params.getAll('filter');
  const [dim, setDim] = useState('model');
  const [tag, setTag] = useState('');
  const [value, setValue] = useState('');
  const dims = records ? [...DIMENSIONS, 'session'] : DIMENSIONS;
  const set = (next: string[]) => navigate(href(path, withParams(withParams(params, 'filter', next), 'cursor', [])));
  return (
    <div class="filters" data-testid="usage-filters">
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          const name = dim === 'tag' ? `tag.${tag.trim()}` : dim;
          if (name === 'tag.' || !value.trim()) return;
          const f = `${name}:${value.trim()}`;
          if (!filters.includes(f)) set([...filters, f]);
          setValue('');
        }}
      >
        <label class="field" for="filter-dim">
          <span>Filter on</span>
          <select id="filter-dim" value={dim} onChange={(e) => setDim((e.target as HTMLSelectElement).value)}>
            {dims.map((d) => (
              <option key={d} value={d}>
                {d}
              </option>
            ))}
            <option value="tag">tag…</option>
          </select>
        </label>
        {dim === 'tag' && (
          <label class="field" for="filter-tag">
            <span>Tag name</span>
            <input id="filter-tag" value={tag} onInput={(e) => setTag((e.target as HTMLInputElement).value)} placeholder="team" />
          </label>
        )}
        <label class="field" for="filter-value">
          <span>Value</span>
          <input id="filter-value" value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} placeholder="gpt-4o" />
        </label>
        <button type="submit">Add filter</button>
      </form>
      {filters.length > 0 && (
        <ul class="row" aria-label="Active filters" style={{ listStyle: 'none', margin: 0, padding: 0 }}>
          {filters.map((f) => (
            <li key={f}>
              <span class="pill mono">{f}</span>{' '}
              <button type="button" class="link" aria-label={`Remove filter ${f}`} onClick={() => set(filters.filter((x) => x !== f))}>
                remove
              </button>
            </li>
          ))}
          <li>
            <button type="button" class="link" onClick={() => set([])}>
              Clear all
            </button>
          </li>
        </ul>
      )}
    </div>
  );
}

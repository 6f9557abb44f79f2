// Prices: the price each model in use matched (and where it came from: the
// built-in catalog or a `[[prices]]` entry of the config), and the models
// no price matched, with their request counts.

import type { ComponentChildren } from 'preact';
import { api } from '../api';
import { NumCell, numCol, Panel, Table } from '../components/ui';
import { useData, useView, windowParams } from '../view';

interface ModelPrice {
  model: string;
  provider: string | null;
  requests: number;
  unpriced_requests: number;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
  price: {
    price_id: string;
    source: string;
    provider: string | null;
    input_per_token: number;
    output_per_token: number;
    cache_read_per_token: number | null;
    cache_write_per_token: number | null;
    reasoning_per_token: number | null;
  } | null;
}

/** USD per million tokens, as price lists show them. */
function perMillion(perToken: number | null | undefined) {
  if (perToken == null) return <span class="muted">—</span>;
  const v = perToken * 1e6;
  return (
    <span class="num" title={`$${perToken} per token`}>
      ${Number(v.toPrecision(4))}
    </span>
  );
}

/** A model's row: the model and its provider, then the cells given. */
function ModelRow({ m, children }: { m: ModelPrice; children: ComponentChildren }) {
  return (
    <tr data-model={m.model}>
      <th scope="row" class="mono">
        {m.model}
      </th>
      <td>{m.provider ?? '—'}</td>
      {children}
    </tr>
  );
}

export function Prices() {
  const view = useView();
  const w = windowParams(view);
  const data = useData((signal) => api.get<{ models: ModelPrice[] }>('/api/v1/usage/prices', w, signal), [w]);
  const models = data.data?.models ?? [];
  const priced = models.filter((m) => m.price);
  const unpriced = models.filter((m) => !m.price || m.unpriced_requests > 0);
  return (
    <>
      <Panel title="Models in use and the price each matched" loading={data.loading} error={data.error} empty={!priced.length} emptyText="No priced model was used in this window." testId="priced-models">
        <p class="muted">USD per million tokens, as in effect at the window's end.</p>
        <Table columns={['Model', 'Provider', 'Price', 'From', numCol('Input'), numCol('Output'), numCol('Cache read'), numCol('Cache write'), numCol('Requests'), numCol('Cost')]}>
          {priced.map((m) => (
            <ModelRow key={`${m.model}/${m.provider ?? ''}`} m={m}>
              <td class="mono">{m.price!.price_id}</td>
              <td>{m.price!.source === 'config' ? 'your config' : 'built-in catalog'}</td>
              <td class="n">{perMillion(m.price!.input_per_token)}</td>
              <td class="n">{perMillion(m.price!.output_per_token)}</td>
              <td class="n">{perMillion(m.price!.cache_read_per_token)}</td>
              <td class="n">{perMillion(m.price!.cache_write_per_token)}</td>
              <NumCell value={m.requests} kind="count" />
              <NumCell value={m.cost_usd} kind="cost" />
            </ModelRow>
          ))}
        </Table>
      </Panel>
      <Panel title="Unpriced models (counted with cost 0)" loading={data.loading} error={data.error} empty={!unpriced.length} emptyText="Every model used in this window has a price." testId="unpriced-models">
        <p class="muted">Add a <code>[[prices]]</code> entry to the config for these, then re-price the window.</p>
        <Table columns={['Model', 'Provider', numCol('Unpriced requests'), numCol('Input tokens'), numCol('Output tokens')]}>
          {unpriced.map((m) => (
            <ModelRow key={`${m.model}/${m.provider ?? ''}`} m={m}>
              <NumCell value={m.unpriced_requests} kind="count" testId="unpriced-requests" />
              <NumCell value={m.input_tokens} kind="count" />
              <NumCell value={m.output_tokens} kind="count" />
            </ModelRow>
          ))}
        </Table>
      </Panel>
    </>
  );
}

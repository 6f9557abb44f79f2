// End-to-end test of the dashboard in headless Chromium against a real
// Tally server: feeds the fixed data set (dataset.mjs) through the public
// ingest endpoints, then checks that every page shows what the API
// answers, clicks through filters, a trace's waterfall and span panel and
// the budget form, reloads a copied URL, runs axe-core on every page in
// both themes, fails on any console error, and saves screenshots of every
// page at 1280×800 and 390×844 in light and dark.
//
// Usage: node e2e/run.mjs --url http://127.0.0.1:PORT --out DIR [--docs DIR]
// (--docs also writes the README's two screenshots there).

import { mkdirSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { AxeBuilder } from '@axe-core/playwright';
import { launch } from './browser.mjs';
import { arg, assert, assertCost, assertEqual, check, finish, settled, watch as watchPage } from './harness.mjs';
import { ANSWER, BATCH_SPANS, BUDGET, PROMPT, RESEARCH_PROMPT, TRACES, feed } from './dataset.mjs';

const URL_BASE = arg('--url');
const OUT = arg('--out', 'test-output');
const DOCS = arg('--docs');
if (!URL_BASE) {
  console.error('usage: node e2e/run.mjs --url http://127.0.0.1:PORT --out DIR [--docs DIR]');
  process.exit(2);
}
mkdirSync(OUT, { recursive: true });

async function apiGet(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, String(x)));
    else if (v != null) q.set(k, String(v));
  }
  const r = await fetch(`${URL_BASE}${path}?${q}`);
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
  return path.endsWith('.csv') || params.format === 'csv' ? r.text() : r.json();
}

// Independent formatting, as a reader would write the API's numbers down.
const dollars = (v) => {
  assert(v >= 1 && v < 100_000, `the data set should give costs of a few dollars, got ${v}`);
  return `$${v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
};
const integer = (v) => v.toLocaleString('en-US');

// ---------------------------------------------------------------------------

const base = Math.floor(Date.now() / 60_000) * 60_000;
await feed(URL_BASE, base);
const from = base - 3 * 3_600_000;
const to = base + 60_000;
const W = { from, to };
const win = `from=${from}&to=${to}`;
const url = (path, extra = '') => `${URL_BASE}${path}?${win}${extra ? `&${extra}` : ''}`;

/** Console errors, page errors and failed requests, by page. */
const problems = [];
/** While set, a 400 answer is what the step expects (form validation). */
let expectBadRequest = false;
const watch = (page) =>
  watchPage(page, problems, (kind, x) => expectBadRequest && (kind === 'console' ? /status of 400/.test(x.text()) : x.status() === 400));

const browser = await launch();
const page = await browser.context.newPage();
watch(page);

await check('Overview totals equal /api/v1/usage/summary', async () => {
  const api = await apiGet('/api/v1/usage/summary', W);
  await page.goto(url('/'));
  await settled(page);
  const cost = page.getByTestId('total-cost');
  assertEqual(Number(await cost.getAttribute('data-value')), api.total.cost_usd, 'cost data-value');
  assertEqual(await cost.textContent(), dollars(api.total.cost_usd), 'cost as displayed');
  assertEqual(await page.getByTestId('total-requests').textContent(), integer(api.total.requests), 'requests');
  assertEqual(Number(await page.getByTestId('total-output-tokens').getAttribute('data-value')), api.total.output_tokens, 'output tokens');
  const rate = (api.total.errors / api.total.requests) * 100;
  assertEqual(await page.getByTestId('error-rate').textContent(), `${rate.toFixed(1).replace(/\.0$/, '')} %`, 'error rate');
  assertEqual(Number(await page.getByTestId('latency-p95').getAttribute('data-value')), api.total.latency_ms.p95, 'latency p95');
  const top = await apiGet('/api/v1/usage/summary', { ...W, group_by: 'model', limit: 5 });
  const shown = await page.getByTestId('top-model').locator('tbody tr td:first-child').allTextContents();
  assertEqual(shown, top.groups.map((g) => g.key.model), 'top models in order');
  assert((await page.locator('.chart canvas').count()) >= 3, 'three charts drawn');
});

let filteredUrl = null;
await check('Usage: groups equal the API, a filter applies, the CSV is the API\'s', async () => {
  const api = await apiGet('/api/v1/usage/summary', { ...W, group_by: 'user', limit: 100 });
  await page.goto(url('/usage', 'group_by=user'));
  await settled(page);
  const keys = await page.locator('[data-testid=usage-groups] tbody th').allTextContents();
  assertEqual([...keys].sort(), api.groups.map((g) => g.key.user ?? '(none)').sort(), 'user groups');
  assertCost(Number(await page.getByTestId('usage-total-cost_usd').getAttribute('data-value')), api.total.cost_usd, 'total cost');

  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
  const csv = await (await import('node:fs/promises')).readFile(await download.path(), 'utf8');
  assertEqual(csv, await apiGet('/api/v1/usage/summary', { ...W, group_by: 'user', limit: 100, format: 'csv' }), 'CSV download');

  // Click a group to filter on it.
  await page.getByRole('button', { name: 'alice', exact: true }).click();
  await settled(page);
  assert(page.url().includes('filter=user%3Aalice'), `filter in the URL: ${page.url()}`);
  const alice = await apiGet('/api/v1/usage/summary', { ...W, group_by: 'user', filter: 'user:alice' });
  assertCost(Number(await page.getByTestId('usage-total-cost_usd').getAttribute('data-value')), alice.total.cost_usd, 'filtered total');
  const records = await apiGet('/api/v1/usage/records', { ...W, filter: 'user:alice', limit: 50 });
  assertEqual(await page.locator('[data-testid=usage-records] tbody tr').count(), records.records.length, 'records of the selection');

  // Add a second filter through the form.
  await page.locator('#filter-dim').selectOption('model');
  await page.locator('#filter-value').fill('gpt-4o');
  await page.getByRole('button', { name: 'Add filter' }).click();
  await settled(page);
  const both = await apiGet('/api/v1/usage/summary', { ...W, group_by: 'user', filter: ['user:alice', 'model:gpt-4o'] });
  assertCost(Number(await page.getByTestId('usage-total-cost_usd').getAttribute('data-value')), both.total.cost_usd, 'two filters');
  filteredUrl = page.url();
});

await check('A copied URL opens the same view', async () => {
  assert(filteredUrl, 'the usage step set a view');
  const other = await browser.context.newPage();
  watch(other);
  await other.goto(filteredUrl);
  await settled(other);
  const chips = await other.locator('[aria-label="Active filters"] .pill').allTextContents();
  assertEqual(chips, ['user:alice', 'model:gpt-4o'], 'filters');
  assertEqual(await other.locator('#group-by').inputValue(), 'user', 'group-by');
  assertCost(Number(await other.getByTestId('usage-total-cost_usd').getAttribute('data-value')), Number(await page.getByTestId('usage-total-cost_usd').getAttribute('data-value')), 'total');
  assertEqual(await other.getByTestId('window').getAttribute('data-from'), String(from), 'window start');
  await other.close();
});

await check('Traces: the list equals the API, a filter narrows it, the waterfall and span panel show the prompt', async () => {
  const api = await apiGet('/api/v1/traces', W);
  await page.goto(url('/traces'));
  await settled(page);
  const ids = await page.locator('[data-testid=trace-list] tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-trace-id')));
  assertEqual(ids, api.traces.map((t) => t.trace_id), 'trace ids, newest first');

  await page.locator('#f-service').fill('support-agent');
  await page.locator('#f-service').press('Enter');
  await settled(page);
  const narrowed = await apiGet('/api/v1/traces', { ...W, service: 'support-agent' });
  assertEqual(await page.locator('[data-testid=trace-list] tbody tr').count(), narrowed.traces.length, 'filtered list');
  assertEqual(narrowed.traces.length, 1, 'one support trace');

  await page.getByRole('link', { name: 'invoke_agent support' }).click();
  await settled(page);
  const detail = await apiGet(`/api/v1/traces/${TRACES.support}`);
  assertEqual(await page.locator('[data-testid=waterfall] [role=treeitem]').count(), detail.span_count, 'one row per span');
  assertEqual(Number(await page.getByTestId('trace-cost').getAttribute('data-value')), detail.totals.cost_usd, 'trace cost');
  const all = [];
  const walk = (spans) => spans.forEach((s) => (all.push(s), walk(s.children)));
  walk(detail.spans);
  const slowest = all.reduce((a, b) => (b.self_ms > a.self_ms ? b : a));
  assertEqual(await page.getByTestId('slowest-step').textContent(), slowest.name, 'the slowest step by its own time');

  await page.getByTestId('waterfall').getByRole('button', { name: 'chat gpt-4o', exact: true }).click();
  const panel = page.getByTestId('span-panel');
  await panel.getByRole('tab', { name: 'Transcript' }).click();
  const transcript = panel.getByTestId('transcript');
  await transcript.getByText(PROMPT).waitFor();
  await transcript.getByText(ANSWER).waitFor();
  assert(await transcript.getByText('lookup_account').count(), 'the tool call is shown');
  await transcript.getByRole('button', { name: 'Show raw JSON' }).click();
  assert((await transcript.locator('pre').textContent()).includes('gen_ai.input.messages'), 'raw JSON of the messages');
  await panel.getByRole('tab', { name: 'Overview' }).click();
  const llm = detail.spans[0].children.find((s) => s.name === 'chat gpt-4o');
  assertEqual(Number(await panel.getByTestId('span-cost').getAttribute('data-value')), llm.cost_usd, 'span cost');
  await panel.getByRole('tab', { name: /^Logs/ }).click();
  await panel.getByText('looking up account 4417').waitFor();

  // Collapse a subtree, then open the OpenInference trace by its URL.
  await page.getByRole('button', { name: 'Collapse invoke_agent support' }).click();
  assertEqual(await page.locator('[data-testid=waterfall] [role=treeitem]').count(), 1, 'collapsed to the root');
  await page.goto(url(`/traces/${TRACES.research}`, 'span=b000000000000003'));
  await settled(page);
  await page.getByTestId('transcript').getByText(RESEARCH_PROMPT).waitFor();

  // A run of hundreds of spans: every one gets its row, and collapsing works.
  await page.goto(url(`/traces/${TRACES.batch}`));
  await settled(page);
  assertEqual(await page.locator('[data-testid=waterfall] [role=treeitem]').count(), BATCH_SPANS, 'rows of the batch run');
  await page.getByRole('button', { name: 'Collapse step 3', exact: true }).click();
  assertEqual(await page.locator('[data-testid=waterfall] [role=treeitem]').count(), BATCH_SPANS - 9, 'a step collapsed');
});

await check('Sessions equal the API and open a session\'s traces', async () => {
  const api = await apiGet('/api/v1/sessions', W);
  await page.goto(url('/sessions'));
  await settled(page);
  const shown = await page.locator('[data-testid=session-list] tbody tr td:first-child').allTextContents();
  assertEqual(shown, api.sessions.map((s) => s.session), 'sessions');
  await page.getByRole('link', { name: 'conv-research-7' }).click();
  await settled(page);
  await page.getByTestId('session-traces').getByRole('link', { name: 'research agent' }).waitFor();
});

await check('Latency equals /api/v1/traces/latency', async () => {
  const api = await apiGet('/api/v1/traces/latency', { ...W, by: 'model' });
  await page.goto(url('/latency', 'by=model'));
  await settled(page);
  const keys = await page.locator('[data-testid=latency-table] tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-key')));
  assertEqual(keys, api.groups.map((g) => g.key ?? ''), 'groups in order');
  const p50 = await page.locator('[data-testid=latency-table] [data-testid=latency-p50]').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-value'))));
  assertEqual(p50, api.groups.map((g) => g.p50_ms), 'p50 per group');
});

await check('Metrics: grouping draws one series per tag value', async () => {
  const api = await apiGet('/api/v1/metrics/query', { ...W, name: 'processing_time', group_by: 'operation', agg: 'p95', step: '5m' });
  await page.goto(url('/charts', 'name=processing_time&agg=p95&step=5m'));
  await settled(page);
  await page.locator('#metric-group').selectOption('operation');
  // The new query may not have started when the page first looks settled:
  // wait for the URL, then for the chart to be redrawn with its groups.
  await page.waitForURL(/group_by=operation/);
  await settled(page);
  const expected = api.groups.map((g) => `operation=${g.key.operation}`).sort();
  const legend = '[data-testid=metric-chart] .u-legend .u-series:not(:first-child) .u-label';
  await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel).length === n, [legend, expected.length]);
  const labels = await page.locator(legend).allTextContents();
  assertEqual(labels.sort(), expected, 'one series per operation');
});

await check('Budgets: spend equals the API; the form shows errors by field and creates a budget', async () => {
  const status = await apiGet('/api/v1/budgets/status');
  await page.goto(url('/budgets'));
  await settled(page);
  const row = page.locator(`tr[data-budget="${BUDGET.name}"]`);
  const spend = status.budgets.find((b) => b.name === BUDGET.name).spend;
  assertEqual(Number(await row.getByTestId('budget-spend').getAttribute('data-value')), spend, 'spend');

  await page.getByRole('button', { name: 'New budget' }).click();
  const form = page.getByTestId('budget-form');
  await form.getByLabel('Name').fill('bob-weekly');
  await form.getByLabel('Limit per period').fill('-5');
  await form.getByLabel('Scope').fill('user=bob');
  expectBadRequest = true;
  await form.getByRole('button', { name: 'Create budget' }).click();
  await form.locator('#budget-limit-error').waitFor();
  assert((await form.locator('#budget-limit-error').textContent()).includes('above 0'), 'the API\'s message by the limit field');
  await form.getByLabel('Limit per period').fill('5');
  await form.getByLabel('Webhooks').fill('ftp://hooks.example.com/x');
  await form.getByRole('button', { name: 'Create budget' }).click();
  await form.locator('#budget-webhooks-error').waitFor();
  expectBadRequest = false;
  await form.getByLabel('Webhooks').fill('');
  await form.getByRole('button', { name: 'Create budget' }).click();
  await page.locator('tr[data-budget="bob-weekly"]').waitFor();
  const listed = await apiGet('/api/v1/budgets');
  const created = listed.budgets.find((b) => b.name === 'bob-weekly');
  assert(created, 'the API lists the new budget');
  assertEqual(created.scope, { user: 'bob' }, 'its scope');
  assertEqual(created.limit, 5, 'its limit');
});

await check('Logs equal /api/v1/logs and filter by severity', async () => {
  const all = await apiGet('/api/v1/logs', { ...W, limit: 100 });
  await page.goto(url('/logs'));
  await settled(page);
  assertEqual(await page.locator('[data-testid=log-list] tbody tr').count(), all.logs.length, 'all records');
  await page.locator('#log-severity').selectOption('warn');
  await settled(page);
  const warn = await apiGet('/api/v1/logs', { ...W, severity: 'warn', limit: 100 });
  assertEqual(await page.locator('[data-testid=log-list] tbody tr').count(), warn.logs.length, 'warn and above');
  await page.locator(`[data-testid=log-list] a[href*="${TRACES.support}"]`).first().click();
  await settled(page);
  await page.getByTestId('waterfall').waitFor();
});

await check('Prices equal /api/v1/usage/prices', async () => {
  const api = await apiGet('/api/v1/usage/prices', W);
  await page.goto(url('/prices'));
  await settled(page);
  const priced = await page.locator('[data-testid=priced-models] tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-model')));
  assertEqual(priced, api.models.filter((m) => m.price).map((m) => m.model), 'priced models');
  const acme = api.models.find((m) => m.model === 'acme-llm-1');
  assertEqual(Number(await page.locator('[data-testid=unpriced-models] tr[data-model="acme-llm-1"] [data-testid=unpriced-requests]').getAttribute('data-value')), acme.unpriced_requests, 'unpriced requests');
});

// Signing in is e2e/auth.mjs's, against a server with keys; here auth is off.
await check('With auth off the dashboard neither asks for a key nor names one', async () => {
  const who = await apiGet('/api/v1/auth/whoami');
  assertEqual(who, { auth: 'off' }, 'whoami');
  await page.goto(url('/'));
  await settled(page);
  await page.getByTestId('total-cost').waitFor();
  assertEqual(await page.getByTestId('sign-in').count(), 0, 'no key prompt');
  assertEqual(await page.getByTestId('signed-in').count(), 0, 'no key in the header');
});

// Every page, for axe and the screenshots.
const PAGES = [
  ['overview', '/'],
  ['usage', '/usage'],
  ['traces', '/traces'],
  ['trace', `/traces/${TRACES.support}`, 'span=a000000000000003'],
  ['sessions', '/sessions'],
  ['latency', '/latency'],
  ['metrics', '/charts', 'name=processing_time&group_by=operation'],
  ['budgets', '/budgets'],
  ['logs', '/logs'],
  ['prices', '/prices'],
];

await browser.close();

for (const scheme of ['light', 'dark']) {
  for (const [width, height] of [
    [1280, 800],
    [390, 844],
  ]) {
    const b = await launch({ colorScheme: scheme, viewport: { width, height } });
    const p = await b.context.newPage();
    watch(p);
    for (const [name, path, extra] of PAGES) {
      await check(`${name} at ${width}×${height}, ${scheme}: axe finds nothing serious, screenshot saved`, async () => {
        await p.goto(url(path, extra));
        await settled(p);
        await p.waitForTimeout(150);
        const file = join(OUT, `${name}-${width}x${height}-${scheme}.png`);
        await p.screenshot({ path: file, fullPage: true });
        if (DOCS && scheme === 'light' && width === 1280 && (name === 'overview' || name === 'trace')) {
          mkdirSync(DOCS, { recursive: true });
          copyFileSync(file, join(DOCS, `dashboard-${name}.png`));
        }
        // Axe once per theme, at the desktop width.
        if (width === 1280) {
          const result = await new AxeBuilder({ page: p }).analyze();
          const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
          assert(!bad.length, bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')}`).join('\n'));
        }
      });
    }
    await b.close();
  }
}

await check('no console errors, page errors or failed requests on any page', async () => {
  assert(!problems.length, problems.join('\n'));
});

finish();

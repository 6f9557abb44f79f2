// `tally demo` seen in headless Chromium (run by tests/demo.rs once the
// API shows the demo's traffic): the Overview shows today's cost, requests
// and top models, and a trace of each agent opens as a waterfall whose LLM
// span shows its conversation. Fails on any console error.
//
// Usage: node e2e/demo.mjs --url http://127.0.0.1:PORT --agents support,research,coding

import { launch } from './browser.mjs';

function arg(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const URL_BASE = arg('--url');
const AGENTS = (arg('--agents') ?? '').split(',').filter(Boolean);
if (!URL_BASE || !AGENTS.length) {
  console.error('usage: node e2e/demo.mjs --url http://127.0.0.1:PORT --agents A,B,C');
  process.exit(2);
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function apiGet(path, params = {}) {
  const r = await fetch(`${URL_BASE}${path}?${new URLSearchParams(params)}`);
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

/** Every span of a trace detail's tree, depth first. */
function spansOf(nodes, out = []) {
  for (const node of nodes ?? []) {
    out.push(node);
    spansOf(node.children, out);
  }
  return out;
}

const browser = await launch();
const page = await browser.context.newPage();
const consoleErrors = [];
page.on('console', (m) => m.type() === 'error' && consoleErrors.push(`${page.url()}: ${m.text()}`));
page.on('pageerror', (e) => consoleErrors.push(`${page.url()}: ${e.message}`));

try {
  await page.goto(`${URL_BASE}/?range=24h`);
  const cost = page.getByTestId('total-cost');
  await cost.waitFor();
  await page.waitForFunction(() => Number(document.querySelector('[data-testid=total-cost]')?.getAttribute('data-value')) > 0);
  const requests = (await page.getByTestId('total-requests').textContent()).replace(/,/g, '');
  assert(Number(requests) > 0, `the Overview shows ${requests} requests`);
  await page.locator('[data-testid=top-model] tbody tr').first().waitFor();
  console.log(`ok   Overview: ${await cost.textContent()} over ${requests} requests`);

  for (const agent of AGENTS) {
    const list = await apiGet('/api/v1/traces', { since: '24h', 'attr.gen_ai.agent.name': agent, limit: '1' });
    const id = list.traces[0]?.trace_id;
    assert(id, `no ${agent} trace in the API`);
    const detail = await apiGet(`/api/v1/traces/${id}`);
    const spans = spansOf(detail.spans);
    const llm = spans.find((s) => s.kind === 'llm' && s.status !== 'error');
    assert(llm, `${agent} trace ${id} has no answered LLM span`);

    await page.goto(`${URL_BASE}/traces/${id}`);
    const rows = page.locator('[data-testid=waterfall] [role=treeitem]');
    await rows.first().waitFor();
    assert((await rows.count()) === detail.span_count, `${agent}: ${await rows.count()} rows for ${detail.span_count} spans`);
    await page.getByTestId('waterfall').getByRole('button', { name: llm.name, exact: true }).first().click();
    const transcript = page.getByTestId('span-panel').getByTestId('transcript');
    await transcript.waitFor();
    const text = (await transcript.textContent()) ?? '';
    assert(text.trim().length > 20, `${agent}: the LLM span shows no conversation`);
    console.log(`ok   ${agent} trace ${id}: ${detail.span_count} spans, "${llm.name}" shows its messages`);
  }
  assert(!consoleErrors.length, `console errors:\n${consoleErrors.join('\n')}`);
} catch (err) {
  console.log(`FAIL ${err.stack ?? err}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

// The dashboard's speed against a loaded server: opens each page in
// headless Chromium (a fresh profile, so the first page loads the bundle
// cold) and reads the Performance API: first contentful paint, and the
// time of every API request the page makes (start to last byte, as the
// browser saw it). Each page is opened `--runs` times; the first visit and
// the slowest of the later ones are reported.
//
// Usage: node e2e/bench.mjs --url http://127.0.0.1:PORT [--runs 3] [--range 24h]
// (scripts/bench-dashboard loads a store and runs this.)

import { launch } from './browser.mjs';

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
}

const URL_BASE = arg('--url');
const RUNS = Number(arg('--runs', '3'));
const RANGE = arg('--range', '24h');
if (!URL_BASE) {
  console.error('usage: node e2e/bench.mjs --url http://127.0.0.1:PORT [--runs 3] [--range 24h]');
  process.exit(2);
}

const list = await (await fetch(`${URL_BASE}/api/v1/traces?since=${RANGE}&limit=1`)).json();
const traceId = list.traces?.[0]?.trace_id;
const metric = (await (await fetch(`${URL_BASE}/api/v1/metrics/names`)).json()).names?.[0]?.name;

const PAGES = [
  ['Overview', '/'],
  ['Usage', '/usage', 'group_by=model'],
  ['Traces', '/traces'],
  ...(traceId ? [['Trace', `/traces/${traceId}`]] : []),
  ['Sessions', '/sessions'],
  ['Latency', '/latency'],
  ...(metric ? [['Metrics', '/charts', `name=${encodeURIComponent(metric)}`]] : []),
  ['Budgets', '/budgets'],
  ['Logs', '/logs'],
  ['Prices', '/prices'],
];

const browser = await launch();
const results = [];
for (let run = 0; run < RUNS; run++) {
  for (const [name, path, extra] of PAGES) {
    const page = await browser.context.newPage();
    const url = `${URL_BASE}${path}?range=${RANGE}&refresh=off${extra ? `&${extra}` : ''}`;
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForLoadState('networkidle', { timeout: 120_000 });
    await page.waitForFunction(() => !document.querySelector('[aria-busy="true"]'), null, { timeout: 120_000 });
    const timing = await page.evaluate(() => {
      const paint = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
      const api = performance
        .getEntriesByType('resource')
        .filter((e) => new URL(e.name).pathname.startsWith('/api/'))
        .map((e) => ({ path: new URL(e.name).pathname, ms: e.responseEnd - e.startTime }));
      return { fcp: paint ? paint.startTime : null, api };
    });
    const errors = await page.locator('.state.error').allTextContents();
    results.push({ run, name, ...timing, errors });
    await page.close();
  }
}
await browser.close();

const fmt = (v) => (v == null ? '—' : `${v.toFixed(0)} ms`);
console.log('| page | first paint, first visit | first paint, later (slowest) | slowest API request, first visit | slowest API request, later | requests |');
console.log('|---|---|---|---|---|---|');
let worstPaint = 0;
let worstApi = 0;
for (const [name] of PAGES) {
  const runs = results.filter((r) => r.name === name);
  const first = runs[0];
  const later = runs.slice(1);
  const maxApi = (r) => Math.max(0, ...r.api.map((a) => a.ms));
  const slowest = first.api.reduce((a, b) => (b.ms > (a?.ms ?? -1) ? b : a), null);
  const laterPaint = later.length ? Math.max(...later.map((r) => r.fcp ?? 0)) : null;
  const laterApi = later.length ? Math.max(...later.map(maxApi)) : null;
  worstPaint = Math.max(worstPaint, first.fcp ?? 0, laterPaint ?? 0);
  worstApi = Math.max(worstApi, maxApi(first), laterApi ?? 0);
  console.log(`| ${name} | ${fmt(first.fcp)} | ${fmt(laterPaint)} | ${fmt(maxApi(first))} (${slowest?.path ?? '—'}) | ${fmt(laterApi)} | ${first.api.length} |`);
  for (const r of runs) if (r.errors.length) console.log(`  ${name} run ${r.run}: ${r.errors.join('; ')}`);
}
console.log(`\nslowest first paint: ${fmt(worstPaint)}; slowest API request: ${fmt(worstApi)}`);

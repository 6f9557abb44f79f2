// The dashboard against a Tally that asks for API keys, in headless
// Chromium: it asks for a key before showing anything, shows the server's
// reason for a wrong one, then shows exactly one project's data for a read
// key (every number equal to the API's answer with that key, and none of
// the other project's models, users or name anywhere in the page), keeps
// the key across a reload of the tab, forgets it on Sign out, and does the
// same for the second project's key. Axe-core checks the prompt; the only
// failed requests allowed are the 401s of `/api/v1/auth/whoami` that a
// prompt stands for. Screenshots of the prompt and of the signed-in header
// go to --out.
//
// Usage: node e2e/auth.mjs --url http://127.0.0.1:PORT --out DIR
//          --key-a PROJECT=KEY --key-b PROJECT=KEY
// (two read keys of two projects that both hold usage in the last hour).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AxeBuilder } from '@axe-core/playwright';
import { launch } from './browser.mjs';
import { arg, assert, assertCost, assertEqual, check, finish, settled, watch as watchPage } from './harness.mjs';

function projectKey(name) {
  const text = arg(name);
  const at = text ? text.indexOf('=') : -1;
  if (at <= 0) return null;
  return { project: text.slice(0, at), key: text.slice(at + 1) };
}

const URL_BASE = arg('--url');
const OUT = arg('--out') ?? 'test-output';
const A = projectKey('--key-a');
const B = projectKey('--key-b');
if (!URL_BASE || !A || !B) {
  console.error('usage: node e2e/auth.mjs --url http://127.0.0.1:PORT --out DIR --key-a PROJECT=KEY --key-b PROJECT=KEY');
  process.exit(2);
}
mkdirSync(OUT, { recursive: true });

/** GET with a key (or none); the status and the parsed body. */
async function apiWith(key, path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null) q.set(k, String(v));
  const r = await fetch(`${URL_BASE}${path}?${q}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  return { status: r.status, body: await r.json() };
}

async function apiGet(key, path, params = {}) {
  const { status, body } = await apiWith(key, path, params);
  if (status !== 200) throw new Error(`GET ${path} with a key: ${status} ${JSON.stringify(body)}`);
  return body;
}

const integer = (v) => v.toLocaleString('en-US');

// ---------------------------------------------------------------------------

const base = Math.floor(Date.now() / 60_000) * 60_000;
const from = base - 3 * 3_600_000;
const to = base + 60_000;
const W = { from, to };
const url = (path, extra = '') => `${URL_BASE}${path}?from=${from}&to=${to}${extra ? `&${extra}` : ''}`;

/** What each key's project holds, as the API answers that key. */
async function holdings(who) {
  const models = await apiGet(who.key, '/api/v1/usage/summary', { ...W, group_by: 'model', limit: 100 });
  const users = await apiGet(who.key, '/api/v1/usage/summary', { ...W, group_by: 'user', limit: 100 });
  const whoami = await apiGet(who.key, '/api/v1/auth/whoami');
  return {
    ...who,
    whoami,
    total: models.total,
    models: models.groups.map((g) => g.key.model).sort(),
    users: users.groups.map((g) => g.key.user).filter((u) => u != null).sort(),
  };
}

const teamA = await holdings(A);
const teamB = await holdings(B);
for (const t of [teamA, teamB]) {
  assert(t.models.length && t.users.length, `${t.project} should hold usage with models and users: ${JSON.stringify(t)}`);
  assertEqual(t.whoami.project, t.project, `whoami's project for ${t.project}'s key`);
}
const shared = [...teamA.models, ...teamA.users].filter((n) => teamB.models.includes(n) || teamB.users.includes(n));
assert(!shared.length, `the two projects should share no model or user name: ${shared}`);

/** What must never show while `t` is signed in: the other project's names. */
const foreign = (t) => {
  const other = t === teamA ? teamB : teamA;
  return [other.project, ...other.models, ...other.users];
};

/** Failures other than the 401s of whoami, which stand for a prompt. */
const problems = [];

const watch = (page) =>
  watchPage(page, problems, (kind, x) =>
    kind === 'console'
      ? /status of 401/.test(x.text()) && x.location().url.includes('/api/v1/auth/whoami')
      : x.status() === 401 && new URL(x.url()).pathname === '/api/v1/auth/whoami');

async function assertNoForeignText(page, t, where) {
  const text = await page.evaluate(() => document.body.innerText);
  const seen = foreign(t).filter((name) => text.includes(name));
  assert(!seen.length, `${where} signed in to ${t.project} shows ${JSON.stringify(seen)}`);
}

async function axe(page, what) {
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert(!bad.length, `${what}: ${bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')}`).join('\n')}`);
}

async function signIn(page, t) {
  const field = page.getByRole('textbox', { name: 'API key' });
  await field.fill(t.key);
  await page.getByRole('button', { name: 'Use this key' }).click();
  await page.getByTestId('signed-in').waitFor();
  await settled(page);
}

async function assertSignedInAs(page, t) {
  assertEqual(await page.getByTestId('auth-project').textContent(), t.project, 'project in the header');
  assertEqual(await page.getByTestId('auth-scope').textContent(), t.whoami.scope, 'scope in the header');
  assertEqual(await page.getByTestId('auth-key').textContent(), t.whoami.name ?? t.whoami.key_id, 'key in the header');
  assertEqual(await page.getByTestId('sign-in').count(), 0, 'no prompt while signed in');
}

/** Overview, Usage by model and by user, and Prices show `t`'s data and nothing of the other's. */
async function assertShowsOnly(page, t) {
  await page.goto(url('/'));
  await settled(page);
  await assertSignedInAs(page, t);
  assertEqual(Number(await page.getByTestId('total-cost').getAttribute('data-value')), t.total.cost_usd, 'Overview cost');
  assertEqual(await page.getByTestId('total-requests').textContent(), integer(t.total.requests), 'Overview requests');
  assertEqual(Number(await page.getByTestId('total-output-tokens').getAttribute('data-value')), t.total.output_tokens, 'Overview output tokens');
  const top = await page.getByTestId('top-model').locator('tbody tr td:first-child').allTextContents();
  assertEqual([...top].sort(), t.models, 'Overview top models (each project has fewer than 5)');
  await assertNoForeignText(page, t, 'the Overview');

  for (const [dim, names] of [
    ['model', t.models],
    ['user', t.users],
  ]) {
    await page.goto(url('/usage', `group_by=${dim}`));
    await settled(page);
    const keys = await page.locator('[data-testid=usage-groups] tbody th').allTextContents();
    assertEqual(keys.filter((k) => k !== '(none)').sort(), names, `Usage groups by ${dim}`);
    assertCost(Number(await page.getByTestId('usage-total-cost_usd').getAttribute('data-value')), t.total.cost_usd, `Usage total by ${dim}`);
    await assertNoForeignText(page, t, `Usage by ${dim}`);
  }

  const prices = await apiGet(t.key, '/api/v1/usage/prices', W);
  await page.goto(url('/prices'));
  await settled(page);
  const priced = await page.locator('[data-testid=priced-models] tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-model')));
  assertEqual(priced, prices.models.filter((m) => m.price).map((m) => m.model), 'priced models');
  const unpriced = await page.locator('[data-testid=unpriced-models] tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-model')));
  assertEqual(unpriced, prices.models.filter((m) => m.unpriced_requests > 0).map((m) => m.model), 'unpriced models');
  assertEqual([...new Set([...priced, ...unpriced])].sort(), t.models, 'the models on Prices');
  await assertNoForeignText(page, t, 'Prices');
}

const browser = await launch();
const page = await browser.context.newPage();
watch(page);

await check('Without a key the dashboard asks for one and shows no data', async () => {
  const refused = await apiWith(null, '/api/v1/usage/summary', W);
  assertEqual(refused.status, 401, 'the API without a key');
  await page.goto(url('/'));
  await page.getByTestId('sign-in').waitFor();
  await settled(page);
  const field = page.getByRole('textbox', { name: 'API key' });
  assert(await field.evaluate((el) => el === document.activeElement), 'the key field has the focus');
  assertEqual(await page.locator('.panel:not(.sign-in)').count(), 0, 'no data panel');
  assertEqual(await page.getByTestId('signed-in').count(), 0, 'no key in the header');
  const text = await page.evaluate(() => document.body.innerText);
  const leaked = [...foreign(teamA), ...foreign(teamB)].filter((n) => text.includes(n));
  assert(!leaked.length, `the prompt shows ${JSON.stringify(leaked)}`);
  await page.screenshot({ path: join(OUT, 'auth-prompt-1280x800-light.png'), fullPage: true });
});

await check('Axe finds nothing serious on the prompt', async () => {
  await axe(page, 'the prompt');
});

await check("A wrong key shows the server's 401 message by the field and keeps the prompt", async () => {
  const wrong = 'tally_read_nosuchkey_0000000000000000';
  const answer = await apiWith(wrong, '/api/v1/auth/whoami');
  assertEqual(answer.status, 401, 'whoami with a wrong key');
  const field = page.getByRole('textbox', { name: 'API key' });
  await field.fill(wrong);
  await field.press('Enter');
  const error = page.getByTestId('api-key-error');
  await error.waitFor();
  assertEqual(await error.textContent(), answer.body.error.message, 'the message shown');
  assertEqual(await field.getAttribute('aria-invalid'), 'true', 'the field is marked invalid');
  assert((await field.getAttribute('aria-describedby')).includes('api-key-error'), 'the field names its error');
  assertEqual(await page.getByTestId('signed-in').count(), 0, 'not signed in');
  assertEqual(await page.evaluate(() => sessionStorage.length), 0, 'the wrong key is not kept');
  await axe(page, 'the prompt with its error');
});

await check(`${teamA.project}'s read key: the header names it, the panels load with its data`, async () => {
  await signIn(page, teamA);
  await assertSignedInAs(page, teamA);
  // The page the prompt stood on loaded its panels without a reload.
  assertEqual(Number(await page.getByTestId('total-cost').getAttribute('data-value')), teamA.total.cost_usd, 'Overview cost after signing in');
  await page.locator('.shell > header').screenshot({ path: join(OUT, 'auth-signed-in-header-1280x800-light.png') });
  await page.screenshot({ path: join(OUT, 'auth-signed-in-1280x800-light.png'), fullPage: true });
  await axe(page, 'the Overview signed in');
});

await check(`${teamA.project} only: Overview, Usage by model and user, and Prices equal the API with its key`, async () => {
  await assertShowsOnly(page, teamA);
});

await check('A reload of the tab keeps the key', async () => {
  await page.reload();
  await page.getByTestId('signed-in').waitFor();
  await settled(page);
  await assertSignedInAs(page, teamA);
  await page.getByTestId('priced-models').waitFor();
});

await check(`The key's project wins over the address's project=${teamB.project}`, async () => {
  await page.goto(url('/usage', `group_by=model&project=${encodeURIComponent(teamB.project)}`));
  await settled(page);
  await page.getByTestId('project-note').waitFor();
  assert((await page.getByTestId('project-note').textContent()).includes(teamA.project), 'the note names the key\'s project');
  const keys = await page.locator('[data-testid=usage-groups] tbody th').allTextContents();
  assertEqual(keys.sort(), teamA.models, 'the groups are the key\'s project\'s');
});

await check('Sign out forgets the key and asks again', async () => {
  await page.goto(url('/'));
  await settled(page);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByTestId('sign-in').waitFor();
  assertEqual(await page.getByTestId('signed-in').count(), 0, 'no key in the header');
  assertEqual(await page.evaluate(() => sessionStorage.length), 0, 'nothing kept');
  assertEqual(await page.locator('.panel:not(.sign-in)').count(), 0, 'no data panel');
  assert(await page.getByRole('textbox', { name: 'API key' }).evaluate((el) => el === document.activeElement), 'the key field has the focus');
  await page.reload();
  await page.getByTestId('sign-in').waitFor();
  await settled(page);
  assertEqual(await page.getByTestId('signed-in').count(), 0, 'still signed out after a reload');
});

await check(`${teamB.project}'s read key shows ${teamB.project} only`, async () => {
  await signIn(page, teamB);
  await assertSignedInAs(page, teamB);
  await assertShowsOnly(page, teamB);
});

await browser.close();

await check('no console errors, page errors or failed requests but the 401s of whoami', async () => {
  assert(!problems.length, problems.join('\n'));
});

finish();

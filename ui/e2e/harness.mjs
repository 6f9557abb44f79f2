// What the browser tests share: command-line arguments, named checks that
// are counted and reported, assertions, a watch on each page for console
// errors, page errors and failed requests, and waiting for panels to settle.

export function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
}

const results = { passed: 0, failed: 0, failures: [] };

/** Runs one named check; a failure is reported and counted, not thrown. */
export async function check(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.passed++;
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.failed++;
    results.failures.push(name);
    console.log(`FAIL ${name}: ${err.stack ?? err}`);
  }
}

/** Prints the counts and exits non-zero when a check failed. */
export function finish() {
  console.log(`${results.passed} passed, ${results.failed} failed`);
  if (results.failed) {
    console.log(`failed: ${results.failures.join('; ')}`);
    process.exit(1);
  }
}

export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

export function assertEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: got ${a}, expected ${e}`);
}

/**
 * A sum of dollars, as two answers may round it: the server adds costs in
 * no fixed order, so the same calls may sum a last bit apart.
 */
export function assertCost(actual, expected, what) {
  if (!(Math.abs(actual - expected) <= 1e-9 * Math.max(1, Math.abs(expected)))) {
    throw new Error(`${what}: got ${actual}, expected ${expected}`);
  }
}

/**
 * Collects console errors, page errors and failed requests of `page` into
 * `problems`, except what `expected(kind, detail)` says a step expects
 * (kind: 'console' with the message and its URL, or 'response' with the
 * response).
 */
export function watch(page, problems, expected = () => false) {
  page.on('console', (m) => {
    if (m.type() !== 'error' || expected('console', m)) return;
    problems.push(`${page.url()}: console error: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => problems.push(`${page.url()}: page error: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400 && !expected('response', r)) problems.push(`${page.url()}: ${r.status()} for ${r.url()}`);
  });
}

/** Waits until no panel is loading and the network is quiet. */
export async function settled(page) {
  // After a click or a selection the app re-renders and starts its queries
  // in effects: let two frames pass (and a little time) so that panels are
  // marked busy before they are waited for.
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  await page.waitForTimeout(50);
  await page.waitForLoadState('networkidle');
  await page.waitForFunction(() => !document.querySelector('[aria-busy="true"]') && !document.querySelector('.state.loading'), null, { timeout: 60_000 });
}

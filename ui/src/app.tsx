// The shell: navigation, the window picker, auto-refresh, signing in with
// an API key when the server asks for one, and the page the path names.

import type { ComponentChildren } from 'preact';
import { useEffect, useMemo, useReducer, useState } from 'preact/hooks';
import { ApiError, apiKey, onUnauthorized, setApiKey, whoami } from './api';
import { INITIAL_AUTH, authReducer, effectiveProject, keyIdentity, parseWhoAmI } from './lib/auth';
import { SignIn, SignedInAs } from './components/SignIn';
import * as fmt from './lib/format';
import { PRESETS, type WindowSpec, fromLocalInput, resolve, toLocalInput, describe } from './lib/time';
import { href, readWindow, shared, withParam, writeWindow } from './lib/url';
import { navigate, onLinkClick, useLocation } from './router';
import { ViewContext, type View } from './view';
import { Overview } from './pages/Overview';
import { Usage } from './pages/Usage';
import { Traces } from './pages/Traces';
import { TraceView } from './pages/TraceView';
import { Sessions, SessionView } from './pages/Sessions';
import { Latency } from './pages/Latency';
import { Metrics } from './pages/Metrics';
import { Budgets } from './pages/Budgets';
import { Logs } from './pages/Logs';
import { Prices } from './pages/Prices';

/** Seconds between auto-refreshes. */
const REFRESH_S = 30;

const PAGES: [string, string][] = [
  ['/', 'Overview'],
  ['/usage', 'Usage'],
  ['/traces', 'Traces'],
  ['/sessions', 'Sessions'],
  ['/latency', 'Latency'],
  ['/charts', 'Metrics'],
  ['/budgets', 'Budgets'],
  ['/logs', 'Logs'],
  ['/prices', 'Prices'],
];

function page(path: string): { title: string; body: ComponentChildren } {
  const trace = /^\/traces\/([0-9a-fA-F]{1,64})\/?$/.exec(path);
  if (trace) return { title: 'Trace', body: <TraceView traceId={trace[1].toLowerCase()} /> };
  const session = /^\/sessions\/(.+)$/.exec(path);
  if (session) return { title: 'Session', body: <SessionView session={decodeURIComponent(session[1])} /> };
  switch (path.replace(/\/$/, '') || '/') {
    case '/':
      return { title: 'Overview', body: <Overview /> };
    case '/usage':
      return { title: 'Usage', body: <Usage /> };
    case '/traces':
      return { title: 'Traces', body: <Traces /> };
    case '/sessions':
      return { title: 'Sessions', body: <Sessions /> };
    case '/latency':
      return { title: 'Latency', body: <Latency /> };
    case '/charts':
      return { title: 'Metrics', body: <Metrics /> };
    case '/budgets':
      return { title: 'Budgets', body: <Budgets /> };
    case '/logs':
      return { title: 'Logs', body: <Logs /> };
    case '/prices':
      return { title: 'Prices', body: <Prices /> };
    default:
      return { title: 'Not found', body: <p class="state empty">No page at {path}. Pick one from the menu.</p> };
  }
}

export function App() {
  const { path, params } = useLocation();
  const spec = readWindow(params);
  const live = params.get('refresh') !== 'off' && spec.kind === 'preset';
  const [tick, setTick] = useState(0);
  const [now, setNow] = useState(() => Date.now());
  const [auth, dispatch] = useReducer(authReducer, INITIAL_AUTH);

  // Who the kept key (or no key) is, before any page asks for data.
  useEffect(() => {
    let current = true;
    const kept = apiKey();
    whoami(kept).then(
      (answer) => {
        if (!current) return;
        try {
          dispatch({ type: 'identified', identity: parseWhoAmI(answer) });
        } catch {
          dispatch({ type: 'unknown' });
        }
      },
      (err: Error) => {
        if (!current) return;
        if (err instanceof ApiError && err.status === 401) {
          if (kept) setApiKey(null);
          dispatch({ type: 'refused', message: kept ? `The key kept for this tab was refused: ${err.message}` : null });
        } else dispatch({ type: 'unknown' });
      },
    );
    return () => {
      current = false;
    };
  }, []);
  // A panel answered 401: the key in use stopped working (revoked, expired).
  useEffect(
    () =>
      onUnauthorized((message, key) => {
        if (key !== apiKey()) return;
        setApiKey(null);
        dispatch({ type: 'refused', message: key ? `The server refused the key: ${message}` : null });
      }),
    [],
  );
  // Auto-refresh: a new tick moves a preset window to the clock.
  useEffect(() => {
    if (!live) return;
    const timer = setInterval(() => {
      if (document.visibilityState === 'hidden') return;
      setNow(Date.now());
      setTick((t) => t + 1);
    }, REFRESH_S * 1000);
    return () => clearInterval(timer);
  }, [live]);
  const specKey = JSON.stringify(spec);
  const window = useMemo(() => resolve(spec, now), [specKey, now]);
  const identity = auth.phase === 'in' ? auth.identity : null;
  const signedIn = keyIdentity(auth);
  const { project, ignored } = effectiveProject(params.get('project'), identity);
  const view: View = { spec, window, tick, live, project };
  const { title, body } = page(path);
  useEffect(() => {
    document.title = `${title} · Tally`;
  }, [title]);

  const refresh = () => {
    setNow(Date.now());
    setTick((t) => t + 1);
  };
  const setSpec = (next: WindowSpec) => {
    setNow(Date.now());
    navigate(href(path, writeWindow(params, next)));
  };
  const section = '/' + (path.split('/')[1] ?? '');
  /** Tries `key`; keeps it and shows the pages when the server takes it. */
  const signIn = async (key: string): Promise<string | null> => {
    let answer: unknown;
    try {
      answer = await whoami(key);
    } catch (err) {
      return (err as Error).message;
    }
    let who;
    try {
      who = parseWhoAmI(answer);
    } catch (err) {
      return (err as Error).message;
    }
    setApiKey(key);
    dispatch({ type: 'identified', identity: who });
    refresh();
    return null;
  };
  const signOut = () => {
    setApiKey(null);
    dispatch({ type: 'sign-out' });
  };

  let content: ComponentChildren;
  if (auth.phase === 'checking') {
    content = (
      <p class="state loading" aria-live="polite">
        Checking access…
      </p>
    );
  } else if (auth.phase === 'signed-out') {
    content = <SignIn refused={auth.error} onSubmit={signIn} />;
  } else {
    content = (
      <>
        {ignored && (
          <p class="note" role="status" data-testid="project-note">
            This key reads project <strong>{project}</strong> only: the address's <code>project={ignored}</code> is not used.
          </p>
        )}
        {body}
      </>
    );
  }

  return (
    <ViewContext.Provider value={view}>
      <div class="shell" onClick={onLinkClick as unknown as (e: Event) => void}>
        <header>
        <a class="skip" href="#main">
          Skip to content
        </a>
        <div class="top">
          <a class="brand" href={href('/', shared(params))}>
            Tally
          </a>
          <nav aria-label="Pages">
            <ul>
              {PAGES.map(([p, name]) => (
                <li key={p}>
                  <a href={href(p, shared(params))} aria-current={section === p ? 'page' : undefined}>
                    {name}
                  </a>
                </li>
              ))}
            </ul>
          </nav>
          {signedIn && <SignedInAs identity={signedIn} onSignOut={signOut} />}
        </div>
        <div class="toolbar" role="toolbar" aria-label="Time window and refresh">
          <WindowPicker spec={spec} onChange={setSpec} />
          <span class="zone" title="Times are shown in this time zone">
            {fmt.zoneName()}
          </span>
          <span class="window-text muted" data-testid="window" data-from={window.from} data-to={window.to}>
            {describe(spec, fmt.time)}
          </span>
          <span class="spacer" />
          <button type="button" onClick={refresh} title="Load every panel again">
            Refresh
          </button>
          <button
            type="button"
            aria-pressed={!live}
            disabled={spec.kind === 'range'}
            title={spec.kind === 'range' ? 'A fixed range does not move' : `Panels reload every ${REFRESH_S} s`}
            onClick={() => navigate(href(path, withParam(params, 'refresh', live ? 'off' : null)), true)}
          >
            {live ? 'Pause auto-refresh' : 'Resume auto-refresh'}
          </button>
        </div>
        </header>
        <main id="main" tabIndex={-1}>
          <h1 class="page-title">{title}</h1>
          {content}
        </main>
      </div>
    </ViewContext.Provider>
  );
}

function WindowPicker({ spec, onChange }: { spec: WindowSpec; onChange: (s: WindowSpec) => void }) {
  const [custom, setCustom] = useState(spec.kind === 'range');
  const now = Date.now();
  const [from, setFrom] = useState(toLocalInput(spec.kind === 'range' ? spec.from : now - 3_600_000));
  const [to, setTo] = useState(toLocalInput(spec.kind === 'range' ? spec.to : now));
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (spec.kind === 'range') {
      setFrom(toLocalInput(spec.from));
      setTo(toLocalInput(spec.to));
      setCustom(true);
    }
  }, [JSON.stringify(spec)]);
  const value = custom ? 'custom' : spec.kind === 'preset' ? spec.preset : 'custom';
  return (
    <form
      class="window-picker"
      onSubmit={(e) => {
        e.preventDefault();
        const f = fromLocalInput(from);
        const t = fromLocalInput(to);
        if (f == null || t == null) return setError('Enter both times.');
        if (t <= f) return setError('The end must come after the start.');
        setError(null);
        onChange({ kind: 'range', from: f, to: t });
      }}
    >
      <label class="field inline" for="window-preset">
        <span>Window</span>
        <select
          id="window-preset"
          value={value}
          onChange={(e) => {
            const v = (e.target as HTMLSelectElement).value;
            if (v === 'custom') setCustom(true);
            else {
              setCustom(false);
              onChange({ kind: 'preset', preset: v as (typeof PRESETS)[number] });
            }
          }}
        >
          {PRESETS.map((p) => (
            <option key={p} value={p}>
              Last {p.replace(/(\d+)/, '$1 ')}
            </option>
          ))}
          <option value="custom">Custom range…</option>
        </select>
      </label>
      {custom && (
        <>
          <label class="field inline" for="window-from">
            <span>From</span>
            <input id="window-from" type="datetime-local" value={from} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />
          </label>
          <label class="field inline" for="window-to">
            <span>To</span>
            <input id="window-to" type="datetime-local" value={to} onInput={(e) => setTo((e.target as HTMLInputElement).value)} />
          </label>
          <button type="submit">Apply</button>
          {error && (
            <span class="field-error" role="alert">
              {error}
            </span>
          )}
        </>
      )}
    </form>
  );
}

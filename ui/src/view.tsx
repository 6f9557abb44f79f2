// The view every panel shares: the window (as the URL names it and as
// resolved at the last refresh), the refresh tick, and the data hook that
// gives each panel its loading, error and data states.

import { createContext } from 'preact';
import { useContext, useEffect, useRef, useState } from 'preact/hooks';
import type { Window, WindowSpec } from './lib/time';

export interface View {
  spec: WindowSpec;
  window: Window;
  /** Increments at each auto-refresh and manual refresh. */
  tick: number;
  /** Whether auto-refresh is on (and the window moves with the clock). */
  live: boolean;
  project: string | null;
}

export const ViewContext = createContext<View>(null as unknown as View);

export function useView(): View {
  return useContext(ViewContext);
}

export interface Data<T> {
  data: T | null;
  error: Error | null;
  loading: boolean;
  reload: () => void;
}

/**
 * Runs `load` when `deps` change or the view refreshes; the previous data
 * stays shown while a refresh is in flight, and a stale answer never
 * replaces a newer one.
 */
export function useData<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Data<T> {
  const { tick } = useView();
  const [state, setState] = useState<{ data: T | null; error: Error | null; loading: boolean }>({ data: null, error: null, loading: true });
  const [reloads, setReloads] = useState(0);
  const key = JSON.stringify(deps);
  const lastKey = useRef<string | null>(null);
  useEffect(() => {
    const controller = new AbortController();
    const sameQuery = lastKey.current === key;
    lastKey.current = key;
    setState((s) => ({ data: sameQuery ? s.data : null, error: sameQuery ? s.error : null, loading: true }));
    load(controller.signal).then(
      (data) => {
        if (!controller.signal.aborted) setState({ data, error: null, loading: false });
      },
      (error: Error) => {
        if (controller.signal.aborted || error.name === 'AbortError') return;
        setState((s) => ({ data: sameQuery ? s.data : null, error, loading: false }));
      },
    );
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, tick, reloads]);
  return { ...state, reload: () => setReloads((r) => r + 1) };
}

/** The window and project as API parameters. */
export function windowParams(view: View): { from: number; to: number; project?: string } {
  const p: { from: number; to: number; project?: string } = { from: Math.floor(view.window.from), to: Math.ceil(view.window.to) };
  if (view.project) p.project = view.project;
  return p;
}

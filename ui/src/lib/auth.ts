// Signing in with an API key: what `/api/v1/auth/whoami` answers, the
// states the shell moves through (checking, signed out, signed in), the
// check a typed key gets before it is sent, and which project the panels
// ask for when a key is bound to one.

/** Who the dashboard acts as: no auth on this server, or a key. */
export type Identity =
  | { auth: 'off' }
  | { auth: 'on'; keyId: string; project: string; scope: string; name: string | null };

/** Longest key text sent: Tally's keys are far shorter; a paste of a page is not a key. */
export const KEY_MAX_CHARS = 512;

/** Reads a `/api/v1/auth/whoami` answer; throws on anything else. */
export function parseWhoAmI(json: unknown): Identity {
  const o = json as Record<string, unknown> | null;
  if (o && o.auth === 'off') return { auth: 'off' };
  if (o && o.auth === 'on' && typeof o.key_id === 'string' && typeof o.project === 'string' && typeof o.scope === 'string') {
    const name = typeof o.name === 'string' && o.name.trim() !== '' ? o.name : null;
    return { auth: 'on', keyId: o.key_id, project: o.project, scope: o.scope, name };
  }
  throw new Error(`the server's /api/v1/auth/whoami answer is not one this dashboard reads: ${JSON.stringify(json)?.slice(0, 200)}`);
}

/** Why a typed key cannot be sent, or null when it can (the server judges the rest). */
export function keyInputError(text: string): string | null {
  const key = text.trim();
  if (!key) return 'Enter a key.';
  if (key.length > KEY_MAX_CHARS) return `A key is at most ${KEY_MAX_CHARS} characters; this is ${key.length}.`;
  // A header value carries visible ASCII only; fetch would refuse the rest.
  if (!/^[\x21-\x7e]+$/.test(key)) return 'A key has no spaces and only plain ASCII letters, digits and signs.';
  return null;
}

/** The shell's sign-in state. */
export type AuthState =
  /** Asking the server who the stored key (or no key) is. */
  | { phase: 'checking' }
  /** The server wants a key; `error` says why the last one was refused. */
  | { phase: 'signed-out'; error: string | null }
  /** Pages may load: as `identity`, or unknown when the server could not say. */
  | { phase: 'in'; identity: Identity | null };

export type AuthEvent =
  /** The server said who the key (or no key) is. */
  | { type: 'identified'; identity: Identity }
  /** The server wants a key; `message` says why a key was refused (null: none was sent). */
  | { type: 'refused'; message: string | null }
  /** Whoami failed otherwise (network, an older server): let the pages show their own errors. */
  | { type: 'unknown' }
  | { type: 'sign-out' };

export const INITIAL_AUTH: AuthState = { phase: 'checking' };

export function authReducer(state: AuthState, event: AuthEvent): AuthState {
  switch (event.type) {
    case 'identified':
      return { phase: 'in', identity: event.identity };
    case 'refused':
      return { phase: 'signed-out', error: event.message };
    case 'unknown':
      return state.phase === 'checking' ? { phase: 'in', identity: null } : state;
    case 'sign-out':
      return { phase: 'signed-out', error: null };
  }
}

/** The signed-in key, when there is one. */
export function keyIdentity(state: AuthState): Extract<Identity, { auth: 'on' }> | null {
  return state.phase === 'in' && state.identity?.auth === 'on' ? state.identity : null;
}

/**
 * The project the panels ask for. A key reads only its own project, so its
 * project wins over the URL's `project=`; `ignored` is the URL's when it
 * named another, so the page can say so.
 */
export function effectiveProject(urlProject: string | null, identity: Identity | null): { project: string | null; ignored: string | null } {
  const url = urlProject && urlProject.trim() !== '' ? urlProject : null;
  if (identity?.auth !== 'on') return { project: url, ignored: null };
  return { project: identity.project, ignored: url !== null && url !== identity.project ? url : null };
}

/** How the header names the key: its name, else its id. */
export function keyLabel(identity: Extract<Identity, { auth: 'on' }>): string {
  return identity.name ?? identity.keyId;
}

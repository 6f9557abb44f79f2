// Signing in with an API key: the form that asks for one (in place of the
// page while the server wants a key) and the header's note of the key in
// use, with its project and scope, and the button that forgets it.

import { useEffect, useRef, useState } from 'preact/hooks';
import { type Identity, keyInputError, keyLabel } from '../lib/auth';

/**
 * Asks for a key. `onSubmit` tries it and resolves to the reason it was
 * refused, or null when it was taken; `refused` is why a kept key stopped
 * working, shown until the next try.
 */
export function SignIn({ refused, onSubmit }: { refused: string | null; onSubmit: (key: string) => Promise<string | null> }) {
  const input = useRef<HTMLInputElement>(null);
  const [error, setError] = useState<string | null>(refused);
  const [busy, setBusy] = useState(false);
  useEffect(() => input.current?.focus(), []);
  useEffect(() => setError(refused), [refused]);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    const text = input.current?.value ?? '';
    const invalid = keyInputError(text);
    if (invalid) {
      setError(invalid);
      input.current?.focus();
      return;
    }
    setBusy(true);
    const why = await onSubmit(text.trim());
    // Taken: the form is gone, and with it this state.
    if (why === null) return;
    setBusy(false);
    setError(why);
    input.current?.select();
  };

  return (
    <section class="panel sign-in" aria-labelledby="sign-in-title" data-testid="sign-in">
      <form onSubmit={submit} aria-busy={busy ? 'true' : 'false'} noValidate>
        <h2 id="sign-in-title">This Tally asks for an API key</h2>
        <p id="api-key-help" class="muted">
          Enter a key that <code>tally keys create</code> printed (scope read or admin). It is kept for this browser tab only and sent as{' '}
          <code>Authorization: Bearer</code>; the dashboard then shows that key's project.
        </p>
        <label class="field" for="api-key">
          <span>API key</span>
          <input
            id="api-key"
            ref={input}
            type="password"
            autoComplete="off"
            spellcheck={false}
            aria-invalid={error ? 'true' : 'false'}
            aria-describedby={error ? 'api-key-error api-key-help' : 'api-key-help'}
          />
        </label>
        {error && (
          <p id="api-key-error" class="field-error" role="alert" data-testid="api-key-error">
            {error}
          </p>
        )}
        <div class="row">
          <button type="submit" class="primary">
            {busy ? 'Checking…' : 'Use this key'}
          </button>
        </div>
      </form>
    </section>
  );
}

/** The key in use: its project, scope and name (its id when unnamed), and Sign out. */
export function SignedInAs({ identity, onSignOut }: { identity: Extract<Identity, { auth: 'on' }>; onSignOut: () => void }) {
  return (
    <div class="signed-in" data-testid="signed-in">
      <span>
        Project <strong data-testid="auth-project">{identity.project}</strong>
      </span>
      <span>
        Scope <strong data-testid="auth-scope">{identity.scope}</strong>
      </span>
      <span class="muted" title={`key ${identity.keyId}`}>
        Key <span data-testid="auth-key">{keyLabel(identity)}</span>
      </span>
      <button type="button" onClick={onSignOut}>
        Sign out
      </button>
    </div>
  );
}

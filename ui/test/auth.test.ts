import { describe, expect, it } from 'vitest';
import { INITIAL_AUTH, KEY_MAX_CHARS, type AuthState, authReducer, effectiveProject, keyIdentity, keyInputError, keyLabel, parseWhoAmI } from '../src/lib/auth';

const teamA = { auth: 'on', key_id: 'k7f3a', project: 'team-a', scope: 'read', name: 'ci-dashboard' };

describe('whoami answers', () => {
  it('reads auth off, and a key with its project, scope and name', () => {
    expect(parseWhoAmI({ auth: 'off' })).toEqual({ auth: 'off' });
    expect(parseWhoAmI(teamA)).toEqual({ auth: 'on', keyId: 'k7f3a', project: 'team-a', scope: 'read', name: 'ci-dashboard' });
  });
  it('takes a missing or blank name as none, and names the key by its id then', () => {
    const unnamed = parseWhoAmI({ ...teamA, name: null });
    expect(unnamed).toMatchObject({ name: null });
    expect(parseWhoAmI({ ...teamA, name: '  ' })).toMatchObject({ name: null });
    expect(parseWhoAmI({ auth: 'on', key_id: 'k1', project: 'p', scope: 'admin' })).toMatchObject({ name: null });
    if (unnamed.auth !== 'on') throw new Error('a key');
    expect(keyLabel(unnamed)).toBe('k7f3a');
    const named = parseWhoAmI(teamA);
    if (named.auth !== 'on') throw new Error('a key');
    expect(keyLabel(named)).toBe('ci-dashboard');
  });
  it('refuses answers it cannot read', () => {
    expect(() => parseWhoAmI(null)).toThrow(/whoami/);
    expect(() => parseWhoAmI({})).toThrow(/whoami/);
    expect(() => parseWhoAmI({ auth: 'on', project: 'p', scope: 'read' })).toThrow(/whoami/);
    expect(() => parseWhoAmI({ ...teamA, project: 7 })).toThrow(/whoami/);
    expect(() => parseWhoAmI('<html>')).toThrow(/whoami/);
  });
});

describe('a typed key', () => {
  it('is sent when it is visible ASCII of a bounded length', () => {
    expect(keyInputError('tally_read_k7f3a_Zm9vYmFy')).toBeNull();
    expect(keyInputError('  tally_read_k7f3a_Zm9vYmFy\n')).toBeNull();
    expect(keyInputError('x'.repeat(KEY_MAX_CHARS))).toBeNull();
  });
  it('is refused with a reason when empty, too long, spaced or not ASCII', () => {
    expect(keyInputError('')).toMatch(/Enter a key/);
    expect(keyInputError('   ')).toMatch(/Enter a key/);
    expect(keyInputError('x'.repeat(KEY_MAX_CHARS + 1))).toMatch(`at most ${KEY_MAX_CHARS}`);
    expect(keyInputError('tally read key')).toMatch(/no spaces/);
    expect(keyInputError('tally_clé')).toMatch(/ASCII/);
  });
});

describe('sign-in states', () => {
  const on = parseWhoAmI(teamA);
  it('checks first, then shows pages as the key or asks for one', () => {
    expect(INITIAL_AUTH).toEqual({ phase: 'checking' });
    expect(authReducer(INITIAL_AUTH, { type: 'identified', identity: on })).toEqual({ phase: 'in', identity: on });
    expect(authReducer(INITIAL_AUTH, { type: 'identified', identity: { auth: 'off' } })).toEqual({ phase: 'in', identity: { auth: 'off' } });
    expect(authReducer(INITIAL_AUTH, { type: 'refused', message: null })).toEqual({ phase: 'signed-out', error: null });
  });
  it('shows the pages when the server cannot say, but only at the first check', () => {
    expect(authReducer(INITIAL_AUTH, { type: 'unknown' })).toEqual({ phase: 'in', identity: null });
    const out: AuthState = { phase: 'signed-out', error: 'no' };
    expect(authReducer(out, { type: 'unknown' })).toBe(out);
  });
  it('asks again with the reason when a key in use is refused, and on sign-out', () => {
    const inside = authReducer(INITIAL_AUTH, { type: 'identified', identity: on });
    expect(authReducer(inside, { type: 'refused', message: 'key revoked' })).toEqual({ phase: 'signed-out', error: 'key revoked' });
    expect(authReducer(inside, { type: 'sign-out' })).toEqual({ phase: 'signed-out', error: null });
  });
  it('names the signed-in key only when there is one', () => {
    expect(keyIdentity({ phase: 'in', identity: on })).toEqual(on);
    expect(keyIdentity({ phase: 'in', identity: { auth: 'off' } })).toBeNull();
    expect(keyIdentity({ phase: 'in', identity: null })).toBeNull();
    expect(keyIdentity({ phase: 'signed-out', error: null })).toBeNull();
    expect(keyIdentity(INITIAL_AUTH)).toBeNull();
  });
});

describe('the project the panels ask for', () => {
  const on = parseWhoAmI(teamA);
  it("is the key's, whatever the URL names", () => {
    expect(effectiveProject(null, on)).toEqual({ project: 'team-a', ignored: null });
    expect(effectiveProject('team-a', on)).toEqual({ project: 'team-a', ignored: null });
    expect(effectiveProject('team-b', on)).toEqual({ project: 'team-a', ignored: 'team-b' });
  });
  it("is the URL's without a key", () => {
    expect(effectiveProject('team-b', { auth: 'off' })).toEqual({ project: 'team-b', ignored: null });
    expect(effectiveProject('team-b', null)).toEqual({ project: 'team-b', ignored: null });
    expect(effectiveProject('', { auth: 'off' })).toEqual({ project: null, ignored: null });
    expect(effectiveProject(null, null)).toEqual({ project: null, ignored: null });
  });
});

// Graceful with missing provider features (issue #15), each against the REAL provider
// (op.mjs) configured without it: no revocation endpoint, no end-session endpoint, no refresh
// token (a client without the refresh_token grant), no userinfo endpoint. Every request that
// reaches the provider is recorded, so a test can show that sealgate never called what the
// provider does not have.
//
// Needs target/debug/sealgate (`cargo build`), or SEALGATE_BIN.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { bffFetch, completeEndSession, login, loginUntilCallback } from './browserless.mjs';
import { kidInCookieHeader, parseReload, sealgateCli, waitForLogAfter } from './fleet-lib.mjs';
import { CLIENT_SECRET, jarCookies, metric, setCookies, startStack } from './stack.mjs';
import { startUpstream } from './upstream.mjs';

const now = () => Math.floor(Date.now() / 1000);
const csrf = { 'x-csrf': '1' };
const tail = (sg) => `\n--- sealgate logs (tail) ---\n${sg.logs().slice(-3000)}`;

// The provider without `without`, an /api/ route to a recording upstream, and every request
// the provider received ("METHOD /path").
async function startMissing(without, op = {}) {
  const up = await startUpstream();
  const reached = [];
  const stack = await startStack({
    op: {
      without,
      ...op,
      middleware: [async (ctx, next) => { reached.push(`${ctx.method} ${ctx.path}`); await next(); }],
    },
    sealgates: [{ config: { routes: [{ prefix: '/api/', upstream: up.url }] } }],
  });
  return {
    ...stack,
    up,
    reached,
    stop: async () => { await stack.stop(); await up.close(); },
  };
}

async function loggedIn(sg, username) {
  const r = await login({ bffUrl: sg.url, username });
  assert.equal(r.callbackResponse.status, 302, `login of ${username}${tail(sg)}`);
  return r.jar;
}

async function userJson(sg, jar) {
  const res = await bffFetch(jar, `${sg.url}/bff/user`);
  assert.equal(res.status, 200, `/bff/user: ${res.status}${tail(sg)}`);
  return res.json();
}

// Every session and profile cookie `held` is expired (Max-Age=0) by `res`, and the jar keeps none.
function assertCleared(res, jar, sg, held) {
  assert.ok(held.length >= 2, 'a session and a profile cookie were held');
  const cleared = setCookies(res, sg.url);
  for (const c of held) {
    const clear = cleared.find((x) => x.name === c.name && x.path === c.path);
    assert.equal(clear?.maxAge, 0, `${c.name} (Path=${c.path}) expired with Max-Age=0`);
  }
  assert.deepEqual([...jarCookies(jar, sg.url).session, ...jarCookies(jar, sg.url).profile], []);
}

const held = (jar, sg) => [...jarCookies(jar, sg.url).session, ...jarCookies(jar, sg.url).profile];

async function assertLoggedOut(sg, jar) {
  const res = await bffFetch(jar, `${sg.url}/bff/user`);
  assert.equal(res.status, 401);
  assert.deepEqual(await res.json(), { error: 'login_required' });
}

// A copy of `jar`'s cookies for `url`: a second tab holding the same session.
function copyOf(jar, url) {
  const copy = new (jar.constructor)();
  for (const c of jar.all(url)) copy.set(url, c.name, c.value, c.path);
  return copy;
}

const revocations = async (sg) => Object.fromEntries(await Promise.all(['ok', 'unsupported', 'failed']
  .map(async (outcome) => [outcome, (await metric(sg.url, 'sealgate_revocations_total', { outcome })) ?? 0])));

describe('a provider without a revocation endpoint', () => {
  let s;
  before(async () => { s = await startMissing(['revocation']); });
  after(async () => { await s?.stop(); });

  test('logout ends the session, clears every cookie and still does RP-initiated logout; counted as unsupported; the refresh token outlives it', async () => {
    const { sg, op } = s;
    const discovery = await (await fetch(`${op.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(discovery.revocation_endpoint, undefined, 'the provider offers no revocation');
    const jar = await loggedIn(sg, 'bob');
    const { refresh_token: refreshToken, id_token: idToken } = op.stats.issuedTokens.at(-1);
    assert.ok(refreshToken, 'the provider issued a refresh token');
    const { session } = await userJson(sg, jar);
    assert.equal(session.refreshable, true, 'a session with a refresh token says so');
    const cookies = held(jar, sg);
    const before = await revocations(sg);
    const reachedBefore = s.reached.length;

    const res = await jar.fetch(`${sg.url}${session.logout_url}`);
    assert.equal(res.status, 302, tail(sg));
    const target = new URL(res.headers.get('location'));
    assert.equal(`${target.origin}${target.pathname}`, `${op.issuer}/session/end`);
    assert.equal(target.searchParams.get('id_token_hint'), idToken);
    assert.equal(target.searchParams.get('post_logout_redirect_uri'), `${sg.publicUrl}/`);
    assertCleared(res, jar, sg, cookies);
    assert.deepEqual(s.reached.slice(reachedBefore), [], 'logout sent nothing to the provider');
    assert.deepEqual(await revocations(sg), { ...before, unsupported: before.unsupported + 1 },
      'sealgate_revocations_total{outcome="unsupported"} counts the refresh token it could not revoke');
    await assertLoggedOut(sg, jar);

    // The limit this leaves: nothing revoked the refresh token, it still works at the provider.
    const refresh = (token) => fetch(discovery.token_endpoint, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`bff:${CLIENT_SECRET}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: token }),
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const alive = await refresh(refreshToken);
    assert.equal(alive.status, 200, 'the refresh token still works at the provider after sealgate\'s logout');

    // The provider's own logout ends its grant (oidc-provider revokes every grant without
    // offline_access consent at end-session): here RP-initiated logout closes the gap.
    const end = await completeEndSession({ jar, url: target.href, stopAt: (u) => u.startsWith(sg.url) });
    // The logout's own state comes back with it (sealgate sends one: Glewlwyd needs it).
    assert.equal(end.callbackUrl, `${sg.url}/?state=${target.searchParams.get('state')}`);
    assert.equal(op.stats.endSessions, 1);
    const dead = await refresh(alive.body.refresh_token);
    assert.equal(dead.status, 400);
    assert.equal(dead.body.error, 'invalid_grant');
  });
});

describe('a provider without an end-session endpoint', () => {
  let s;
  before(async () => { s = await startMissing(['endSession']); });
  after(async () => { await s?.stop(); });

  test('GET logout_url: the refresh token revoked, every cookie cleared, 302 to the application\'s / (no error page)', async () => {
    const { sg, op } = s;
    const discovery = await (await fetch(`${op.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(discovery.end_session_endpoint, undefined, 'the provider offers no RP-initiated logout');
    const jar = await loggedIn(sg, 'carol');
    const { session } = await userJson(sg, jar);
    const cookies = held(jar, sg);
    const before = await revocations(sg);
    const stats = { ...op.stats };

    const res = await jar.fetch(`${sg.url}${session.logout_url}`);
    assert.equal(res.status, 302, tail(sg));
    assert.equal(res.headers.get('location'), '/', 'home, where post_logout_redirect_uri would have led');
    assertCleared(res, jar, sg, cookies);
    assert.equal(op.stats.revocations, stats.revocations + 1, 'one call of the revocation endpoint');
    assert.equal(op.stats.revokedRefreshTokens, stats.revokedRefreshTokens + 1, 'and it revoked the refresh token');
    assert.deepEqual(await revocations(sg), { ...before, ok: before.ok + 1 });
    await assertLoggedOut(sg, jar);

    // The limit this leaves: the provider's own session lives on, the next login asks nothing.
    const again = await loginUntilCallback({ bffUrl: sg.url, username: 'carol', jar });
    assert.ok(!again.trail.includes('(login form)'), again.trail.join(' -> '));
  });

  test('POST /bff/logout: 200 {"redirect": "/"}, revoked and cleared', async () => {
    const { sg, op } = s;
    const jar = await loggedIn(sg, 'dave');
    const cookies = held(jar, sg);
    const revoked = op.stats.revokedRefreshTokens;
    const res = await jar.fetch(`${sg.url}/bff/logout`, { method: 'POST', headers: csrf });
    assert.equal(res.status, 200, tail(sg));
    assert.deepEqual(await res.json(), { redirect: '/' });
    assertCleared(res, jar, sg, cookies);
    assert.equal(op.stats.revokedRefreshTokens, revoked + 1);
    await assertLoggedOut(sg, jar);
  });
});

describe('a provider that issues no refresh token (client without the refresh_token grant)', () => {
  const TTL = 3; // seconds the access token lives
  let s;
  before(async () => { s = await startMissing(['refreshToken'], { accessTokenTTL: TTL }); });
  after(async () => { await s?.stop(); });

  test('/bff/user says refreshable: false and expires_at = the access token\'s expiry; at it, /bff/user and the API end the session (401, cookies cleared), no refresh attempted', { timeout: 20_000 }, async () => {
    const { sg, op, up } = s;
    const loginAt = now();
    const jar = await loggedIn(sg, 'erin');
    const issued = op.stats.issuedTokens.at(-1);
    assert.equal(issued.refresh_token, undefined, 'the provider issued no refresh token');
    assert.match(op.stats.authorizationRequests.at(-1).scope, /offline_access/, 'although sealgate asked for offline_access');

    const { session } = await userJson(sg, jar);
    assert.equal(session.refreshable, false);
    assert.ok(session.expires_at >= loginAt + TTL && session.expires_at <= now() + TTL,
      `expires_at ${session.expires_at} is the access token's expiry (login at ${loginAt}, TTL ${TTL} s), not the idle limit`);
    assert.equal(session.absolute_expires_at, session.created_at + 12 * 3600, 'the limits are reported as before');

    const api = await bffFetch(jar, `${sg.url}/api/echo`);
    assert.equal(api.status, 200, 'API calls work while the access token lasts');
    await api.arrayBuffer();
    assert.equal(up.requests.at(-1).headers.authorization, `Bearer ${issued.access_token}`);

    const tab = copyOf(jar, sg.url); // a second tab holding the same session
    const cookies = held(jar, sg);
    const tabCookies = jarCookies(tab, sg.url).session;
    const forwarded = up.requests.length;
    await sleep(Math.max(0, (session.expires_at + 1) * 1000 - Date.now()));

    const user = await bffFetch(jar, `${sg.url}/bff/user`);
    assert.equal(user.status, 401, `/bff/user after the access token expired${tail(sg)}`);
    assert.deepEqual(await user.json(), { error: 'login_required' });
    assertCleared(user, jar, sg, cookies);

    const late = await bffFetch(tab, `${sg.url}/api/echo`);
    assert.equal(late.status, 401);
    assert.deepEqual(await late.json(), { error: 'login_required' });
    const cleared = setCookies(late, sg.url);
    for (const c of tabCookies) assert.equal(cleared.find((x) => x.name === c.name)?.maxAge, 0, `${c.name} cleared by the API answer`);
    assert.equal(up.requests.length, forwarded, 'the upstream saw nothing after the expiry');
    assert.deepEqual(op.stats.tokenRequests.filter((r) => r.grantType === 'refresh_token'), [], 'no refresh grant was attempted');
  });
});

describe('a provider without a userinfo endpoint', () => {
  let s;
  before(async () => { s = await startMissing(['userinfo']); });
  after(async () => { await s?.stop(); });

  // Runs a key command and waits for the instance to reload its folder.
  async function keys(args) {
    const offset = s.sg.logs().length;
    const out = await sealgateCli([...args, '--dir', s.sg.keysDir]);
    return { out: out.trim(), ring: parseReload(await waitForLogAfter(s.sg, offset, /key ring reloaded/, 6000)) };
  }

  test('login and /bff/user work from the ID token\'s claims; a profile rebuilt after a key retirement keeps sub, no 5xx; userinfo never asked', async () => {
    const { sg, op } = s;
    const discovery = await (await fetch(`${op.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(discovery.userinfo_endpoint, undefined, 'the provider offers no userinfo');
    const alice = await loggedIn(sg, 'alice');
    const { claims } = await userJson(sg, alice);
    assert.deepEqual(
      { ...claims, sid: undefined, auth_time: undefined },
      {
        sub: 'alice', name: 'Alice Example', given_name: 'Alice', family_name: 'Example', preferred_username: 'alice',
        email: 'alice@example.com', email_verified: true, sid: undefined, auth_time: undefined,
      },
      'the ID token\'s claims',
    );

    // The path that asks userinfo: a profile whose key was retired is rebuilt from the session.
    const OLD = sg.kid;
    const bob = await loggedIn(sg, 'bob');
    const { out: NEW } = await keys(['keygen']);
    assert.equal((await keys(['keys', 'promote', NEW])).ring.primary, NEW);
    const api = await bffFetch(bob, `${sg.url}/api/echo`);
    assert.equal(api.status, 200);
    await api.arrayBuffer();
    assert.equal(kidInCookieHeader(bob.header(`${sg.url}/bff/user`), 'sealgate-user.0'), OLD, 'the profile stays under the old key');
    assert.deepEqual((await keys(['keys', 'retire', OLD])).ring.kids, [NEW]);

    const res = await bffFetch(bob, `${sg.url}/bff/user`);
    assert.equal(res.status, 200, `bob after the retirement${tail(sg)}`);
    const body = await res.json();
    assert.equal(body.sub, 'bob');
    assert.deepEqual(body.claims, { sub: 'bob' }, 'without userinfo only what the session holds');
    assert.equal(kidInCookieHeader(bob.header(`${sg.url}/bff/user`), 'sealgate-user.0'), NEW, 'the rebuilt profile was re-sealed');
    assert.equal((await bffFetch(bob, `${sg.url}/bff/user`)).status, 200);
    assert.deepEqual(s.reached.filter((r) => /\/me\b/.test(r)), [], 'no request for userinfo');
  });
});

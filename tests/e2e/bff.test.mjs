// sealgate end to end against the REAL provider (oidc-provider, op.mjs): login through the real
// forms, the session API, logout, login CSRF and replays, open redirects, several tabs, the
// idle limit, and a provider that goes away. Everything sealgate sends to the "browser" (the
// recording cookie jar) is kept and searched, at the end, for the tokens the provider issued.
//
// Needs target/debug/sealgate (`cargo build`), or SEALGATE_BIN.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  bffFetch, completeCallback, completeEndSession, driveProvider, login, loginUntilCallback,
} from './browserless.mjs';
import { freePort, startSealgate } from './sealgate.mjs';
import {
  CLIENT_SECRET, Recorder, assertNoSessionSet, findLeaks, jarCookies, metric, setCookies, startStack, stateOf,
  tokenNeedles, within, TX_COOKIE,
} from './stack.mjs';

const now = () => Math.floor(Date.now() / 1000);
const csrf = { 'x-csrf': '1' };
const tail = (sg) => `\n--- sealgate logs (tail) ---\n${sg.logs().slice(-3000)}`;

describe('sealgate with the real provider', () => {
  let stack;
  let op;
  let sg; // default settings
  let idleSg; // [session] idle = "2s"
  let bff;
  let rec;

  before(async () => {
    // The main instance logs at debug level: the log search below then covers every line
    // sealgate can write.
    stack = await startStack({
      sealgates: [{ env: { SEALGATE_LOG: 'debug' } }, { config: { session: { idle: '2s' } } }],
    });
    ({ op } = stack);
    [sg, idleSg] = stack.sgs;
    bff = sg.url;
    rec = new Recorder(sg.url, idleSg.url);
  });
  after(async () => { await stack?.stop(); });

  // A complete login through the real forms, with a recording jar.
  async function loggedIn({ username = 'alice', returnTo = '/', jar = rec.jar(), on = sg } = {}) {
    const r = await login({ bffUrl: on.url, username, returnTo, jar });
    assert.equal(r.callbackResponse.status, 302, `login of ${username} failed${tail(on)}`);
    return r;
  }
  const user = (jar, on = sg) => bffFetch(jar, `${on.url}/bff/user`);
  async function userJson(jar, on = sg) {
    const res = await user(jar, on);
    assert.equal(res.status, 200, `/bff/user: ${res.status}${tail(on)}`);
    return res.json();
  }
  async function assertLoggedOut(jar, on = sg) {
    const res = await user(jar, on);
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error: 'login_required' });
  }
  async function assertLoginFailedPage(res, status = 400) {
    assert.equal(res.status, status, `expected ${status}${tail(sg)}`);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    const body = await res.text();
    assert.match(body, /Login failed/);
    return body;
  }

  test('health, readiness, and the answers to a browser without a session', async () => {
    assert.equal((await rec.fetch(`${bff}/healthz`)).status, 200);
    assert.equal((await rec.fetch(`${bff}/readyz`)).status, 200);
    const anonymous = await rec.fetch(`${bff}/bff/user`, { headers: csrf });
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('content-type'), /^application\/json/);
    assert.deepEqual(await anonymous.json(), { error: 'login_required' });
    assert.equal((await rec.fetch(`${bff}/bff/no-such-endpoint`, { headers: csrf })).status, 404);
    const put = await rec.fetch(`${bff}/bff/user`, { method: 'PUT', headers: csrf });
    assert.deepEqual([put.status, put.headers.get('allow')], [405, 'GET'], 'a 405 names the methods (RFC 9110)');
  });

  test('login through the real forms: code + PKCE S256 + state + nonce, sealed cookies, /bff/user has the claims', async () => {
    const before = now();
    const { jar, loginResponse, authorizeUrl, callbackResponse, finalLocation } = await loggedIn({ username: 'alice', returnTo: '/after?x=1' });

    const auth = new URL(authorizeUrl);
    assert.equal(auth.origin, op.issuer);
    const p = Object.fromEntries(auth.searchParams);
    assert.equal(p.response_type, 'code');
    assert.equal(p.client_id, 'bff');
    assert.equal(p.redirect_uri, `${bff}/bff/callback`);
    assert.equal(p.code_challenge_method, 'S256');
    assert.match(p.code_challenge, /^[A-Za-z0-9_-]{43}$/);
    assert.ok(p.state?.length >= 16 && p.nonce?.length >= 16, 'state and nonce of at least 16 characters');
    assert.ok(p.scope.split(' ').includes('openid'));

    // The login transaction cookie: named after the state, sealed, short-lived, Lax.
    const [tx, ...more] = setCookies(loginResponse, bff).filter((c) => TX_COOKIE.test(c.name));
    assert.equal(more.length, 0);
    assert.equal(tx.name, `sealgate-tx-${p.state.slice(0, 8)}.0`);
    assert.equal(tx.maxAge, 600);
    assert.equal(tx.path, '/');
    assert.ok(tx.httpOnly);
    assert.equal(tx.sameSite, 'lax');
    for (const secret of [p.state, p.nonce]) assert.ok(!tx.value.includes(secret), 'the transaction cookie is sealed');

    // The callback: 302 to returnTo, session + profile cookies, the transaction used up.
    assert.equal(finalLocation, `${bff}/after?x=1`);
    assert.equal(callbackResponse.headers.get('referrer-policy'), 'no-referrer');
    const set = setCookies(callbackResponse, bff);
    const byName = Object.fromEntries(set.map((c) => [c.name, c]));
    assert.equal(byName['sealgate.0']?.path, '/');
    assert.equal(byName['sealgate-user.0']?.path, '/bff/');
    for (const name of ['sealgate.0', 'sealgate-user.0']) {
      assert.ok(byName[name].httpOnly, `${name} HttpOnly`);
      assert.equal(byName[name].sameSite, 'lax');
      assert.ok(byName[name].maxAge > 0);
    }
    assert.ok(byName['sealgate.0'].maxAge <= 3600, 'the session cookie lives no longer than the idle limit');
    assert.equal(byName[tx.name]?.maxAge, 0, 'the transaction cookie is expired by the callback');
    assert.deepEqual(jar.rejected, [], 'no cookie a browser would refuse');
    assert.equal(jarCookies(jar, bff).tx.length, 0);

    const res = await user(jar);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    const body = await res.json();
    assert.equal(body.sub, 'alice');
    assert.deepEqual(
      { ...body.claims, sid: undefined, auth_time: undefined, sub: undefined },
      {
        name: 'Alice Example', given_name: 'Alice', family_name: 'Example', preferred_username: 'alice',
        email: 'alice@example.com', email_verified: true, sid: undefined, auth_time: undefined, sub: undefined,
      },
      'the account\'s claims, without protocol claims (nonce, aud, at_hash, ...)',
    );
    const s = body.session;
    assert.ok(s.created_at >= before - 1 && s.created_at <= now() + 1, `created_at ${s.created_at}`);
    assert.equal(s.absolute_expires_at, s.created_at + 12 * 3600);
    assert.ok(s.expires_at > now() && s.expires_at <= now() + 3600 + 1, `expires_at ${s.expires_at}`);
    // The provider's session id: the ID token's sid claim, null when the provider sends none
    // (oidc-provider only does for clients registered for front/back-channel logout).
    assert.ok('sid' in s && (s.sid === null || typeof s.sid === 'string'), `sid ${s.sid}`);
    assert.match(s.logout_url, /^\/bff\/logout\?sid=[A-Za-z0-9_-]{16,}$/);
    assert.equal(op.stats.tokenRequests.at(-1).clientAuth, 'client_secret_basic');
  });

  test('/bff/user without X-CSRF: 1 is 403, never 200', async () => {
    const { jar } = await loggedIn({ username: 'carol' });
    for (const headers of [{}, { 'x-csrf': '0' }, { 'x-csrf': 'true' }, { 'x-csrf': '' }, { 'x-requested-with': 'XMLHttpRequest' }]) {
      const res = await jar.fetch(`${bff}/bff/user`, { headers });
      assert.equal(res.status, 403, `headers ${JSON.stringify(headers)}`);
      assert.deepEqual(await res.json(), { error: 'csrf' });
    }
    assert.equal((await user(jar)).status, 200, 'the same browser with X-CSRF: 1');
  });

  test('no CORS: a preflight from another origin is never granted', async () => {
    const { jar } = await loggedIn({ username: 'cors' });
    for (const path of ['/bff/user', '/bff/logout', '/api/anything', '/']) {
      const res = await rec.fetch(`${bff}${path}`, {
        method: 'OPTIONS',
        headers: {
          origin: 'http://evil.example',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'x-csrf',
          cookie: jar.header(`${bff}${path}`),
        },
      });
      assert.ok(res.status >= 400, `${path}: ${res.status}`);
      for (const [k] of res.headers) assert.ok(!k.startsWith('access-control-'), `${path}: ${k}`);
    }
    // And no answer to an ordinary cross-origin request grants it either.
    const user = await rec.fetch(`${bff}/bff/user`, { headers: { origin: 'http://evil.example', 'x-csrf': '1', cookie: jar.header(`${bff}/bff/user`) } });
    assert.equal(user.headers.get('access-control-allow-origin'), null);
  });

  test('a profile cookie of another session is never shown with this session', async () => {
    const a = (await loggedIn({ username: 'alice' })).jar;
    const b = (await loggedIn({ username: 'mallory' })).jar;
    const mixed = rec.jar();
    for (const c of jarCookies(a, bff).session) mixed.set(bff, c.name, c.value, c.path);
    for (const c of jarCookies(b, bff).profile) mixed.set(bff, c.name, c.value, c.path);
    const res = await user(mixed);
    assert.equal(res.status, 401, 'alice\'s session with mallory\'s profile');
    assert.deepEqual(await res.json(), { error: 'login_required' });
    assert.equal((await userJson(a)).sub, 'alice', 'control: each browser alone is fine');
    assert.equal((await userJson(b)).sub, 'mallory');
  });

  test('GET /bff/logout without the session\'s own sid is 403, and the session survives', async () => {
    const { jar } = await loggedIn({ username: 'dave' });
    const other = await userJson((await loggedIn({ username: 'erin' })).jar);
    const revocations = op.stats.revocations;
    for (const path of ['/bff/logout', '/bff/logout?sid=', '/bff/logout?sid=AAAAAAAAAAAAAAAAAAAAAA', other.session.logout_url]) {
      const res = await jar.fetch(`${bff}${path}`);
      assert.equal(res.status, 403, path);
      assert.deepEqual(setCookies(res, bff).map((c) => c.raw), [], `${path} touches no cookie`);
      assert.equal(res.headers.get('location'), null);
    }
    assert.equal(op.stats.revocations, revocations, 'nothing revoked');
    assert.equal((await userJson(jar)).sub, 'dave');
  });

  test('POST /bff/logout needs X-CSRF: 1; with it: 200 {redirect}, token revoked, cookies cleared', async () => {
    const { jar } = await loggedIn({ username: 'frank' });
    const revocations = op.stats.revocations;
    const refused = await jar.fetch(`${bff}/bff/logout`, { method: 'POST' });
    assert.equal(refused.status, 403);
    assert.deepEqual(setCookies(refused, bff), []);
    assert.equal(op.stats.revocations, revocations);
    assert.equal((await userJson(jar)).sub, 'frank', 'the session survives a forged POST');

    const res = await jar.fetch(`${bff}/bff/logout`, { method: 'POST', headers: csrf });
    assert.equal(res.status, 200, tail(sg));
    const { redirect } = await res.json();
    assert.ok(redirect.startsWith(`${op.issuer}/session/end?`), redirect);
    assert.equal(op.stats.revocations, revocations + 1);
    assert.deepEqual(jarCookies(jar, bff).session, []);
    assert.deepEqual(jarCookies(jar, bff).profile, []);
    await assertLoggedOut(jar);
  });

  test('logout through logout_url: refresh token revoked, every chunk expired, end-session at the provider', async () => {
    const { jar } = await loggedIn({ username: 'bob' });
    const idToken = op.stats.issuedTokens.at(-1).id_token;
    const { session } = await userJson(jar);
    const held = [...jarCookies(jar, bff).session, ...jarCookies(jar, bff).profile];
    assert.ok(held.length >= 2);
    const stats = { ...op.stats };
    const revokedOk = await metric(bff, 'sealgate_revocations_total', { outcome: 'ok' });

    const res = await jar.fetch(`${bff}${session.logout_url}`);
    assert.equal(res.status, 302, tail(sg));
    const target = new URL(res.headers.get('location'));
    assert.equal(`${target.origin}${target.pathname}`, `${op.issuer}/session/end`);
    assert.equal(target.searchParams.get('id_token_hint'), idToken);
    assert.equal(target.searchParams.get('client_id'), 'bff');
    assert.equal(target.searchParams.get('post_logout_redirect_uri'), `${bff}/`);

    const cleared = setCookies(res, bff);
    for (const c of held) {
      const clear = cleared.find((x) => x.name === c.name && x.path === c.path);
      assert.equal(clear?.maxAge, 0, `${c.name} (Path=${c.path}) expired with Max-Age=0`);
    }
    assert.deepEqual([...jarCookies(jar, bff).session, ...jarCookies(jar, bff).profile], []);
    assert.equal(op.stats.revocations, stats.revocations + 1, 'one call of the revocation endpoint');
    assert.equal(op.stats.revokedRefreshTokens, stats.revokedRefreshTokens + 1, 'and it revoked a refresh token');
    assert.equal(await metric(bff, 'sealgate_revocations_total', { outcome: 'ok' }), revokedOk + 1);
    await assertLoggedOut(jar);

    // The provider's "sign out?" confirmation, then back to the application.
    const end = await completeEndSession({ jar, url: target.href, stopAt: (u) => u.startsWith(bff) });
    assert.equal(end.callbackUrl, `${bff}/?state=${target.searchParams.get('state')}`);
    assert.equal(op.stats.endSessions, stats.endSessions + 1);
    // The provider session is over: the next login shows the login form again.
    const again = await loginUntilCallback({ bffUrl: bff, username: 'bob', jar });
    assert.ok(again.trail.includes('(login form)'), again.trail.join(' -> '));
  });

  test('login CSRF: a callback URL obtained by another browser is refused, and its code stays unspent', async () => {
    const a = await loginUntilCallback({ bffUrl: bff, username: 'alice', jar: rec.jar() });
    const fresh = rec.jar();
    const busy = rec.jar(); // a browser in the middle of its own login
    await busy.fetch(`${bff}/bff/login`);
    assert.equal(jarCookies(busy, bff).tx.length, 1);
    const tokenCalls = op.stats.tokenRequests.length;
    for (const b of [fresh, busy]) {
      const res = await b.fetch(a.callbackUrl);
      await assertLoginFailedPage(res, 400);
      assertNoSessionSet(res, bff, 'for the victim browser');
      await assertLoggedOut(b);
    }
    assert.equal(op.stats.tokenRequests.length, tokenCalls, 'the code was never sent to the token endpoint');
    // The browser that started the login still completes it.
    const { callbackResponse } = await completeCallback(a);
    assert.equal(callbackResponse.status, 302);
    assert.equal((await userJson(a.jar)).sub, 'alice');
  });

  test('a state that does not match the login transaction is refused before the code is spent', async () => {
    const a = await loginUntilCallback({ bffUrl: bff, username: 'alice', jar: rec.jar() });
    const good = new URL(a.callbackUrl);
    const state = good.searchParams.get('state');
    const variant = (edit) => { const u = new URL(good); edit(u.searchParams); return u.href; };
    const tokenCalls = op.stats.tokenRequests.length;
    const attempts = [
      ['another state', variant((q) => q.set('state', 'Z'.repeat(state.length)))],
      ['no state', variant((q) => q.delete('state'))],
      ['the state twice', `${good.href}&state=${encodeURIComponent(state)}`],
      // Same first 8 characters: the transaction cookie is found, its state differs.
      ['same cookie, other state', variant((q) => q.set('state', `${state.slice(0, 8)}${'x'.repeat(state.length - 8)}`))],
    ];
    for (const [what, url] of attempts) {
      const res = await a.jar.fetch(url);
      assert.equal(res.status, 400, what);
      assertNoSessionSet(res, bff, what);
    }
    assert.equal(op.stats.tokenRequests.length, tokenCalls, 'no code exchange');
    // A transaction is tried at most once: after the mismatch its cookie is gone, so even the
    // genuine answer is refused now.
    assert.equal(jarCookies(a.jar, bff).tx.length, 0);
    await assertLoginFailedPage((await completeCallback(a)).callbackResponse, 400);
    await assertLoggedOut(a.jar);
  });

  test('replaying a callback URL gives no second session', async () => {
    const a = await loginUntilCallback({ bffUrl: bff, username: 'alice', jar: rec.jar() });
    const [tx] = jarCookies(a.jar, bff).tx;
    const first = await completeCallback(a);
    assert.equal(first.callbackResponse.status, 302);

    // The same browser again: its transaction is used up.
    const again = await a.jar.fetch(a.callbackUrl);
    await assertLoginFailedPage(again, 400);
    assertNoSessionSet(again, bff, 'by a replay');
    assert.equal((await userJson(a.jar)).sub, 'alice', 'a failed replay does not end the session');

    // Someone who copied both the URL and the transaction cookie: the provider refuses the used
    // code, and no session comes of it.
    const thief = rec.jar();
    thief.set(bff, tx.name, tx.value);
    const failures = op.stats.authorizationCodeFailures;
    const stolen = await thief.fetch(a.callbackUrl);
    await assertLoginFailedPage(stolen, 400);
    assertNoSessionSet(stolen, bff, 'by a replay with the transaction cookie');
    assert.equal(op.stats.authorizationCodeFailures, failures + 1, 'the provider refused the used code');
    await assertLoggedOut(thief);
  });

  test('a provider error answer (error=access_denied) is a 400 without a session', async () => {
    const jar = rec.jar();
    const start = await jar.fetch(`${bff}/bff/login?returnTo=/denied`);
    const state = stateOf(start.headers.get('location'));
    const [tx] = jarCookies(jar, bff).tx;
    const cb = new URL(`${bff}/bff/callback`);
    cb.searchParams.set('error', 'access_denied');
    cb.searchParams.set('error_description', '<script>alert(1)</script>');
    cb.searchParams.set('state', state);
    cb.searchParams.set('iss', op.issuer);
    const res = await jar.fetch(cb.href);
    const body = await assertLoginFailedPage(res, 400);
    assert.ok(!body.includes('<script>alert'), 'the provider\'s text is not reflected');
    assertNoSessionSet(res, bff);
    assert.equal(setCookies(res, bff).find((c) => c.name === tx.name)?.maxAge, 0, 'transaction expired');
    assert.equal(res.headers.get('location'), null, 'no redirect to returnTo');
    await assertLoggedOut(jar);
  });

  test('returnTo must be a local path: open redirects are refused with 400', async () => {
    const refused = [
      'returnTo=https://evil.example',
      'returnTo=https%3A%2F%2Fevil.example',
      'returnTo=//evil.example',
      'returnTo=%2F%2Fevil.example',
      'returnTo=/%5Cevil.example', // /\evil.example
      'returnTo=%5C%5Cevil.example', // \\evil.example
      'returnTo=/%252F%252Fevil', // /%2F%2Fevil
      'returnTo=/%255cevil', // /%5cevil
      'returnTo=/%09/evil.example', // tab
      'returnTo=/a%0D%0ASet-Cookie:%20x=y', // CR LF
      'returnTo=/%00',
      'returnTo=/%250d%250aSet-Cookie:x', // /%0d%0a...
      'returnTo=javascript:alert(1)',
      'returnTo=evil.example',
      'returnTo=',
      'returnTo=/a&returnTo=/b',
    ];
    for (const query of refused) {
      const jar = rec.jar();
      const res = await jar.fetch(`${bff}/bff/login?${query}`);
      assert.equal(res.status, 400, query);
      assert.match(res.headers.get('content-type') ?? '', /^text\/html/, query);
      assert.equal(res.headers.get('location'), null, query);
      assert.deepEqual(setCookies(res, bff), [], `${query}: no cookie`);
    }
    for (const query of ['', 'returnTo=/', 'returnTo=/app/page%3Fx%3D1%26y%3D2']) {
      const res = await rec.jar().fetch(`${bff}/bff/login?${query}`);
      assert.equal(res.status, 302, `control: ${query}`);
    }
  });

  test('two tabs logging in at once both complete, in either order', async () => {
    for (const order of [[0, 1], [1, 0]]) {
      const jar = rec.jar();
      const tabs = [];
      for (const returnTo of ['/tab-one', '/tab-two']) {
        const res = await jar.fetch(`${bff}/bff/login?returnTo=${returnTo}`);
        assert.equal(res.status, 302);
        tabs.push({ returnTo, authorizeUrl: res.headers.get('location') });
      }
      assert.equal(jarCookies(jar, bff).tx.length, 2, 'one transaction per tab');
      for (const tab of tabs) {
        const { callbackUrl } = await driveProvider({ jar, url: tab.authorizeUrl, username: 'grace', stopAt: (u) => u.startsWith(`${bff}/bff/callback`) });
        tab.callbackUrl = callbackUrl;
      }
      for (const i of order) {
        const { callbackResponse, finalLocation } = await completeCallback({ jar, callbackUrl: tabs[i].callbackUrl });
        assert.equal(callbackResponse.status, 302, `order ${order}, tab ${i}${tail(sg)}`);
        assert.equal(finalLocation, `${bff}${tabs[i].returnTo}`);
        assert.equal((await userJson(jar)).sub, 'grace');
      }
      assert.equal(jarCookies(jar, bff).tx.length, 0);
    }
  });

  // Starts `n` logins in `jar` (as many tabs would), checking the cap after each.
  async function startLogins(jar, n) {
    const started = [];
    for (let i = 0; i < n; i++) {
      const res = await jar.fetch(`${bff}/bff/login?returnTo=/n${i}`);
      assert.equal(res.status, 302);
      const authorizeUrl = res.headers.get('location');
      started.push({ authorizeUrl, cookie: `sealgate-tx-${stateOf(authorizeUrl).slice(0, 8)}.0` });
      const held = jarCookies(jar, bff).tx.map((c) => c.name);
      assert.ok(held.length <= 4, `after login ${i + 1} the browser holds ${held.length} transactions`);
      assert.ok(held.includes(started[i].cookie), 'the new login has its transaction');
    }
    return started;
  }
  async function finishLogin(jar, { authorizeUrl }) {
    const { callbackUrl } = await driveProvider({ jar, url: authorizeUrl, username: 'heidi', stopAt: (u) => u.startsWith(`${bff}/bff/callback`) });
    return (await completeCallback({ jar, callbackUrl })).callbackResponse;
  }

  test('six logins started in one browser: never more than four pending transactions', async () => {
    const jar = rec.jar();
    const started = await startLogins(jar, 6);
    assert.equal(jarCookies(jar, bff).tx.length, 4);
    assert.ok(jarCookies(jar, bff).tx.every((c) => c.value.length < 1024), 'small cookies');
    assert.equal((await finishLogin(jar, started[5])).status, 302, 'the newest login completes');
    assert.equal((await userJson(jar)).sub, 'heidi');
  });

  // Logins started within one second tie on their sealed expiry (whole seconds): the pending
  // logins are ordered by their start time in milliseconds, sealed in each transaction.
  test('six logins started within a second: the four newest are kept, the two oldest refused', async () => {
    const jar = rec.jar();
    const started = await startLogins(jar, 6);
    assert.deepEqual(
      jarCookies(jar, bff).tx.map((c) => c.name).sort(),
      started.slice(2).map((s) => s.cookie).sort(),
      'the four newest logins are the ones kept',
    );
    await assertLoginFailedPage(await finishLogin(jar, started[0]), 400); // dropped: refused
    assert.equal((await finishLogin(jar, started[2])).status, 302); // kept: completes
  });

  test('the idle limit: with [session] idle = "2s" a session in use lives on, an unused one is refused', async () => {
    const { jar } = await loggedIn({ username: 'ivan', on: idleSg });
    const url = `${idleSg.url}/bff/user`;
    // In use every 0.4 s for 3 s: longer than the idle limit, yet still valid.
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      assert.equal((await user(jar, idleSg)).status, 200, `still in use${tail(idleSg)}`);
      await sleep(400);
    }
    const replay = jar.header(url); // what a client that ignores Max-Age would keep sending
    const rejected = async () => (await metric(idleSg.url, 'sealgate_session_rejected_total', { reason: 'idle' }) ?? 0)
      + (await metric(idleSg.url, 'sealgate_session_rejected_total', { reason: 'expired' }) ?? 0);
    const rejectedBefore = await rejected();
    await sleep(3100);
    await assertLoggedOut(jar, idleSg);
    const res = await rec.fetch(url, { headers: { ...csrf, cookie: replay } });
    assert.equal(res.status, 401, 'the server refuses the idle session itself, not only the browser\'s cookie expiry');
    assert.equal(await rejected(), rejectedBefore + 1, 'counted as idle or expired');
  });

  // ---- checks over everything recorded above (node:test runs these tests in order) ----------

  test('no token reached the browser: not in any header, cookie or body sealgate sent, nor in its logs', async () => {
    const entries = await rec.settled();
    assert.match(sg.logs(), /DEBUG/, 'the main instance logs at debug level');
    assert.ok(op.stats.issuedTokens.length >= 12, `tokens issued: ${op.stats.issuedTokens.length}`);
    assert.ok(op.stats.issuedTokens.every((t) => t.access_token && t.refresh_token && t.id_token));
    const needles = tokenNeedles(op.stats.issuedTokens);
    // RP-initiated logout sends the ID token to the provider as id_token_hint, through the
    // browser, by design (OpenID Connect RP-Initiated Logout 1.0): allowed there only.
    const logoutRedirect = (e, label, part) => label.startsWith('id_token') && new URL(e.url).pathname === '/bff/logout'
      && ((e.method === 'GET' && part === 'header location') || (e.method === 'POST' && part === 'body'));
    assert.deepEqual(findLeaks(entries, needles, logoutRedirect), []);
    // The search works: it does find the ID token in the logout redirect.
    assert.ok(findLeaks(entries, needles).some((l) => /id_token/.test(l.label) && /GET .*\/bff\/logout/.test(l.where)));
    for (const instance of [sg, idleSg]) {
      assert.deepEqual(findLeaks([{ method: 'LOG', url: instance.url, status: 0, headers: [], body: instance.logs() }], needles), []);
    }
  });

  test('no secret of sealgate\'s own (client secret, sealing key) in any answer or log line', async () => {
    const entries = await rec.settled();
    const needles = [{ label: 'client secret', needle: CLIENT_SECRET }];
    for (const instance of [sg, idleSg]) {
      const key = (await readFile(`${instance.keysDir}/${instance.kid}.key`, 'utf8')).trim();
      assert.equal(key.length, 43);
      needles.push({ label: `sealing key ${instance.kid}`, needle: key });
      needles.push({ label: `sealing key ${instance.kid} (standard base64)`, needle: key.replace(/-/g, '+').replace(/_/g, '/') });
    }
    assert.deepEqual(findLeaks(entries, needles), []);
    for (const instance of [sg, idleSg]) {
      assert.deepEqual(findLeaks([{ method: 'LOG', url: instance.url, status: 0, headers: [], body: instance.logs() }], needles), []);
    }
    // The search works: it finds the client secret where it is (the launcher's config file).
    const config = await readFile(sg.configPath, 'utf8');
    assert.ok(findLeaks([{ method: 'FILE', url: sg.url, status: 0, headers: [], body: config }], needles).length > 0);
  });

  test('every answer under /bff/ had Cache-Control: no-store', async () => {
    const entries = (await rec.settled()).filter((e) => new URL(e.url).pathname.startsWith('/bff/'));
    const statuses = new Set(entries.map((e) => e.status));
    for (const s of [200, 302, 400, 401, 403, 404, 405]) assert.ok(statuses.has(s), `a ${s} was seen`);
    const missing = entries.filter((e) => !e.headers.some(([k, v]) => k === 'cache-control' && v === 'no-store'));
    assert.deepEqual(missing.map((e) => `${e.method} ${e.url} -> ${e.status}`), []);
  });

  test('every callback answer had Referrer-Policy: no-referrer; every error page forbids framing and scripts', async () => {
    const entries = await rec.settled();
    const header = (e, name) => e.headers.find(([k]) => k === name)?.[1];
    const callbacks = entries.filter((e) => new URL(e.url).pathname === '/bff/callback');
    assert.ok(callbacks.length >= 10 && callbacks.some((e) => e.status === 302) && callbacks.some((e) => e.status === 400));
    assert.deepEqual(callbacks.filter((e) => header(e, 'referrer-policy') !== 'no-referrer').map((e) => e.url), []);
    const pages = entries.filter((e) => (header(e, 'content-type') ?? '').startsWith('text/html') && e.status >= 400);
    assert.ok(pages.length >= 5, `error pages seen: ${pages.length}`);
    for (const e of pages) {
      assert.equal(header(e, 'content-security-policy'), "default-src 'none'; frame-ancestors 'none'", `${e.method} ${e.url}`);
    }
  });

  test('/metrics counts the logins done and refused', async () => {
    const callbacks = (await rec.settled()).filter((e) => e.url.startsWith(`${bff}/bff/callback`));
    const ok = callbacks.filter((e) => e.status === 302).length;
    const refused = callbacks.filter((e) => e.status >= 400);
    // Every refused callback counts as a failed login, the malformed one (a repeated
    // parameter) included.
    const malformed = refused.filter((e) => new URL(e.url).searchParams.getAll('state').length > 1).length;
    assert.ok(ok >= 10 && refused.length >= 8 && malformed === 1, `ok ${ok}, refused ${refused.length}`);
    assert.equal(await metric(bff, 'sealgate_logins_total', { outcome: 'ok' }), ok);
    assert.equal(await metric(bff, 'sealgate_logins_total', { outcome: 'failed' }), refused.length);
    assert.equal(await metric(bff, 'sealgate_requests_total', { endpoint: 'callback', code: '4xx' }), refused.length);
    const started = (await rec.settled()).filter((e) => e.url.startsWith(`${bff}/bff/login`) && e.status === 302).length;
    assert.equal(await metric(bff, 'sealgate_logins_total', { outcome: 'started' }), started);
    assert.ok(await metric(bff, 'sealgate_requests_total', { endpoint: 'user', code: '2xx' }) >= 10);
    assert.ok(await metric(bff, 'sealgate_requests_total', { endpoint: 'user', code: '4xx' }) >= 5);
    assert.equal(await metric(idleSg.url, 'sealgate_logins_total', { outcome: 'ok' }), 1);
  });
});

describe('sealgate when the provider goes away', () => {
  test('provider stopped in the middle of a login: the callback is a 503 at once, never a hang', async () => {
    const stack = await startStack();
    try {
      const { sg, op } = stack;
      const half = await loginUntilCallback({ bffUrl: sg.url, username: 'judy' });
      await op.close();
      const t0 = Date.now();
      const { callbackResponse } = await within(15_000, completeCallback(half), 'the callback');
      assert.equal(callbackResponse.status, 503, tail(sg));
      assert.ok(Date.now() - t0 < 5000, `answered in ${Date.now() - t0} ms (connection refused is immediate)`);
      assert.match(await callbackResponse.text(), /could not be reached/);
      assertNoSessionSet(callbackResponse, sg.url);
      await assertNoSession(half.jar, sg.url);
      // The metadata is already known, so a new login still starts (the browser then meets
      // the provider's own outage); what matters is a prompt answer.
      const again = await within(8000, half.jar.fetch(`${sg.url}/bff/login`), '/bff/login');
      assert.equal(again.status, 302);
    } finally {
      await stack.stop();
    }
  });

  test('no provider when sealgate starts: /readyz 503, /bff/login 503 within seconds', async () => {
    const deadPort = await freePort(); // nothing listens there
    const sg = await startSealgate({ issuer: `http://127.0.0.1:${deadPort}`, waitReady: false });
    try {
      assert.equal((await fetch(`${sg.url}/readyz`)).status, 503);
      const t0 = Date.now();
      const res = await within(10_000, fetch(`${sg.url}/bff/login`, { redirect: 'manual' }), '/bff/login');
      assert.equal(res.status, 503);
      assert.ok(Date.now() - t0 < 6000, `answered in ${Date.now() - t0} ms`);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.deepEqual(res.headers.getSetCookie(), [], 'no transaction cookie without a provider');
      assert.equal((await fetch(`${sg.url}/readyz`)).status, 503);
    } finally {
      await sg.stop();
    }
  });
});

async function assertNoSession(jar, url) {
  const res = await bffFetch(jar, `${url}/bff/user`);
  assert.equal(res.status, 401);
}

// A provider outage at refresh time must not log anyone out: sealgate + the real provider
// (op.mjs) with faults injected at its token endpoint (faulty.mjs) + a real upstream.
//
//   cd tests/e2e && node --test outage.test.mjs        (needs `cargo build` first)
//
// Access tokens live 4 s and session.refresh_skew is 3 s: a token is due for refresh 1 s after
// issuance and expired after 4 s. Every session is logged in at the start, so the test waits
// through one token lifetime in all (~15 s in total).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { bffFetch, login } from './browserless.mjs';
import { FAULTS, tokenFaults } from './faulty.mjs';
import { sealgateBin } from './sealgate.mjs';
import { metric, startStack } from './stack.mjs';
import { startUpstream } from './upstream.mjs';

const skip = existsSync(sealgateBin()) ? false : `no sealgate binary at ${sealgateBin()} (cargo build)`;
const TTL_MS = 4000;
const SKEW = '3s';
// The classes of one call each; `spent` and `invalid_grant` have tests of their own.
const CLASSES = ['temporarily_unavailable', 'server_error', 'invalid_client', 'unauthorized_client',
  'invalid_request', 'http_5xx', 'network', 'unparsable'];

const cleared = (res) => res.headers.getSetCookie().filter((c) => /max-age=0\b/i.test(c));

describe('refresh during a provider outage', { skip }, () => {
  const faults = tokenFaults();
  let stack;
  let up;
  let api;
  const jars = {}; // user -> jar
  let loginsDone;
  let skewStarted;
  let skewDone;

  before(async () => {
    up = await startUpstream();
    stack = await startStack({
      op: { accessTokenTTL: TTL_MS / 1000, middleware: [faults.middleware] },
      sealgates: [{ config: { session: { refresh_skew: SKEW }, routes: [{ prefix: '/api/', upstream: up.url }] } }],
    });
    api = `${stack.sg.url}/api/echo`;
    const loginAs = async (u) => {
      const { jar, callbackResponse } = await login({ bffUrl: stack.sg.url, username: u });
      assert.equal(callbackResponse.status, 302, `login of ${u}: ${stack.sg.logs().slice(-2000)}`);
      jars[u] = jar;
    };
    await Promise.all(['outage', 'spent', 'huge', 'dead', ...CLASSES].map(loginAs));
    // Last and alone: the first test needs its token's issuance known to a few 100 ms.
    skewStarted = Date.now();
    await loginAs('skew');
    skewDone = Date.now();
    loginsDone = skewDone;
  });

  after(async () => {
    await stack?.stop();
    await up?.close();
  });

  const failures = (cls) => metric(stack.sg.url, 'sealgate_refresh_failures_total', { class: cls });
  const assertKept = async (user, res) => {
    assert.deepEqual(cleared(res), [], `${user}: no cookie cleared`);
    const me = await bffFetch(jars[user], `${stack.sg.url}/bff/user`);
    assert.equal(me.status, 200, `${user}: the session is still there`);
    assert.equal((await me.json()).sub, user);
  };

  test('inside refresh_skew, the provider failing: forwarded with the current access token', async () => {
    await sleep(Math.max(0, skewDone + 1300 - Date.now()));
    assert.ok(Date.now() < skewStarted + TTL_MS - 1200, 'still well before expiry (the login took too long)');
    faults.mode = 'temporarily_unavailable';
    const attempts = faults.attempts;
    const res = await bffFetch(jars.skew, api);
    const body = await res.text();
    faults.mode = undefined;
    assert.equal(res.status, 200, body);
    assert.equal(faults.attempts - attempts, 1, 'the refresh was tried');
    const auth = up.requests.at(-1).headers.authorization;
    assert.ok(stack.op.stats.issuedTokens.some((t) => auth === `Bearer ${t.access_token}`), 'an access token of the login');
    await assertKept('skew', res);
  });

  test('each failure class but invalid_grant: 503 provider_unavailable, session kept, counted', { timeout: 20_000 }, async () => {
    await sleep(Math.max(0, loginsDone + TTL_MS + 300 - Date.now()));
    for (const mode of CLASSES) {
      const cls = FAULTS[mode].class;
      const before = (await failures(cls)) ?? 0;
      const attempts = faults.attempts;
      faults.mode = mode;
      const res = await bffFetch(jars[mode], api);
      const body = await res.text();
      faults.mode = undefined;
      assert.equal(res.status, 503, `${mode}: ${body}\n${stack.sg.logs().slice(-1500)}`);
      assert.deepEqual(JSON.parse(body), { error: 'provider_unavailable' }, mode);
      assert.equal(faults.attempts - attempts, 1, `${mode}: one grant`);
      assert.equal(await failures(cls), before + 1, `${mode}: counted as ${cls}`);
      await assertKept(mode, res);
    }
    assert.match(stack.sg.logs(), /refresh failed; session kept/);
  });

  test('a 3 s outage under 20 calls/s: every call 503, no cookie cleared, at most 6 grants, 200 within 5 s of recovery', { timeout: 30_000 }, async () => {
    await sleep(Math.max(0, loginsDone + TTL_MS + 300 - Date.now()));
    const cookie = jars.outage.header(api);
    const call = () => fetch(api, { headers: { 'x-csrf': '1', cookie }, signal: AbortSignal.timeout(15_000) })
      .then(async (res) => ({ res, body: await res.text() }));
    faults.mode = 'temporarily_unavailable';
    const attempts = faults.attempts;
    const n = up.requests.length;
    const calls = [];
    const t0 = Date.now();
    for (let i = 0; i < 60; i++) { // one every 50 ms for 3 s
      await sleep(Math.max(0, t0 + i * 50 - Date.now()));
      calls.push(call());
    }
    const answers = await Promise.all(calls);
    const grants = faults.attempts - attempts;
    faults.mode = undefined;
    const recovered = Date.now();
    console.log(`[outage] ${answers.length} calls in ${recovered - t0} ms, ${grants} grant attempts at the provider`);
    assert.deepEqual([...new Set(answers.map((a) => a.res.status))], [503]);
    assert.deepEqual(answers.flatMap((a) => cleared(a.res)), [], 'no cookie cleared');
    assert.ok(grants >= 2 && grants <= 6, `${grants} grant attempts`);
    assert.equal(up.requests.length, n, 'the upstream saw nothing');

    let ok;
    while (!ok && Date.now() - recovered < 5000) {
      const a = await call();
      if (a.res.status === 200) ok = a;
      else await sleep(100);
    }
    assert.ok(ok, `no 200 within 5 s of recovery\n${stack.sg.logs().slice(-1500)}`);
    console.log(`[outage] 200 ${Date.now() - recovered} ms after recovery`);
    assert.ok(ok.res.headers.getSetCookie().some((c) => /^sealgate\.0=[^;]+/.test(c) && !/max-age=0\b/i.test(c)), 're-sealed');
    assert.equal(stack.op.stats.refreshFailures, 0, `no replayed refresh token: ${stack.op.stats.lastError}`);
  });

  test('a 200 that spent the refresh token without an access token: 503, session kept, never replayed', { timeout: 20_000 }, async () => {
    await sleep(Math.max(0, loginsDone + TTL_MS + 300 - Date.now()));
    faults.mode = 'spent';
    const attempts = faults.attempts;
    const grants = stack.op.stats.refreshGrants;
    const first = await bffFetch(jars.spent, api);
    faults.mode = undefined;
    assert.equal(first.status, 503, await first.text());
    assert.equal(stack.op.stats.refreshGrants - grants, 1, 'the provider ran (and rotated) the grant');
    await assertKept('spent', first);
    // The provider answers again, but the refresh token may have been rotated away: within
    // the grace window it is not sent again (oidc-provider would revoke the grant).
    for (const wait of [0, 1500]) {
      await sleep(wait);
      const res = await bffFetch(jars.spent, api);
      assert.equal(res.status, 503, await res.text());
      assert.deepEqual(cleared(res), []);
    }
    assert.equal(faults.attempts - attempts, 1, 'one grant, no replay');
    assert.equal(stack.op.stats.refreshFailures, 0, stack.op.stats.lastError);
  });

  test('refreshed tokens too large for the cookies: 503, session kept, never replayed', async () => {
    await sleep(Math.max(0, loginsDone + TTL_MS + 300 - Date.now()));
    const before = (await failures('unusable_tokens')) ?? 0;
    faults.mode = 'huge';
    const attempts = faults.attempts;
    const first = await bffFetch(jars.huge, api);
    faults.mode = undefined;
    assert.equal(first.status, 503, await first.text());
    await assertKept('huge', first);
    assert.equal(await failures('unusable_tokens'), before + 1);
    const again = await bffFetch(jars.huge, api);
    assert.equal(again.status, 503, await again.text());
    assert.equal(faults.attempts - attempts, 1, 'one grant, no replay of the rotated refresh token');
    assert.equal(stack.op.stats.refreshFailures, 0, stack.op.stats.lastError);
  });

  test('invalid_grant still ends the session: 401 and the cookies cleared', async () => {
    await sleep(Math.max(0, loginsDone + TTL_MS + 300 - Date.now()));
    const before = (await failures('invalid_grant')) ?? 0;
    faults.mode = 'invalid_grant';
    const res = await bffFetch(jars.dead, api);
    faults.mode = undefined;
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error: 'login_required' });
    assert.ok(cleared(res).length >= 1, 'the session cookies are cleared');
    assert.equal(await failures('invalid_grant'), before + 1);
    const me = await bffFetch(jars.dead, `${stack.sg.url}/bff/user`);
    assert.equal(me.status, 401);
  });
});

// A refresh refused with an empty 400 (Glewlwyd answers a dead refresh token and a refused
// client alike that way) sends sealgate to the provider's introspection endpoint (RFC 7662):
// only the provider's own `active: false` ends the session. Here the REAL provider (op.mjs,
// introspection on) has faults injected at its token endpoint (the empty 400, faulty.mjs) and
// at its introspection endpoint, failing the ways endpoints fail: a 5xx page, the connection
// cut, no answer at all. Each must keep the session (503 provider_unavailable, no cookie
// cleared); the real endpoint saying `active: true` keeps it too; the real endpoint saying
// `active: false` (the refresh token revoked at the provider) ends it.
//
// Needs target/debug/sealgate (`cargo build`), or SEALGATE_BIN. About 20 s: the hanging
// introspection waits out sealgate's 10 s provider timeout.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { bffFetch, login } from './browserless.mjs';
import { release, tokenFaults } from './faulty.mjs';
import { sealgateBin } from './sealgate.mjs';
import { CLIENT_SECRET, metric, startStack } from './stack.mjs';
import { startUpstream } from './upstream.mjs';

const skip = existsSync(sealgateBin()) ? false : `no sealgate binary at ${sealgateBin()} (cargo build)`;
const TTL_S = 2;
const USERS = ['http_5xx', 'network', 'hang', 'active', 'inactive'];

const cleared = (res) => res.headers.getSetCookie().filter((c) => /max-age=0\b/i.test(c));

describe('an empty 400 at refresh, the introspection endpoint failing or answering', { skip }, () => {
  const token = tokenFaults();
  const intro = tokenFaults({ path: '/token/introspection' });
  let stack;
  let up;
  let api;
  const jars = {};
  const refreshTokens = {};
  let loginsDone;

  before(async () => {
    up = await startUpstream();
    stack = await startStack({
      op: { accessTokenTTL: TTL_S, introspection: true, middleware: [token.middleware, intro.middleware] },
      sealgates: [{ config: { session: { refresh_skew: '1s' }, routes: [{ prefix: '/api/', upstream: up.url }] } }],
    });
    api = `${stack.sg.url}/api/echo`;
    // One at a time: the refresh token the provider issued last is this user's.
    for (const u of USERS) {
      const { jar, callbackResponse } = await login({ bffUrl: stack.sg.url, username: u });
      assert.equal(callbackResponse.status, 302, `login of ${u}: ${stack.sg.logs().slice(-2000)}`);
      jars[u] = jar;
      refreshTokens[u] = stack.op.stats.issuedTokens.at(-1).refresh_token;
      assert.ok(refreshTokens[u], `${u}: a refresh token`);
    }
    loginsDone = Date.now();
  });

  after(async () => {
    release();
    await stack?.stop();
    await up?.close();
  });

  const failures = async (cls) => (await metric(stack.sg.url, 'sealgate_refresh_failures_total', { class: cls })) ?? 0;
  const expired = () => sleep(Math.max(0, loginsDone + TTL_S * 1000 + 300 - Date.now()));
  const call = (user) => bffFetch(jars[user], api, { signal: AbortSignal.timeout(30_000) });
  const assertKept = async (user, res) => {
    assert.deepEqual(cleared(res), [], `${user}: no cookie cleared`);
    const me = await bffFetch(jars[user], `${stack.sg.url}/bff/user`);
    assert.equal(me.status, 200, `${user}: the session is still there`);
  };

  test('introspection answering 5xx, cut, or never: 503, session kept, one grant and one introspection each', { timeout: 40_000 }, async () => {
    await expired();
    token.mode = 'empty_400';
    for (const mode of ['http_5xx', 'network', 'hang']) {
      const before = { token: token.attempts, intro: intro.attempts, other: await failures('http_other') };
      intro.mode = mode;
      const started = Date.now();
      const res = await call(mode);
      const body = await res.text();
      intro.mode = undefined;
      assert.equal(res.status, 503, `${mode}: ${body}\n${stack.sg.logs().slice(-1500)}`);
      assert.deepEqual(JSON.parse(body), { error: 'provider_unavailable' }, mode);
      assert.equal(token.attempts - before.token, 1, `${mode}: one grant`);
      assert.equal(intro.attempts - before.intro, 1, `${mode}: asked the introspection endpoint once`);
      assert.equal(await failures('http_other'), before.other + 1, `${mode}: counted as the empty 400 (http_other)`);
      if (mode === 'hang') assert.ok(Date.now() - started < 25_000, 'answered within the provider timeout');
      await assertKept(mode, res);
    }
    token.mode = undefined;
    assert.match(stack.sg.logs(), /introspection (refused|failed); refresh failure kept transient/);
  });

  test('the real introspection endpoint: active keeps the session, inactive (revoked) ends it', async () => {
    await expired();
    token.mode = 'empty_400';
    try {
      const kept = await call('active');
      assert.equal(kept.status, 503, await kept.text());
      await assertKept('active', kept);

      // Revoke the refresh token at the provider (RFC 7009): its introspection now says inactive.
      const revoked = await fetch(`${stack.op.issuer}/token/revocation`, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`bff:${CLIENT_SECRET}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ token: refreshTokens.inactive, token_type_hint: 'refresh_token' }),
      });
      assert.equal(revoked.status, 200, await revoked.text());
      const fatal = await failures('invalid_grant');
      const ended = await call('inactive');
      assert.equal(ended.status, 401, await ended.text());
      assert.ok(cleared(ended).length > 0, 'cookies cleared');
      assert.equal(await failures('invalid_grant'), fatal + 1, 'counted as a dead refresh token');
      assert.match(stack.sg.logs(), /introspection: inactive/);
    } finally {
      token.mode = undefined;
    }
  });

  test('the provider back: every kept session refreshes and calls through', async () => {
    // A transient failure is shared for 1-1.5 s (refresh.rs backoff): the last one just ended.
    await sleep(1600);
    for (const u of ['http_5xx', 'network', 'hang', 'active']) {
      const res = await call(u);
      assert.equal(res.status, 200, `${u}: ${await res.text()}`);
    }
  });
});

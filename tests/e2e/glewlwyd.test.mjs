// sealgate end to end against a second real provider: Debian's glewlwyd 2.7 (glewlwyd.mjs),
// configured and started by this test on 127.0.0.1 (its own SQLite database and config file).
// The scenarios of bff/proxy/store.test.mjs: login (PAR, as glewlwyd offers it), /bff/user with
// claims and no token, an API call reaching a real upstream with glewlwyd's Bearer token,
// transparent refresh, logout with revocation (the refresh token dead at glewlwyd afterwards),
// RP-initiated logout back to the app, a dead refresh token ending the session and a refused
// client keeping it, back-channel logout with [store] (when redis-server is there), DPoP.
// Glewlwyd's quirks are asserted where they show (see the README's table).
//
// Needs target/debug/sealgate (`cargo build`) and /usr/bin/glewlwyd (`apt-get install -y
// glewlwyd`, or GLEWLWYD); skipped without it unless CI is set.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { decodeJwt } from 'jose';

import { bffFetch } from './browserless.mjs';
import { glewlwydBin, glewlwydEndSession, glewlwydLogin, startGlewlwyd } from './glewlwyd.mjs';
import { redisCliBin, redisServerBin, startRedis } from './redis.mjs';
import { freePort, startSealgate } from './sealgate.mjs';
import { CLIENT_SECRET, Recorder, findLeaks, jarCookies, metric, tokenNeedles, waitUntil } from './stack.mjs';
import { startUpstream } from './upstream.mjs';

const skip = glewlwydBin() || process.env.CI ? false : 'glewlwyd not found (apt-get install -y glewlwyd)';
const HAVE_REDIS = Boolean(redisServerBin() && redisCliBin());
const TTL = 3; // seconds: glewlwyd's access-token duration (one per plugin instance)
const csrf = { 'x-csrf': '1' };
const tail = (sg) => `\n--- sealgate logs (tail) ---\n${sg.logs().slice(-3000)}`;

describe('sealgate with glewlwyd 2.7', { skip }, () => {
  let g; // glewlwyd
  let up; // the upstream
  let sg; // sealgate, debug logs
  let wrong; // sealgate with the same keys and a wrong client secret
  let bcSg; // sealgate with [store], receiving glewlwyd's back-channel logouts
  let redis;
  let rec;
  const stops = [];

  before(async () => {
    const ports = await Promise.all([freePort(), freePort(), freePort()]);
    const urls = ports.map((p) => `http://127.0.0.1:${p}`);
    up = await startUpstream();
    stops.push(() => up.close());
    g = await startGlewlwyd({
      clientSecret: CLIENT_SECRET,
      redirectUris: urls.map((u) => `${u}/bff/callback`),
      postLogoutRedirectUris: urls.map((u) => `${u}/`),
      backchannelLogoutUri: HAVE_REDIS ? `${urls[2]}/bff/backchannel-logout` : undefined,
      accessTokenTTL: TTL,
    });
    stops.push(() => g.close());
    const config = { session: { refresh_skew: '1s' }, routes: [{ prefix: '/api/', upstream: up.url }] };
    sg = await startSealgate({ issuer: g.issuer, clientSecret: CLIENT_SECRET, port: ports[0], config, env: { SEALGATE_LOG: 'debug' } });
    stops.push(() => sg.stop());
    wrong = await startSealgate({ issuer: g.issuer, clientSecret: 'not-the-secret', port: ports[1], config: { ...config, keys: { dir: sg.keysDir } } });
    stops.push(() => wrong.stop());
    if (HAVE_REDIS) {
      redis = await startRedis({ dir: `${sg.dir}/redis` });
      stops.push(() => redis.stop());
      bcSg = await startSealgate({ issuer: g.issuer, clientSecret: CLIENT_SECRET, port: ports[2], config: { ...config, store: { url: `redis://127.0.0.1:${redis.port}` } } });
      stops.push(() => bcSg.stop());
    }
    rec = new Recorder(sg.url);
  });
  after(async () => { for (const stop of stops.reverse()) await stop().catch(() => {}); });

  const login = async (opts = {}) => {
    const r = await glewlwydLogin({ bffUrl: sg.url, jar: rec.jar(), ...opts });
    assert.equal(r.callbackResponse.status, 302, `login failed${tail(opts.bffUrl ? (opts.on ?? sg) : sg)}`);
    return r;
  };
  const lastIssued = () => g.stats.issuedTokens.at(-1);
  // A refresh grant sent straight to glewlwyd, as sealgate would send it.
  const refreshAtGlewlwyd = (refreshToken) => fetch(`${g.issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`bff:${CLIENT_SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
  });

  test('discovery as glewlwyd publishes it: no refresh_token grant type, PAR and DPoP offered', async () => {
    const d = await (await fetch(`${g.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(d.issuer, g.issuer);
    // Quirk 6: refresh tokens are issued and honoured, but the grant type is not listed.
    assert.deepEqual(d.grant_types_supported, ['authorization_code', 'implicit']);
    assert.ok(d.pushed_authorization_request_endpoint, 'PAR');
    assert.ok(d.dpop_signing_alg_values_supported?.length, 'DPoP');
    assert.ok(d.revocation_endpoint && d.introspection_endpoint && d.end_session_endpoint);
    assert.equal((await fetch(`${sg.url}/readyz`)).status, 200);
  });

  test('login (pushed), /bff/user with the claims and no token, an API call with glewlwyd\'s Bearer token', async () => {
    const { jar, authorizeUrl, finalLocation } = await login({ returnTo: '/after' });
    assert.equal(finalLocation, '/after');
    // PAR: glewlwyd offers it, so sealgate (par = auto) pushed the request.
    assert.deepEqual([...new URL(authorizeUrl).searchParams.keys()].sort(), ['client_id', 'request_uri']);
    const issued = lastIssued();
    // Quirks 3 and 4: token_type "bearer" in lower case, auth_time 0.
    assert.equal(issued.token_type, 'bearer');
    assert.equal(decodeJwt(issued.id_token).auth_time, 0);
    // Quirk 5: the access token's aud is the scope string (sealgate never reads it).
    assert.equal(decodeJwt(issued.access_token).aud, 'openid profile email offline_access');

    const res = await bffFetch(jar, `${sg.url}/bff/user`);
    assert.equal(res.status, 200, tail(sg));
    const body = await res.json();
    assert.equal(body.sub, decodeJwt(issued.id_token).sub);
    assert.equal(body.claims.name, 'Alice Example');
    assert.equal(body.claims.email, 'alice@example.com');
    assert.equal(body.claims.preferred_username, 'alice');
    assert.equal(body.claims.auth_time, 0);

    const api = await bffFetch(jar, `${sg.url}/api/echo`);
    assert.equal(api.status, 200, tail(sg));
    assert.equal(up.requests.at(-1).headers.authorization, `Bearer ${issued.access_token}`);
  });

  test('transparent refresh after the access token expired, with the refresh grant discovery does not list', async () => {
    const { jar } = await login();
    const first = lastIssued();
    const refreshes = g.stats.grants.refresh_token ?? 0;
    await sleep((TTL + 0.5) * 1000);
    const api = await bffFetch(jar, `${sg.url}/api/echo`);
    assert.equal(api.status, 200, tail(sg));
    assert.equal(g.stats.grants.refresh_token, refreshes + 1, 'one refresh grant at glewlwyd');
    const second = lastIssued();
    assert.notEqual(second.access_token, first.access_token);
    assert.notEqual(second.refresh_token, first.refresh_token, 'glewlwyd rotated the refresh token');
    assert.equal(up.requests.at(-1).headers.authorization, `Bearer ${second.access_token}`);
    assert.equal((await bffFetch(jar, `${sg.url}/bff/user`)).status, 200);
    // The rotated-away token is dead at glewlwyd: 400 with an EMPTY body (quirk 2).
    const replay = await refreshAtGlewlwyd(first.refresh_token);
    assert.equal(replay.status, 400);
    assert.equal(await replay.text(), '');
  });

  test('logout revokes the refresh token (dead at glewlwyd), RP-initiated logout returns to the app (with state)', async () => {
    const { jar } = await login();
    const { refresh_token: rt } = lastIssued();
    const revocations = g.stats.revocations.length;
    const res = await bffFetch(jar, `${sg.url}/bff/logout`, { method: 'POST' });
    assert.equal(res.status, 200, tail(sg));
    const { redirect } = await res.json();
    assert.equal(g.stats.revocations.length, revocations + 1);
    assert.equal(g.stats.revocations.at(-1).status, 200);
    assert.deepEqual([...jarCookies(jar, sg.url).session, ...jarCookies(jar, sg.url).profile], []);
    assert.equal((await bffFetch(jar, `${sg.url}/bff/user`)).status, 401);
    const dead = await refreshAtGlewlwyd(rt);
    assert.equal(dead.status, 400, 'the refresh token is dead at glewlwyd');

    const target = new URL(redirect);
    assert.equal(`${target.origin}${target.pathname}`, `${g.issuer}/end_session`);
    assert.equal(target.searchParams.get('post_logout_redirect_uri'), `${sg.url}/`);
    const state = target.searchParams.get('state');
    assert.ok(state?.length >= 16, 'sealgate sends a state');
    const page = await jar.fetch(redirect, { redirect: 'manual' });
    assert.equal(page.status, 302);
    const end = await glewlwydEndSession({ jar, url: new URL(page.headers.get('location'), redirect).href });
    assert.equal(end.redirectTo, `${sg.url}/?state=${state}`, 'back to the application');

    // Quirk 1, at glewlwyd itself: the same request without state has no way back.
    const again = await login();
    const hint = lastIssued().id_token;
    const noState = new URL(`${g.issuer}/end_session`);
    noState.searchParams.set('id_token_hint', hint);
    noState.searchParams.set('post_logout_redirect_uri', `${sg.url}/`);
    const p2 = await again.jar.fetch(noState, { redirect: 'manual' });
    const end2 = await glewlwydEndSession({ jar: again.jar, url: new URL(p2.headers.get('location'), noState).href });
    assert.equal(end2.redirectTo, undefined, 'without state glewlwyd names no post_redirect_to');
  });

  test('a dead refresh token (400, empty body; introspection: inactive) ends the session', async () => {
    const { jar } = await login();
    const { refresh_token: rt } = lastIssued();
    // Revoked at glewlwyd behind sealgate's back.
    const revoke = await fetch(`${g.issuer}/revoke`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`bff:${CLIENT_SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: rt, token_type_hint: 'refresh_token' }),
    });
    assert.equal(revoke.status, 200);
    await sleep((TTL + 0.5) * 1000);
    const fatal = await metric(sg.url, 'sealgate_refreshes_total', { outcome: 'fatal' }) ?? 0;
    const api = await bffFetch(jar, `${sg.url}/api/echo`);
    assert.equal(api.status, 401, tail(sg));
    assert.deepEqual(await api.json(), { error: 'login_required' });
    assert.equal(g.stats.tokenAnswers.at(-1).status, 400);
    assert.equal(g.stats.tokenAnswers.at(-1).body, '');
    assert.equal(await metric(sg.url, 'sealgate_refreshes_total', { outcome: 'fatal' }), fatal + 1);
    assert.deepEqual(jarCookies(jar, sg.url).session, [], 'the cookies cleared');
  });

  test('a refused client (the same empty 400; introspection refused) keeps the session', async () => {
    const { jar } = await login();
    await sleep((TTL + 0.5) * 1000);
    // The same cookies at an instance with a wrong client secret (a botched rotation).
    const cookie = jar.list(sg.url).map((c) => `${c.name}=${c.value}`).join('; ');
    const api = await fetch(`${wrong.url}/api/echo`, { headers: { cookie, ...csrf } });
    assert.equal(api.status, 503, tail(wrong));
    assert.deepEqual(await api.json(), { error: 'provider_unavailable' });
    assert.equal(g.stats.tokenAnswers.at(-1).status, 400);
    assert.equal(g.stats.tokenAnswers.at(-1).body, '');
    assert.equal(await metric(wrong.url, 'sealgate_refresh_failures_total', { class: 'http_other' }), 1);
    assert.ok(!api.headers.getSetCookie().some((c) => /Max-Age=0/.test(c)), 'no cookie cleared');
    assert.ok(jarCookies(jar, sg.url).session.length > 0);
    // Glewlwyd burned the one-use refresh token all the same (the grant with the wrong secret
    // disabled it): the right instance hears the same empty 400, introspection says inactive,
    // and the session ends there.
    const right = await bffFetch(jar, `${sg.url}/api/echo`);
    assert.equal(right.status, 401, tail(sg));
    assert.match(sg.logs(), /refresh token refused class="invalid_grant" error=400 server returned empty error response; introspection: inactive/);
  });

  // Glewlwyd types its logout tokens `typ: JWT`, which sealgate takes as untyped
  // (src/oidc/logout_token.rs): the claims (events, no nonce) decide.
  test('back-channel logout from glewlwyd ends the session ([store])', { skip: HAVE_REDIS ? false : 'redis-server not found' }, async () => {
    const { jar } = await glewlwydLogin({ bffUrl: bcSg.url, username: 'bob' });
    assert.equal((await bffFetch(jar, `${bcSg.url}/bff/user`)).status, 200, tail(bcSg));
    const { sid } = decodeJwt(lastIssued().id_token);
    // Glewlwyd also delivers logout tokens for the other suites' sessions of this client to
    // this endpoint (their logouts came earlier): count from here.
    const before = await metric(bcSg.url, 'sealgate_backchannel_logouts_total', { outcome: 'ok' }) ?? 0;
    // The end-session page's "log out": DELETE /api/oidc/session/{sid} sends the logout tokens.
    const del = await jar.fetch(`${g.base}/api/oidc/session/${sid}`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    await waitUntil(async () => (await bffFetch(jar, `${bcSg.url}/bff/user`)).status === 401, 3000, 'the session ended')
      .catch((e) => { throw new Error(`${e.message}${tail(bcSg)}\n--- glewlwyd ---\n${g.logs().slice(-3000)}`); });
    const after = await metric(bcSg.url, 'sealgate_backchannel_logouts_total', { outcome: 'ok' });
    assert.ok(after >= before + 1, `${before} -> ${after}${tail(bcSg)}`);
    assert.equal(await metric(bcSg.url, 'sealgate_backchannel_logouts_total', { outcome: 'invalid' }) ?? 0, 0, 'no logout token refused');
  });

  test('DPoP: glewlwyd issues a DPoP-bound token to sealgate with dpop = true', async () => {
    // On `wrong`'s port, the only other redirect URI glewlwyd knows (its tests are done).
    await wrong.stop();
    const d = await startSealgate({ issuer: g.issuer, clientSecret: CLIENT_SECRET, port: wrong.port, dpop: true, config: { routes: [{ prefix: '/api/', upstream: up.url }] } });
    stops.push(() => d.stop());
    const { jar } = await glewlwydLogin({ bffUrl: d.url });
    assert.equal(lastIssued().token_type, 'DPoP');
    const api = await bffFetch(jar, `${d.url}/api/echo`);
    assert.equal(api.status, 200, tail(d));
    const h = up.requests.at(-1).headers;
    assert.match(h.authorization, /^DPoP /);
    assert.ok(h.dpop, 'a proof for the upstream');
  });

  test('no token in anything sealgate sent to the browser, nor in its logs', () => {
    const needles = tokenNeedles(g.stats.issuedTokens);
    // The ID token goes to glewlwyd as id_token_hint in the logout redirect (by design).
    const allow = (e, label) => label.startsWith('id_token') && e.url.includes('/bff/logout');
    assert.deepEqual(findLeaks(rec.entries, needles, allow), []);
    const logs = sg.logs();
    assert.deepEqual(needles.filter(({ needle }) => logs.includes(needle)).map((n) => n.label), []);
  });
});

// FAPI 2.0 end to end (issue #14): the real provider (oidc-provider, op.mjs) as a FAPI 2.0
// authorization server (PAR required, DPoP required with server nonces, private_key_jwt only,
// refresh tokens not rotated) and a resource server that accepts only DPoP-bound tokens with
// valid proofs (dpop-upstream.mjs).
//
// 1. The harness itself, with a FAPI client written in Node (fapi-client.mjs): the provider and
//    the resource server accept a correct client and refuse each wrong step, so that what
//    sealgate achieves against them means something.
// 2. sealgate (real binary) with client_auth = "private_key_jwt", par = "required", dpop = true:
//    login, API calls, two sessions with two keys, refresh with DPoP, nonces at the provider and
//    the resource server, no token in anything the browser sees; with dpop = false a clear
//    failure.
// 3. The ordinary path (client_secret_basic, Bearer) on a provider that offers PAR without
//    requiring it; bff.test.mjs and proxy.test.mjs cover the rest of that path.
//
// Needs target/debug/sealgate (`cargo build`), or SEALGATE_BIN.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { calculateJwkThumbprint, decodeJwt } from 'jose';

import { CookieJar, bffFetch, completeCallback, login, loginUntilCallback } from './browserless.mjs';
import { athOf, providerIntrospection, startDpopUpstream } from './dpop-upstream.mjs';
import { FapiClient } from './fapi-client.mjs';
import { startProvider } from './op.mjs';
import { clientKeygen, freePort, startSealgate } from './sealgate.mjs';
import { CLIENT_SECRET, Recorder, assertNoSessionSet, findLeaks, tokenNeedles } from './stack.mjs';
import { startUpstream } from './upstream.mjs';

const SHORT_TTL = 3; // seconds: access tokens of subjects named short-*; everyone else 300 s
const accessTokenTTL = (ctx, token) => (String(token.accountId).startsWith('short-') ? SHORT_TTL : 300);
const tail = (sg) => `\n--- sealgate logs (tail) ---\n${sg.logs().slice(-3000)}`;
const csrf = { 'x-csrf': '1' };

// ---- 1. the harness ------------------------------------------------------------------------

describe('the FAPI provider and the DPoP resource server, with a FAPI client in Node', () => {
  const redirectUri = 'http://127.0.0.1:9/cb'; // never visited: the driver stops at it
  let op;
  let rs;
  let client;

  before(async () => {
    const pre = await FapiClient.create({ issuer: 'unknown yet', redirectUri });
    op = await startProvider({ redirectUris: [redirectUri], fapi: { jwks: [pre.publicJwk] }, accessTokenTTL });
    client = new FapiClient({ ...pre, issuer: op.issuer });
    rs = await startDpopUpstream({ introspect: providerIntrospection(op.provider) });
  });
  after(async () => {
    await rs?.close();
    await op?.close();
  });

  test('a correct client logs in with PAR + private_key_jwt + DPoP, calls the resource server, refreshes with the same key', async () => {
    const md = await client.discover();
    assert.equal(md.require_pushed_authorization_requests, true);
    assert.deepEqual(md.token_endpoint_auth_methods_supported, ['private_key_jwt']);
    assert.deepEqual(md.code_challenge_methods_supported, ['S256']);
    assert.ok(md.dpop_signing_alg_values_supported.includes('EdDSA'));

    const dpop = await client.newDpopKey();
    const tokens = await client.login({ jar: new CookieJar(), dpop, username: 'short-node' });
    assert.equal(tokens.token_type, 'DPoP');
    assert.equal(op.stats.dpopNonceChallenges['/token'], 1, 'the first proof at the token endpoint is challenged');
    assert.deepEqual(Object.keys(op.stats.authorizationRequests.at(-1)).sort(), ['client_id', 'request_uri']);

    rs.requireNonce = true;
    const res = await client.callResource(`${rs.url}/api/echo?q=1`, tokens.access_token, dpop);
    assert.equal(res.status, 200, JSON.stringify(rs.refusals));
    assert.equal((await res.json()).jkt, dpop.jkt);
    assert.equal(rs.nonceChallenges, 1, 'the resource server demanded its nonce once');
    rs.requireNonce = false;

    await sleep(SHORT_TTL * 1000 + 300);
    const expired = await client.callResource(`${rs.url}/api/echo`, tokens.access_token, dpop);
    assert.equal(expired.status, 401);
    assert.equal(rs.refusals.at(-1).reason, 'inactive');

    const refreshed = await (await client.refresh({ refreshToken: tokens.refresh_token, dpop })).json();
    assert.equal(refreshed.token_type, 'DPoP', JSON.stringify(refreshed));
    assert.equal(refreshed.refresh_token, tokens.refresh_token, 'refresh tokens are not rotated');
    const again = await client.callResource(`${rs.url}/api/echo`, refreshed.access_token, dpop);
    assert.equal(again.status, 200);
    assert.equal((await again.json()).jkt, dpop.jkt, 'the new access token is bound to the same key');
  });

  test('the provider refuses: no PAR, a wrong assertion audience, a client secret, plain PKCE, no proof, another key (and burns that code)', async () => {
    const md = await client.discover();
    // An authorization request in the front channel: FAPI 2.0 requires PAR.
    const plain = new URL(md.authorization_endpoint);
    for (const [k, v] of Object.entries({ client_id: 'bff', response_type: 'code', redirect_uri: redirectUri, scope: 'openid', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })) plain.searchParams.set(k, v);
    const front = await fetch(plain, { redirect: 'manual' });
    const where = front.headers.get('location') ?? '';
    assert.ok(front.status === 400 || /error=invalid_request/.test(where), `front-channel request: ${front.status} ${where}`);

    const par = md.pushed_authorization_request_endpoint;
    const request = {
      response_type: 'code', redirect_uri: redirectUri, scope: 'openid', code_challenge_method: 'S256',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    };
    assert.equal((await client.postForm(par, request)).status, 201, 'control: the request with a correct assertion');
    const aud = await fetch(par, {
      method: 'POST',
      body: new URLSearchParams({
        client_id: 'bff', ...request, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await client.assertion({ aud: md.token_endpoint }),
      }),
    });
    assert.equal(aud.status, 401, 'aud = the token endpoint, not the issuer');
    assert.equal((await aud.json()).error, 'invalid_client');
    const secret = await fetch(par, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`bff:${CLIENT_SECRET}`).toString('base64')}` },
      body: new URLSearchParams(request),
    });
    assert.equal(secret.status, 401, 'client_secret_basic');
    const plainPkce = await client.pushAuthorizationRequest({ extra: { code_challenge_method: 'plain' } });
    assert.equal(plainPkce.res.status, 400);

    const dpop = await client.newDpopKey();
    const other = await client.newDpopKey();
    const pushed = await client.pushAuthorizationRequest({ dpop });
    const cb = await client.authorize({ jar: new CookieJar(), authorizeUrl: pushed.authorizeUrl });
    const noProof = await client.exchangeCode({ code: cb.code, verifier: pushed.verifier });
    assert.equal(noProof.status, 400);
    assert.equal((await noProof.json()).error, 'invalid_grant');
    const wrongKey = await client.exchangeCode({ code: cb.code, verifier: pushed.verifier, dpop: other });
    assert.equal((await wrongKey.json()).error, 'invalid_grant');
    const rightKey = await client.exchangeCode({ code: cb.code, verifier: pushed.verifier, dpop });
    assert.equal((await rightKey.json()).error, 'invalid_grant', 'a code exchanged with another key is burned');
  });

  test('the resource server refuses every wrong proof and a token bound to another key', async () => {
    const dpop = await client.newDpopKey();
    const other = await client.newDpopKey();
    const tokens = await client.login({ jar: new CookieJar(), dpop, username: 'rs-check' });
    const token = tokens.access_token;
    const url = `${rs.url}/api/echo`;
    const proof = (o = {}) => FapiClient.proof(o.key ?? dpop, { htm: 'GET', htu: url, accessToken: token, ...o });
    const send = (p, { scheme = 'DPoP', headers } = {}) => fetch(url, { headers: headers ?? { authorization: `${scheme} ${token}`, dpop: p } });
    const forged = () => proof({ key: other, header: { jwk: dpop.jwk } }); // signed by another key than its jwk
    const accepted = await proof();
    const cases = [
      ['scheme', async () => send(await proof(), { scheme: 'Bearer' })],
      ['proof_count', async () => send(undefined, { headers: { authorization: `DPoP ${token}` } })],
      ['proof_count', async () => send(undefined, { headers: [['authorization', `DPoP ${token}`], ['dpop', await proof()], ['dpop', await proof()]] })],
      ['signature', async () => send(await proof({ header: { typ: 'JWT' } }))],
      ['signature', async () => send(await forged())],
      ['htm', async () => send(await proof({ htm: 'POST' }))],
      ['htu', async () => send(await proof({ htu: `${rs.url}/api/other` }))],
      ['htu', async () => send(await proof({ htu: url.replace('127.0.0.1', 'localhost') }))],
      ['iat', async () => send(await proof({ overrides: { iat: Math.floor(Date.now() / 1000) - 120 } }))],
      ['jti', async () => send(await proof({ overrides: { jti: undefined } }))],
      ['ath', async () => send(await proof({ accessToken: `${token}x` }))],
      ['ath', async () => send(await proof({ overrides: { ath: undefined } }))],
      ['cnf', async () => send(await proof({ key: other }))],
    ];
    const before = rs.calls.length;
    for (const [reason, request] of cases) {
      const res = await request();
      assert.equal(res.status, 401, reason);
      assert.match(res.headers.get('www-authenticate'), /^DPoP error="/);
      assert.equal(rs.refusals.at(-1).reason, reason, `expected ${reason}, got ${JSON.stringify(rs.refusals.at(-1))}`);
    }
    assert.equal(rs.calls.length, before, 'no refused request was served');

    assert.equal((await send(accepted)).status, 200, 'control: a correct proof');
    assert.equal((await send(accepted)).status, 401, 'the same proof again');
    assert.equal(rs.refusals.at(-1).reason, 'jti');
    const withQuery = await fetch(`${url}?a=1`, { headers: { authorization: `DPoP ${token}`, dpop: await proof({ htu: `${url}?b=2` }) } });
    assert.equal(withQuery.status, 200, 'htu is compared without the query (RFC 9449 §4.3)');
    assert.equal(rs.calls.at(-1).ath, athOf(token));
    const unknown = await fetch(url, { headers: { authorization: 'DPoP not-a-token', dpop: await FapiClient.proof(dpop, { htm: 'GET', htu: url, accessToken: 'not-a-token' }) } });
    assert.equal(unknown.status, 401);
    assert.equal(rs.refusals.at(-1).reason, 'inactive');
  });
});

// ---- 2. sealgate as a FAPI 2.0 client ---------------------------------------------------------

describe('sealgate as a FAPI 2.0 client (private_key_jwt, PAR required, DPoP)', () => {
  let tmp;
  let clientJwk;
  let op;
  let rs;
  let sg; // dpop = true, SEALGATE_LOG=debug
  let sgNoDpop; // the same client with dpop = false
  let rec;

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'sealgate-fapi-'));
    const keyFile = path.join(tmp, 'client-key.pem');
    clientJwk = await clientKeygen(keyFile);
    const ports = [await freePort(), await freePort()];
    const urls = ports.map((p) => `http://127.0.0.1:${p}`);
    op = await startProvider({
      redirectUris: urls.map((u) => `${u}/bff/callback`),
      postLogoutRedirectUris: urls.map((u) => `${u}/`),
      fapi: { jwks: [clientJwk] },
      accessTokenTTL,
    });
    rs = await startDpopUpstream({ introspect: providerIntrospection(op.provider) });
    const common = {
      issuer: op.issuer,
      clientAuth: 'private_key_jwt',
      clientKey: keyFile,
      par: 'required',
      config: {
        session: { refresh_skew: '1s' },
        routes: [{ prefix: '/api/', upstream: rs.url }, { prefix: '/rs/', upstream: rs.url, strip_prefix: true }],
      },
    };
    [sg, sgNoDpop] = await Promise.all([
      startSealgate({ ...common, port: ports[0], dpop: true, env: { SEALGATE_LOG: 'debug' } }),
      startSealgate({ ...common, port: ports[1], dpop: false }),
    ]);
    rec = new Recorder(sg.url, sgNoDpop.url);
  });
  after(async () => {
    await Promise.all([sg?.stop(), sgNoDpop?.stop()]);
    await rs?.close();
    await op?.close();
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  async function loggedIn(username, on = sg) {
    const r = await login({ bffUrl: on.url, username, jar: rec.jar() });
    assert.equal(r.callbackResponse.status, 302, `login of ${username}: ${r.callbackResponse.status} (${op.stats.lastError})${tail(on)}`);
    return r;
  }
  const api = (jar, p, init = {}) => bffFetch(jar, `${sg.url}${p}`, init);
  // The PAR request whose request_uri the browser was sent to.
  const pushedFor = (authorizeUrl) => op.stats.pushedAuthorizationRequests
    .find((r) => r.requestUri === new URL(authorizeUrl).searchParams.get('request_uri'));

  test('sealgate client-key printed a public ES256 JWK with a kid and no private part; /bff/jwks.json publishes it', async () => {
    assert.equal(clientJwk.kty, 'EC');
    assert.equal(clientJwk.crv, 'P-256');
    assert.equal(clientJwk.alg, 'ES256');
    assert.ok(clientJwk.kid && clientJwk.x && clientJwk.y);
    assert.equal(clientJwk.d, undefined);
    const res = await rec.fetch(`${sg.url}/bff/jwks.json`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { keys: [clientJwk] });
  });

  test('login: PAR with private_key_jwt and dpop_jkt; the browser sees only client_id + request_uri; the code exchanged with a proof by that key', async () => {
    const assertionsBefore = op.stats.clientAssertions.length;
    const proofsBefore = op.stats.dpopProofs.length;
    const { authorizeUrl } = await loggedIn('alice');

    const auth = new URL(authorizeUrl);
    assert.equal(`${auth.origin}${auth.pathname}`, (await (await fetch(`${op.issuer}/.well-known/openid-configuration`)).json()).authorization_endpoint);
    assert.deepEqual([...auth.searchParams.keys()].sort(), ['client_id', 'request_uri']);
    assert.equal(auth.searchParams.get('client_id'), 'bff');

    const pushed = pushedFor(authorizeUrl);
    assert.ok(pushed, 'the request_uri came from a PAR request');
    assert.equal(pushed.status, 201);
    assert.equal(pushed.clientAuth, 'private_key_jwt');
    const p = pushed.params;
    assert.equal(p.response_type, 'code');
    assert.equal(p.client_id, 'bff');
    assert.equal(p.redirect_uri, `${sg.url}/bff/callback`);
    assert.equal(p.code_challenge_method, 'S256');
    assert.match(p.code_challenge, /^[A-Za-z0-9_-]{43}$/);
    assert.ok(p.state?.length >= 16 && p.nonce?.length >= 16);
    assert.match(p.dpop_jkt, /^[A-Za-z0-9_-]{43}$/, 'the session key is bound at PAR (RFC 9449 §10)');

    // RFC 7523 §3 + FAPI 2.0: iss = sub = client_id, aud = the issuer, short-lived, unique jti, kid.
    const assertions = op.stats.clientAssertions.slice(assertionsBefore);
    assert.ok(assertions.length >= 2, 'PAR and the token endpoint');
    for (const { path: where, header, claims } of assertions) {
      assert.equal(header.alg, 'ES256', where);
      assert.equal(header.kid, clientJwk.kid, where);
      assert.equal(claims.iss, 'bff');
      assert.equal(claims.sub, 'bff');
      assert.equal(claims.aud, op.issuer);
      assert.ok(claims.exp > Date.now() / 1000 && claims.exp - (claims.iat ?? Date.now() / 1000) <= 300, `exp ${claims.exp}`);
    }
    const jtis = op.stats.clientAssertions.map((a) => a.claims.jti);
    assert.equal(new Set(jtis).size, jtis.length, 'every assertion has its own jti');

    const proofs = op.stats.dpopProofs.slice(proofsBefore).filter((x) => x.path === '/token');
    assert.ok(proofs.length >= 1);
    for (const { header, claims } of proofs) {
      assert.equal(header.typ, 'dpop+jwt');
      assert.equal(await calculateJwkThumbprint(header.jwk), p.dpop_jkt, 'the proof key is the one bound at PAR');
      assert.equal(header.jwk.d, undefined);
      assert.equal(claims.htm, 'POST');
      assert.equal(claims.htu, `${op.issuer}/token`);
    }
    const exchange = op.stats.tokenRequests.filter((t) => t.grantType === 'authorization_code').at(-1);
    assert.equal(exchange.status, 200);
    assert.equal(exchange.tokenType, 'DPoP');
    assert.equal(exchange.clientAuth, 'private_key_jwt');
  });

  test('the provider\'s DPoP nonce was demanded and satisfied, and remembered for later proofs', async () => {
    assert.ok(op.stats.dpopNonceChallenges['/token'] >= 1, JSON.stringify(op.stats.dpopNonceChallenges));
    const token = op.stats.dpopProofs.filter((x) => x.path === '/token');
    assert.ok(token.some((x) => x.claims.nonce && x.status === 200), 'a proof with the nonce succeeded');
    const challenges = op.stats.dpopNonceChallenges['/token'];
    await loggedIn('second-login');
    assert.equal(op.stats.dpopNonceChallenges['/token'], challenges, 'a later login uses the remembered nonce: no new challenge');
  });

  test('API calls carry DPoP proofs the resource server accepts; two sessions, two keys; every proof fresh', async () => {
    const a = await loggedIn('api-a');
    const b = await loggedIn('api-b');
    const jktA = pushedFor(a.authorizeUrl).params.dpop_jkt;
    const jktB = pushedFor(b.authorizeUrl).params.dpop_jkt;
    assert.notEqual(jktA, jktB, 'each login has its own key');

    const n = rs.calls.length;
    for (const [jar, sub, jkt] of [[a.jar, 'api-a', jktA], [b.jar, 'api-b', jktB]]) {
      const get = await api(jar, '/api/echo?q=1');
      assert.equal(get.status, 200, `${sub}: ${JSON.stringify(rs.refusals.at(-1))}${tail(sg)}`);
      assert.deepEqual(await get.json(), { ok: true, method: 'GET', path: '/api/echo', sub, jkt, bodyLength: 0 });
      const post = await api(jar, '/api/echo', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"hello":"dpop"}' });
      assert.equal(post.status, 200, `${sub} POST: ${JSON.stringify(rs.refusals.at(-1))}`);
      assert.equal((await post.json()).bodyLength, 16);
    }
    const calls = rs.calls.slice(n);
    assert.deepEqual(calls.map((c) => [c.sub, c.jkt]), [['api-a', jktA], ['api-a', jktA], ['api-b', jktB], ['api-b', jktB]]);
    for (const c of calls) assert.equal(c.htu, `${rs.url}/api/echo`, 'htu without the query');
    assert.equal(new Set(calls.map((c) => c.jti)).size, 4, 'a fresh proof per call, cache hit or not');

    // htu is the URL sealgate sends upstream: after strip_prefix, without the query.
    const stripped = await api(a.jar, '/rs/api/echo?z=1');
    assert.equal(stripped.status, 200, JSON.stringify(rs.refusals.at(-1)));
    assert.deepEqual([rs.calls.at(-1).path, rs.calls.at(-1).htu], ['/api/echo', `${rs.url}/api/echo`]);
  });

  test('a resource-server nonce challenge is retried once, for GET and a small POST; the nonce is remembered; a server never satisfied gets two attempts', async () => {
    const { jar } = await loggedIn('rs-nonce');
    rs.requireNonce = true;
    try {
      rs.rotateNonce();
      let challenges = rs.nonceChallenges;
      const get = await api(jar, '/api/echo');
      assert.equal(get.status, 200, `${JSON.stringify(rs.refusals.slice(-2))}${tail(sg)}`);
      assert.equal(rs.nonceChallenges - challenges, 1);
      assert.equal(rs.calls.at(-1).nonce, rs.nonce);

      challenges = rs.nonceChallenges;
      assert.equal((await api(jar, '/api/echo')).status, 200);
      assert.equal(rs.nonceChallenges, challenges, 'the next call carries the remembered nonce');

      rs.rotateNonce();
      const post = await api(jar, '/api/echo', { method: 'POST', body: 'x'.repeat(1000) });
      assert.equal(post.status, 200);
      assert.equal((await post.json()).bodyLength, 1000, 'the retried POST carried the whole body');
      assert.equal(rs.nonceChallenges - challenges, 1);

      rs.requireNonce = 'always';
      const refusalsBefore = rs.refusals.length;
      const stubborn = await api(jar, '/api/echo');
      assert.equal(stubborn.status, 401, 'the second challenge reaches the browser');
      assert.equal(rs.refusals.length - refusalsBefore, 2, 'one retry, not a loop');
      assert.ok(rs.refusals.slice(refusalsBefore).every((r) => r.reason === 'nonce'));
    } finally {
      rs.requireNonce = false;
    }
  });

  test('after the access token expired, a call passes: one refresh grant with a DPoP proof by the session\'s key', async () => {
    const { jar, authorizeUrl } = await loggedIn('short-refresh');
    const jkt = pushedFor(authorizeUrl).params.dpop_jkt;
    assert.equal((await api(jar, '/api/echo')).status, 200);
    const firstAth = rs.calls.at(-1).ath;
    const grants = op.stats.refreshGrants;
    const proofs = op.stats.dpopProofs.length;
    await sleep(SHORT_TTL * 1000 + 300);

    const res = await api(jar, '/api/echo');
    assert.equal(res.status, 200, `${JSON.stringify(rs.refusals.at(-1))} (${op.stats.lastError})${tail(sg)}`);
    assert.equal(op.stats.refreshGrants - grants, 1, 'one refresh grant');
    const refresh = op.stats.tokenRequests.filter((t) => t.grantType === 'refresh_token').at(-1);
    assert.deepEqual([refresh.status, refresh.clientAuth, refresh.dpop, refresh.tokenType], [200, 'private_key_jwt', true, 'DPoP']);
    const refreshProofs = op.stats.dpopProofs.slice(proofs).filter((x) => x.path === '/token');
    assert.ok(refreshProofs.length >= 1, 'the refresh carried a proof');
    for (const x of refreshProofs) assert.equal(await calculateJwkThumbprint(x.header.jwk), jkt, 'the refresh proof is by the session key');
    const call = rs.calls.at(-1);
    assert.equal(call.jkt, jkt, 'the new access token is bound to the same key');
    assert.notEqual(call.ath, firstAth, 'and it is a new access token');
  });

  test('with dpop = false the DPoP-required provider refuses the code exchange: a clear login failure page, no session', async () => {
    const half = await loginUntilCallback({ bffUrl: sgNoDpop.url, username: 'no-dpop', jar: rec.jar() });
    assert.equal(pushedFor(half.authorizeUrl).params.dpop_jkt, undefined);
    const { callbackResponse } = await completeCallback(half);
    assert.ok([400, 502].includes(callbackResponse.status), `status ${callbackResponse.status}${tail(sgNoDpop)}`);
    assert.match(callbackResponse.headers.get('content-type') ?? '', /^text\/html/);
    assertNoSessionSet(callbackResponse, sgNoDpop.url);
    const exchange = op.stats.tokenRequests.filter((t) => t.grantType === 'authorization_code').at(-1);
    assert.deepEqual([exchange.status, exchange.error, exchange.dpop], [400, 'invalid_grant', false]);
    assert.equal((await bffFetch(half.jar, `${sgNoDpop.url}/bff/user`)).status, 401);
  });

  test('/bff/user and every answer the browser saw carry no token; the debug logs neither', async () => {
    const { jar } = await loggedIn('no-leak');
    assert.equal((await api(jar, '/api/echo')).status, 200);
    const res = await bffFetch(jar, `${sg.url}/bff/user`);
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.sub, 'no-leak');
    assert.doesNotMatch(JSON.stringify(body), /dpop|_token"|"k"/i, 'no token, no key, not even their names');

    const issued = op.stats.issuedTokens;
    assert.ok(issued.length >= 2, `${issued.length} token answers to look for`);
    const needles = tokenNeedles(issued);
    assert.deepEqual(findLeaks(await rec.settled(), needles), []);
    const logs = sg.logs();
    assert.deepEqual(needles.filter(({ needle }) => logs.includes(needle)).map((x) => x.label), [], 'sealgate logged a token');
    // The tokens searched for were all DPoP-bound ones.
    assert.deepEqual([...new Set(op.stats.tokenRequests.filter((t) => t.status === 200).map((t) => t.tokenType))], ['DPoP']);
  });

  // After the leak search: the logout answer carries the ID token as id_token_hint, by design.
  test('logout: the refresh token revoked with private_key_jwt, cookies cleared, the API refused', async () => {
    const { jar } = await loggedIn('logout');
    const stats = { revocations: op.stats.revocations, revoked: op.stats.revokedRefreshTokens, assertions: op.stats.clientAssertions.length };
    const res = await bffFetch(jar, `${sg.url}/bff/logout`, { method: 'POST' });
    assert.equal(res.status, 200, tail(sg));
    assert.ok((await res.json()).redirect.startsWith(`${op.issuer}/session/end?`));
    assert.equal(op.stats.revocations, stats.revocations + 1);
    assert.equal(op.stats.revokedRefreshTokens, stats.revoked + 1, 'the refresh token was found and revoked');
    assert.deepEqual(op.stats.clientAssertions.slice(stats.assertions).map((a) => [a.path, a.claims.aud]), [['/token/revocation', op.issuer]]);
    assert.equal((await api(jar, '/api/echo')).status, 401);
  });
});

// ---- 3. the ordinary path still works -------------------------------------------------------

describe('sealgate with default [oidc] settings against a provider offering PAR: client_secret_basic and Bearer', () => {
  let op;
  let up;
  let sg;
  let rec;

  before(async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    op = await startProvider({ clientSecret: CLIENT_SECRET, redirectUris: [`${url}/bff/callback`], par: true, accessTokenTTL });
    up = await startUpstream();
    sg = await startSealgate({
      issuer: op.issuer, clientSecret: CLIENT_SECRET, port,
      config: {
        session: { refresh_skew: '1s' },
        routes: [{ prefix: '/api/', upstream: up.url }],
        // What Google (access_type) or Auth0 (audience) users configure: pushed with the rest.
        oidc: { authorization_params: { ui_locales: 'de-CH', audience: 'https://api.example.com/' } },
      },
    });
    rec = new Recorder(sg.url);
  });
  after(async () => {
    await sg?.stop();
    await up?.close();
    await op?.close();
  });

  test('par = "auto" pushes with client_secret_basic and oidc.authorization_params, no DPoP anywhere: Bearer upstream, Bearer after a refresh, no token in /bff/user', async () => {
    const { jar, authorizeUrl, callbackResponse } = await login({ bffUrl: sg.url, username: 'short-plain', jar: rec.jar() });
    assert.equal(callbackResponse.status, 302, `${op.stats.lastError}${tail(sg)}`);
    assert.deepEqual([...new URL(authorizeUrl).searchParams.keys()].sort(), ['client_id', 'request_uri'], 'auto: PAR when the provider offers it');
    const pushed = op.stats.pushedAuthorizationRequests.at(-1);
    assert.deepEqual([pushed.status, pushed.clientAuth, pushed.dpop, pushed.params.dpop_jkt], [201, 'client_secret_basic', undefined, undefined]);
    assert.deepEqual([pushed.params.ui_locales, pushed.params.audience], ['de-CH', 'https://api.example.com/'], 'oidc.authorization_params pushed');
    assert.equal(op.stats.dpopProofs.length, 0);
    assert.deepEqual(op.stats.tokenRequests.map((t) => [t.clientAuth, t.dpop, t.tokenType]), [['client_secret_basic', false, 'Bearer']]);

    const call = async () => {
      const res = await bffFetch(jar, `${sg.url}/api/echo`);
      assert.equal(res.status, 200, tail(sg));
      const echo = await res.json();
      assert.equal(echo.authorization.scheme, 'Bearer');
      assert.equal(echo.headers.dpop, undefined, 'no DPoP header for a Bearer session');
      return up.requests.at(-1).headers.authorization;
    };
    const first = await call();
    await sleep(SHORT_TTL * 1000 + 300);
    const second = await call();
    assert.equal(op.stats.refreshGrants, 1);
    assert.notEqual(second, first, 'a new access token after the refresh');
    assert.deepEqual(op.stats.tokenRequests.at(-1), { grantType: 'refresh_token', clientAuth: 'client_secret_basic', status: 200, error: undefined, tokenType: 'Bearer', dpop: false });

    const user = await bffFetch(jar, `${sg.url}/bff/user`);
    assert.equal(user.status, 200);
    assert.equal((await rec.fetch(`${sg.url}/bff/jwks.json`)).status, 404, 'no client keys with a client secret');
    assert.deepEqual(findLeaks(await rec.settled(), tokenNeedles(op.stats.issuedTokens)), []);
  });
});

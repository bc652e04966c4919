// Tests of the harness itself, without sealgate: the real provider (op.mjs) driven by a
// minimal relying party written here, the hostile provider (hostile.mjs), the cookie jar and
// form parser (browserless.mjs), and the process launcher (sealgate.mjs, with a fake binary).
// Run: cd tests/e2e && node --test

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';

import { startProvider } from './op.mjs';
import { SCENARIOS, SCENARIO_NAMES, startHostile } from './hostile.mjs';
import {
  CookieJar, bffFetch, completeCallback, completeEndSession, driveProvider, login, loginUntilCallback, parseForms, parseSetCookie,
} from './browserless.mjs';
import { startSealgate, toToml } from './sealgate.mjs';

const CLIENT_ID = 'bff';
const CLIENT_SECRET = 'selftest secret: with+odd/chars';
// Nothing listens here: the relying party stops at the redirect and reads the URL.
const REDIRECT_URI = 'http://127.0.0.1:9/cb';
const POST_LOGOUT_URI = 'http://127.0.0.1:9/';

const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
const pkcePair = () => {
  const verifier = crypto.randomBytes(32).toString('base64url');
  return { verifier, challenge: crypto.hash('sha256', verifier, 'base64url') };
};

async function discover(issuer) {
  const res = await fetch(`${issuer}/.well-known/openid-configuration`);
  assert.equal(res.status, 200);
  return res.json();
}

async function tokenRequest(meta, params, secret = CLIENT_SECRET) {
  const res = await fetch(meta.token_endpoint, {
    method: 'POST',
    headers: { authorization: basic(CLIENT_ID, secret) },
    body: new URLSearchParams(params),
  });
  return { status: res.status, body: await res.json() };
}

describe('op.mjs: the real oidc-provider', () => {
  let op;
  let meta;
  before(async () => {
    op = await startProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUris: [REDIRECT_URI],
      postLogoutRedirectUris: [POST_LOGOUT_URI],
    });
    meta = await discover(op.issuer);
  });
  after(() => op?.close());

  // A minimal relying party: authorization code + PKCE S256 + state + nonce, through the
  // provider's real login and consent forms, then the code exchange with client_secret_basic.
  async function rpLogin({ username = 'alice', jar = new CookieJar(), pkce = true } = {}) {
    const { verifier, challenge } = pkcePair();
    const state = crypto.randomBytes(8).toString('hex');
    const nonce = crypto.randomBytes(8).toString('hex');
    const url = new URL(meta.authorization_endpoint);
    const params = {
      client_id: CLIENT_ID,
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      scope: 'openid profile email offline_access',
      state,
      nonce,
      ...(pkce ? { code_challenge: challenge, code_challenge_method: 'S256' } : {}),
    };
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    const { callbackUrl, trail } = await driveProvider({ jar, url: url.href, username, stopAt: (u) => u.startsWith(REDIRECT_URI) });
    const callback = new URL(callbackUrl).searchParams;
    return { jar, trail, callback, state, nonce, verifier };
  }

  async function rpLoginWithTokens(opts) {
    const login = await rpLogin(opts);
    assert.equal(login.callback.get('error'), null, login.callback.get('error_description') ?? '');
    const tokens = await tokenRequest(meta, {
      grant_type: 'authorization_code',
      code: login.callback.get('code'),
      redirect_uri: REDIRECT_URI,
      code_verifier: login.verifier,
    });
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    return { ...login, tokens: tokens.body };
  }

  const refresh = (refreshToken) => tokenRequest(meta, { grant_type: 'refresh_token', refresh_token: refreshToken });

  test('discovery advertises what a BFF needs, including the RFC 9207 iss parameter', () => {
    assert.equal(meta.issuer, op.issuer);
    assert.match(op.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(meta.authorization_response_iss_parameter_supported, true);
    assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(meta.token_endpoint_auth_methods_supported, ['client_secret_basic']);
    for (const ep of ['revocation_endpoint', 'end_session_endpoint', 'userinfo_endpoint', 'jwks_uri']) {
      assert.ok(meta[ep]?.startsWith(op.issuer), `${ep} missing`);
    }
    assert.ok(meta.scopes_supported.includes('offline_access'));
  });

  test('code + PKCE login through the real forms yields access, refresh and ID tokens', async () => {
    const codeGrants = op.stats.authorizationCodeGrants;
    const { tokens, callback, state, nonce, trail } = await rpLoginWithTokens({ username: 'alice' });
    assert.ok(trail.includes('(login form)') && trail.includes('(consent form)'), trail.join(' -> '));
    assert.equal(callback.get('state'), state);
    assert.equal(callback.get('iss'), op.issuer, 'RFC 9207 iss in the authorization response');
    assert.equal(tokens.token_type, 'Bearer');
    assert.ok(tokens.access_token && tokens.refresh_token && tokens.id_token);

    const { payload, protectedHeader } = await jwtVerify(tokens.id_token, createRemoteJWKSet(new URL(meta.jwks_uri)), {
      issuer: op.issuer,
      audience: CLIENT_ID,
      algorithms: ['RS256'],
    });
    assert.equal(protectedHeader.alg, 'RS256');
    assert.equal(payload.nonce, nonce);
    assert.equal(payload.sub, 'alice');
    assert.equal(payload.email, 'alice@example.com');
    assert.equal(payload.name, 'Alice Example');

    assert.equal(op.stats.authorizationCodeGrants, codeGrants + 1);
    assert.equal(op.stats.tokenRequests.at(-1).clientAuth, 'client_secret_basic');
    const sent = op.stats.authorizationRequests.at(-1);
    assert.equal(sent.code_challenge_method, 'S256');
    assert.match(sent.scope, /offline_access/);

    const ui = await fetch(meta.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    assert.equal(ui.status, 200);
    assert.equal((await ui.json()).email_verified, true);
  });

  test('a second login in the same browser needs no forms (provider session)', async () => {
    const { jar } = await rpLoginWithTokens({ username: 'carol' });
    const again = await rpLogin({ jar });
    assert.ok(!again.trail.some((s) => s.endsWith('form)')), again.trail.join(' -> '));
    assert.ok(again.callback.get('code'));
  });

  test('PKCE is required', async () => {
    const { callback } = await rpLogin({ pkce: false });
    assert.equal(callback.get('error'), 'invalid_request');
    assert.match(callback.get('error_description'), /PKCE/);
  });

  test('a wrong code_verifier is refused', async () => {
    const failures = op.stats.authorizationCodeFailures;
    const login = await rpLogin();
    const res = await tokenRequest(meta, {
      grant_type: 'authorization_code',
      code: login.callback.get('code'),
      redirect_uri: REDIRECT_URI,
      code_verifier: pkcePair().verifier,
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'invalid_grant');
    assert.equal(op.stats.authorizationCodeFailures, failures + 1);
  });

  test('a wrong client secret is refused', async () => {
    const login = await rpLogin();
    const res = await tokenRequest(meta, {
      grant_type: 'authorization_code', code: login.callback.get('code'), redirect_uri: REDIRECT_URI, code_verifier: login.verifier,
    }, 'not the secret');
    assert.equal(res.status, 401);
    assert.equal(res.body.error, 'invalid_client');
  });

  test('refresh rotates the refresh token; reusing the old one fails', async () => {
    const { tokens } = await rpLoginWithTokens();
    const grants = op.stats.refreshGrants;
    const failures = op.stats.refreshFailures;

    const first = await refresh(tokens.refresh_token);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.ok(first.body.access_token && first.body.id_token);
    assert.notEqual(first.body.refresh_token, tokens.refresh_token, 'rotation');
    assert.notEqual(first.body.access_token, tokens.access_token);
    assert.equal(op.stats.refreshGrants, grants + 1);

    const reuse = await refresh(tokens.refresh_token);
    assert.equal(reuse.status, 400);
    assert.equal(reuse.body.error, 'invalid_grant');
    assert.equal(op.stats.refreshFailures, failures + 1);
    assert.equal(op.stats.refreshGrants, grants + 1);

    // oidc-provider treats reuse as theft and revokes the whole grant: the new token dies too.
    const rotated = await refresh(first.body.refresh_token);
    assert.equal(rotated.status, 400);
  });

  test('revocation at the revocation endpoint is counted and kills the refresh token', async () => {
    const { tokens } = await rpLoginWithTokens();
    const before = op.stats.revocations;
    const res = await fetch(meta.revocation_endpoint, {
      method: 'POST',
      headers: { authorization: basic(CLIENT_ID, CLIENT_SECRET) },
      body: new URLSearchParams({ token: tokens.refresh_token, token_type_hint: 'refresh_token' }),
    });
    assert.equal(res.status, 200);
    assert.equal(op.stats.revocations, before + 1);
    assert.ok(op.stats.revokedRefreshTokens >= 1);
    assert.equal((await refresh(tokens.refresh_token)).status, 400);
  });

  test('revokeRefreshTokens() makes the next refresh fail', async () => {
    const { tokens } = await rpLoginWithTokens({ username: 'dave' });
    assert.ok(await op.revokeRefreshTokens('dave') >= 1);
    const res = await refresh(tokens.refresh_token);
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'invalid_grant');
  });

  test('RP-initiated logout through the confirmation form ends the provider session', async () => {
    const { jar, tokens } = await rpLoginWithTokens({ username: 'erin' });
    const before = op.stats.endSessions;
    const url = new URL(meta.end_session_endpoint);
    url.searchParams.set('id_token_hint', tokens.id_token);
    url.searchParams.set('post_logout_redirect_uri', POST_LOGOUT_URI);
    url.searchParams.set('state', 'bye');
    const { callbackUrl, trail } = await completeEndSession({ jar, url: url.href });
    assert.ok(trail.includes('(logout form)'), trail.join(' -> '));
    assert.equal(callbackUrl, `${POST_LOGOUT_URI}?state=bye`);
    assert.equal(op.stats.endSessions, before + 1);
    const again = await rpLogin({ jar });
    assert.ok(again.trail.includes('(login form)'), 'the provider session is gone');
  });
});

describe('op.mjs options and command line', () => {
  test('accounts restricts who logs in and sets their claims; TTLs apply', async (t) => {
    const op = await startProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUris: [REDIRECT_URI],
      accounts: { bob: { name: 'Bob Builder', email: 'bob@build.example' } },
      accessTokenTTL: 42,
    });
    t.after(() => op.close());
    const meta = await discover(op.issuer);
    const login = async (username) => {
      const { verifier, challenge } = pkcePair();
      const url = new URL(meta.authorization_endpoint);
      for (const [k, v] of Object.entries({
        client_id: CLIENT_ID, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid profile email', code_challenge: challenge, code_challenge_method: 'S256',
      })) url.searchParams.set(k, v);
      const { callbackUrl } = await driveProvider({ jar: new CookieJar(), url: url.href, username, stopAt: (u) => u.startsWith(REDIRECT_URI), maxSteps: 8 });
      const code = new URL(callbackUrl).searchParams.get('code');
      return tokenRequest(meta, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier });
    };
    const bob = await login('bob');
    assert.equal(bob.status, 200);
    assert.equal(bob.body.expires_in, 42);
    assert.equal(decodeJwt(bob.body.id_token).name, 'Bob Builder');
    await assert.rejects(login('mallory'), /refused the login of mallory/);
  });

  test('runs as a command line program until SIGTERM', async () => {
    const child = spawn(process.execPath, [
      fileURLToPath(new URL('./op.mjs', import.meta.url)),
      '--port', '0', '--client-id', 'bff', '--client-secret', 'S',
      '--redirect-uri', 'http://127.0.0.1:8080/bff/callback', '--post-logout-redirect-uri', 'http://127.0.0.1:8080/',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const [line] = await once(createInterface({ input: child.stdout }), 'line');
      assert.match(line, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.equal((await discover(line)).issuer, line);
    } finally {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code] = await exited;
      assert.equal(code, 0);
    }
  });
});

describe('hostile.mjs: the hostile provider', () => {
  let h;
  let meta;
  const tested = new Set();
  before(async () => {
    h = await startHostile({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUri: REDIRECT_URI });
    meta = await discover(h.issuer);
  });
  after(() => h?.close());

  // Authorize (the hostile provider redirects at once), then exchange the code.
  async function run(scenario, { verifier: forcedVerifier, signal } = {}) {
    tested.add(scenario);
    h.scenario = scenario;
    const { verifier, challenge } = pkcePair();
    const state = crypto.randomBytes(8).toString('hex');
    const nonce = crypto.randomBytes(8).toString('hex');
    const url = new URL(meta.authorization_endpoint);
    for (const [k, v] of Object.entries({
      client_id: CLIENT_ID, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid profile email offline_access', state, nonce, code_challenge: challenge, code_challenge_method: 'S256',
    })) url.searchParams.set(k, v);
    const auth = await fetch(url, { redirect: 'manual' });
    assert.equal(auth.status, 302);
    const callback = new URL(auth.headers.get('location')).searchParams;
    const res = await fetch(meta.token_endpoint, {
      method: 'POST',
      headers: { authorization: basic(CLIENT_ID, CLIENT_SECRET) },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: callback.get('code'), redirect_uri: REDIRECT_URI, code_verifier: forcedVerifier ?? verifier }),
      signal,
    });
    const text = await res.text();
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    const idToken = json?.id_token;
    return {
      state, nonce, callback, res, text, json, idToken,
      header: idToken && decodeProtectedHeader(idToken),
      claims: idToken && decodeJwt(idToken),
    };
  }

  const jwks = () => createRemoteJWKSet(new URL(meta.jwks_uri), { cooldownDuration: 0 });
  const verify = (idToken, keySet = jwks()) => jwtVerify(idToken, keySet, {
    // maxTokenAge makes jose check iat at all (it also refuses an iat in the future then).
    issuer: h.issuer, audience: CLIENT_ID, algorithms: ['RS256'], requiredClaims: ['exp', 'iat', 'sub'], maxTokenAge: '10m',
  });

  test('discovery', () => {
    assert.equal(meta.issuer, h.issuer);
    assert.deepEqual(meta.id_token_signing_alg_values_supported, ['RS256']);
    assert.equal(meta.authorization_response_iss_parameter_supported, true);
    assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
  });

  test('ok: a valid response that verifies against the JWKS', async () => {
    const r = await run('ok');
    assert.equal(r.res.status, 200);
    assert.equal(r.callback.get('iss'), h.issuer);
    assert.equal(r.callback.get('state'), r.state);
    const { payload } = await verify(r.idToken);
    assert.equal(payload.nonce, r.nonce);
    assert.ok(r.json.access_token && r.json.refresh_token);
    const ui = await fetch(meta.userinfo_endpoint, { headers: { authorization: `Bearer ${r.json.access_token}` } });
    assert.equal((await ui.json()).sub, payload.sub);
  });

  test('the token endpoint checks PKCE and the client secret', async () => {
    const bad = await run('ok', { verifier: pkcePair().verifier });
    assert.equal(bad.res.status, 400);
    assert.equal(bad.json.error, 'invalid_grant');
    const res = await fetch(meta.token_endpoint, { method: 'POST', headers: { authorization: basic(CLIENT_ID, 'wrong') }, body: 'grant_type=authorization_code&code=x' });
    assert.equal(res.status, 401);
    assert.throws(() => { h.scenario = 'no_such_case'; }, /unknown hostile scenario/);
  });

  test('forged signatures: each is refused by a correct verifier', async () => {
    const badSig = await run('bad_signature');
    await assert.rejects(verify(badSig.idToken), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
    assert.equal(badSig.claims.nonce, badSig.nonce, 'only the signature is wrong');

    const none = await run('alg_none');
    assert.equal(none.header.alg, 'none');
    assert.ok(none.idToken.endsWith('.'), 'empty signature');
    await assert.rejects(verify(none.idToken));

    const hs = await run('hs256_with_public_key');
    assert.equal(hs.header.alg, 'HS256');
    const [head, body, sig] = hs.idToken.split('.');
    const expected = crypto.createHmac('sha256', h.keys.current.pem).update(`${head}.${body}`).digest('base64url');
    assert.equal(sig, expected, 'HMAC keyed with the public key PEM');
    await assert.rejects(verify(hs.idToken));

    const unknown = await run('unknown_kid');
    assert.equal(unknown.header.kid, 'hostile-unknown');
    const published = await (await fetch(meta.jwks_uri)).json();
    assert.ok(!published.keys.some((k) => k.kid === 'hostile-unknown'));
    await assert.rejects(verify(unknown.idToken), { code: 'ERR_JWKS_NO_MATCHING_KEY' });
  });

  test('kid_rotated: the new key appears in the JWKS only after a first fetch', async () => {
    h.resetRotation();
    const r = await run('kid_rotated');
    assert.equal(r.header.kid, 'hostile-2');
    const first = await (await fetch(meta.jwks_uri)).json();
    assert.deepEqual(first.keys.map((k) => k.kid), ['hostile-1']);
    await assert.rejects(verify(r.idToken, createLocalJWKSet(first)), { code: 'ERR_JWKS_NO_MATCHING_KEY' });
    const second = await (await fetch(meta.jwks_uri)).json();
    assert.deepEqual(second.keys.map((k) => k.kid), ['hostile-1', 'hostile-2']);
    const { payload } = await verify(r.idToken, createLocalJWKSet(second));
    assert.equal(payload.nonce, r.nonce);
  });

  test('bad claims: each breaks exactly the rule it names', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases = {
      wrong_iss: (c) => assert.equal(c.iss, 'https://attacker.example'),
      missing_iss: (c) => assert.equal(c.iss, undefined),
      wrong_aud: (c) => assert.equal(c.aud, 'someone-else'),
      missing_aud: (c) => assert.equal(c.aud, undefined),
      multi_aud_without_azp: (c) => { assert.deepEqual(c.aud, [CLIENT_ID, 'someone-else']); assert.equal(c.azp, undefined); },
      wrong_azp: (c) => { assert.ok(c.aud.includes(CLIENT_ID)); assert.equal(c.azp, 'someone-else'); },
      expired: (c) => assert.ok(c.exp < now - 60),
      iat_future: (c) => assert.ok(c.iat > now + 3600),
      missing_exp: (c) => assert.equal(c.exp, undefined),
      missing_iat: (c) => assert.equal(c.iat, undefined),
      iat_old: (c) => { assert.ok(c.iat < now - 3600); assert.ok(c.exp > now); },
      wrong_nonce: (c, r) => { assert.ok(c.nonce); assert.notEqual(c.nonce, r.nonce); },
      missing_nonce: (c) => assert.equal(c.nonce, undefined),
    };
    // Rules a JWT library checks by itself; the rest (azp, nonce) is the client's own job.
    const libraryCatches = new Set(['wrong_iss', 'missing_iss', 'wrong_aud', 'missing_aud', 'expired', 'iat_future', 'missing_exp', 'missing_iat', 'iat_old']);
    for (const [scenario, check] of Object.entries(cases)) {
      const r = await run(scenario);
      assert.equal(r.res.status, 200, scenario);
      assert.equal(r.header.alg, 'RS256', scenario);
      check(r.claims, r);
      if (libraryCatches.has(scenario)) {
        await assert.rejects(verify(r.idToken), `${scenario} should fail verification`);
      } else {
        await verify(r.idToken); // correctly signed: only the client's own checks catch it
      }
    }
  });

  test('token substitution: at_hash of another access token, userinfo for another sub', async () => {
    const atHash = (t) => crypto.createHash('sha256').update(t).digest().subarray(0, 16).toString('base64url');
    const ok = await run('ok');
    assert.equal(ok.claims.at_hash, atHash(ok.json.access_token), 'a valid response carries a correct at_hash');
    const wrong = await run('wrong_at_hash');
    await verify(wrong.idToken); // correctly signed: only the at_hash check catches it
    assert.ok(wrong.claims.at_hash);
    assert.notEqual(wrong.claims.at_hash, atHash(wrong.json.access_token));
    const other = await run('userinfo_other_sub');
    const { payload } = await verify(other.idToken);
    const ui = await fetch(meta.userinfo_endpoint, { headers: { authorization: `Bearer ${other.json.access_token}` } });
    const info = await ui.json();
    assert.equal(ui.status, 200);
    assert.notEqual(info.sub, payload.sub);
  });

  test('authorization response tampering', async () => {
    const mismatch = await run('iss_param_mismatch');
    assert.equal(mismatch.callback.get('iss'), 'https://attacker.example');
    const missing = await run('iss_param_missing');
    assert.equal(missing.callback.has('iss'), false);
    const state = await run('wrong_state');
    assert.notEqual(state.callback.get('state'), state.state);
    assert.equal(state.callback.get('iss'), h.issuer);
  });

  test('broken token endpoint answers', async () => {
    const err = await run('token_error');
    assert.equal(err.res.status, 400);
    assert.equal(err.json.error, 'invalid_grant');

    const e500 = await run('token_500');
    assert.equal(e500.res.status, 500);

    const html = await run('token_not_json');
    assert.equal(html.res.status, 200);
    assert.match(html.res.headers.get('content-type'), /text\/html/);
    assert.equal(html.json, undefined);

    const noId = await run('missing_id_token');
    assert.equal(noId.res.status, 200);
    assert.ok(noId.json.access_token);
    assert.equal(noId.idToken, undefined);

    const huge = await run('huge_token_response');
    assert.ok(huge.text.length >= 2 * 1024 * 1024, `${huge.text.length} bytes`);
    await verify(huge.idToken); // otherwise valid: only its size is the problem

    const big = await run('huge_id_token');
    assert.ok(big.idToken.length > 20 * 1024, `${big.idToken.length} bytes`);
    await verify(big.idToken);

    const requests = h.stats.tokenRequests;
    await assert.rejects(run('token_timeout', { signal: AbortSignal.timeout(300) }), { name: 'TimeoutError' });
    assert.equal(h.stats.tokenRequests, requests + 1);
    assert.equal(h.stats.tokenRequestLog.at(-1).outcome, 'held');
  });

  test('every scenario is exercised above', () => {
    assert.deepEqual([...tested].sort(), [...SCENARIO_NAMES].sort());
    assert.deepEqual(SCENARIO_NAMES.filter((s) => SCENARIOS[s].expect === 'accept').sort(), ['kid_rotated', 'ok']);
  });
});

describe('browserless.mjs: cookie jar and forms', () => {
  const bff = 'http://127.0.0.1:8080';

  test('paths, deletion and origins', () => {
    const jar = new CookieJar();
    jar.store(`${bff}/bff/callback`, [
      'sealgate.0=a; Path=/; HttpOnly; SameSite=Lax',
      'sealgate.1=b; Path=/',
      'sealgate-rt.0=r; Path=/bff/; HttpOnly',
      'nopath=x', // default path of /bff/callback is /bff
    ]);
    assert.equal(jar.header(`${bff}/`), 'sealgate.0=a; sealgate.1=b');
    assert.equal(jar.header(`${bff}/bff/user`), 'sealgate-rt.0=r; nopath=x; sealgate.0=a; sealgate.1=b');
    assert.equal(jar.get(`${bff}/bfff`, 'nopath'), undefined, '/bff does not path-match /bfff');
    assert.equal(jar.get(`${bff}/bff`, 'sealgate-rt.0'), undefined, '/bff/ does not match /bff');
    assert.equal(jar.get('http://127.0.0.1:8081/', 'sealgate.0'), undefined, 'other port, other jar');
    assert.equal(jar.list(`${bff}/`)[0].httpOnly, true);

    jar.store(`${bff}/bff/logout`, [
      'sealgate.1=; Path=/; Max-Age=0',
      `sealgate.0=; Path=/; Expires=${new Date(0).toUTCString()}`,
      'sealgate-rt.0=; Path=/; Max-Age=0', // wrong path: deletes nothing
    ]);
    assert.equal(jar.header(`${bff}/`), '');
    assert.equal(jar.get(`${bff}/bff/user`, 'sealgate-rt.0'), 'r');

    jar.store(`${bff}/`, [`late=1; Max-Age=60; Expires=${new Date(0).toUTCString()}`]);
    assert.equal(jar.get(`${bff}/`, 'late'), '1', 'Max-Age wins over Expires');
  });

  test('refuses what browsers refuse', () => {
    assert.match(parseSetCookie('__Host-s=1; Path=/', `${bff}/`).error, /__Host-/);
    assert.match(parseSetCookie('__Host-s=1; Secure; Path=/bff/', `${bff}/`).error, /__Host-/);
    assert.equal(parseSetCookie('__Host-s=1; Secure; Path=/', `${bff}/`).error, undefined, 'Secure is allowed on 127.0.0.1');
    assert.match(parseSetCookie('s=1; Secure', 'http://app.example/').error, /insecure/);
    assert.match(parseSetCookie(`big=${'x'.repeat(4094)}`, `${bff}/`).error, /4096/);
    const jar = new CookieJar();
    jar.store(`${bff}/`, [`big=${'x'.repeat(5000)}`, 'ok=1']);
    assert.equal(jar.rejected.length, 1);
    assert.equal(jar.header(`${bff}/`), 'ok=1');
  });

  test('parses forms, entities and form= controls', () => {
    const html = `<form id="f1" method="post" action="/interaction/a&amp;b?x=1&amp;y=2">
      <input type="hidden" name="prompt" value="login"/><input name="login"><input type='password' name=password>
      <input type="checkbox" name="remember"><button type="submit">Go</button></form>
      <form id="op.logoutForm" method="post" action="http://op/session/end/confirm"><input type="hidden" name="xsrf" value="&#x41;&quot;"/></form>
      <button type="submit" form="op.logoutForm" value="yes" name="logout">Yes</button>`;
    const [login, logout] = parseForms(html, 'http://op/interaction/abc');
    assert.equal(login.action, 'http://op/interaction/a&b?x=1&y=2');
    assert.equal(login.method, 'POST');
    assert.deepEqual(login.fields, { prompt: 'login', login: '', password: '' });
    assert.deepEqual(logout.fields, { xsrf: 'A"' });
    assert.deepEqual(logout.buttons, [{ name: 'logout', type: 'submit', value: 'yes' }]);
  });
});

// A deliberately small BFF (the shape sealgate will have) to run login() end to end: a login
// transaction cookie on /bff/callback, session cookies in two chunks plus one on /bff/ only.
async function startMiniBff() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  const op = await startProvider({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [`${base}/bff/callback`] });
  const meta = await discover(op.issuer);
  const sessions = new Map();
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  server.on('request', async (req, res) => {
    const url = new URL(req.url, base);
    const cookies = Object.fromEntries((req.headers.cookie ?? '').split('; ').filter(Boolean).map((c) => [c.slice(0, c.indexOf('=')), c.slice(c.indexOf('=') + 1)]));
    if (url.pathname === '/bff/login') {
      const { verifier, challenge } = pkcePair();
      const state = crypto.randomBytes(8).toString('hex');
      const authorize = new URL(meta.authorization_endpoint);
      for (const [k, v] of Object.entries({
        client_id: CLIENT_ID, response_type: 'code', redirect_uri: `${base}/bff/callback`, scope: 'openid profile email offline_access', state, code_challenge: challenge, code_challenge_method: 'S256',
      })) authorize.searchParams.set(k, v);
      const tx = b64({ state, verifier, returnTo: url.searchParams.get('returnTo') ?? '/' });
      return res.writeHead(302, { location: authorize.href, 'set-cookie': `mini-tx=${tx}; Path=/bff/callback; HttpOnly; SameSite=Lax` }).end();
    }
    if (url.pathname === '/bff/callback') {
      const tx = cookies['mini-tx'] && JSON.parse(Buffer.from(cookies['mini-tx'], 'base64url'));
      if (!tx || tx.state !== url.searchParams.get('state') || url.searchParams.get('iss') !== op.issuer) return res.writeHead(400).end('bad callback');
      const tokens = await tokenRequest(meta, { grant_type: 'authorization_code', code: url.searchParams.get('code'), redirect_uri: `${base}/bff/callback`, code_verifier: tx.verifier });
      if (tokens.status !== 200) return res.writeHead(502).end('token endpoint');
      const sid = crypto.randomBytes(16).toString('hex');
      sessions.set(sid, decodeJwt(tokens.body.id_token));
      return res.writeHead(302, {
        location: tx.returnTo,
        'set-cookie': [`mini.0=${sid.slice(0, 16)}; Path=/; HttpOnly`, `mini.1=${sid.slice(16)}; Path=/; HttpOnly`, 'mini-rt.0=opaque; Path=/bff/; HttpOnly', 'mini-tx=; Path=/bff/callback; Max-Age=0'],
      }).end();
    }
    if (url.pathname === '/bff/user') {
      if (req.headers['x-csrf'] !== '1') return res.writeHead(403).end();
      const claims = sessions.get(`${cookies['mini.0']}${cookies['mini.1']}`);
      if (!claims) return res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"login_required"}');
      return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(claims));
    }
    return res.writeHead(404).end();
  });
  return {
    base,
    op,
    close: async () => { server.closeAllConnections(); await new Promise((r) => server.close(r)); await op.close(); },
  };
}

describe('browserless.mjs: login() against a minimal BFF', () => {
  let bff;
  before(async () => { bff = await startMiniBff(); });
  after(() => bff?.close());

  test('the whole login, then /bff/user with the jar', async () => {
    const { jar, callbackResponse, finalLocation, trail } = await login({ bffUrl: bff.base, username: 'frank', returnTo: '/after' });
    assert.ok(trail.includes('(login form)'));
    assert.equal(callbackResponse.status, 302);
    assert.equal(finalLocation, `${bff.base}/after`);
    assert.equal(jar.get(`${bff.base}/bff/callback`, 'mini-tx'), undefined, 'transaction cookie deleted');
    assert.match(jar.header(`${bff.base}/bff/user`), /^mini-rt\.0=opaque; mini\.0=\w+; mini\.1=\w+$/);
    assert.doesNotMatch(jar.header(`${bff.base}/api/x`), /mini-rt/);
    const user = await bffFetch(jar, `${bff.base}/bff/user`);
    assert.equal(user.status, 200);
    assert.equal((await user.json()).sub, 'frank');
    assert.equal((await jar.fetch(`${bff.base}/bff/user`)).status, 403, 'no X-CSRF');
    assert.equal((await bffFetch(new CookieJar(), `${bff.base}/bff/user`)).status, 401);
  });

  test('stopping at the callback, and calling it from another browser', async () => {
    const grants = bff.op.stats.authorizationCodeGrants;
    const half = await loginUntilCallback({ bffUrl: bff.base, returnTo: '/x' });
    const cb = new URL(half.callbackUrl);
    assert.equal(cb.pathname, '/bff/callback');
    assert.ok(cb.searchParams.get('code') && cb.searchParams.get('state'));
    assert.equal(bff.op.stats.authorizationCodeGrants, grants, 'the code is not redeemed yet');
    const { callbackResponse } = await completeCallback({ jar: new CookieJar(), callbackUrl: half.callbackUrl });
    assert.equal(callbackResponse.status, 400, 'no login transaction cookie in that browser');
  });
});

describe('sealgate.mjs: the launcher (with a fake binary)', () => {
  const fake = fileURLToPath(new URL('./fixtures/fake-sealgate.mjs', import.meta.url));

  test('writes TOML', () => {
    const toml = toToml({ listen: 'a', oidc: { issuer: 'x"y', scopes: ['openid'] }, routes: [{ prefix: '/api/', upstream: 'u' }] });
    assert.equal(toml, 'listen = "a"\n\n[oidc]\nissuer = "x\\"y"\nscopes = ["openid"]\n\n[[routes]]\nprefix = "/api/"\nupstream = "u"');
  });

  test('starts, waits for health, captures logs, stops', async (t) => {
    process.env.SEALGATE_OIDC__ISSUER = 'http://from-the-parent-shell';
    t.after(() => { delete process.env.SEALGATE_OIDC__ISSUER; });
    const sg = await startSealgate({
      issuer: 'http://127.0.0.1:1',
      bin: fake,
      config: { session: { idle: '5s' } },
      extraToml: '[[routes]]\nprefix = "/api/"\nupstream = "http://127.0.0.1:2"',
      env: { SEALGATE_OIDC__CLIENT_SECRET: 'from-env' },
    });
    t.after(() => sg.stop());
    assert.equal(sg.kid, 'fakekid');
    assert.equal((await fetch(`${sg.url}/healthz`)).status, 200);
    const config = readFileSync(sg.configPath, 'utf8');
    assert.match(config, /^idle = "5s"$/m);
    assert.match(config, /^absolute = "12h"$/m);
    assert.match(config, /^\[\[routes\]\]$/m);
    assert.match(config, new RegExp(`^public_url = "${sg.url}"$`, 'm'));
    await sg.waitForLog(/SEALGATE_ variables: SEALGATE_OIDC__CLIENT_SECRET\n/);
    assert.match(sg.logs(), /GET \/readyz/);
    const exit = await sg.stop();
    assert.equal(exit.code, 0);
    assert.match(sg.logs(), /SIGTERM, bye/);
    assert.equal(existsSync(sg.dir), false, 'temp dir removed');
  });

  test('a process that exits at once fails the start with its logs', async () => {
    await assert.rejects(
      startSealgate({ issuer: 'http://127.0.0.1:1', bin: fake, env: { FAKE_EXIT: '2' } }),
      /the process exited \(code 2[\s\S]*refusing on purpose/,
    );
  });

  test('a process that never gets ready fails the start in bounded time', async () => {
    const t0 = Date.now();
    await assert.rejects(
      startSealgate({ issuer: 'http://127.0.0.1:1', bin: fake, env: { FAKE_NOT_READY: '1' }, timeoutMs: 1000 }),
      /no 200 from .*\/readyz.*status 503/,
    );
    assert.ok(Date.now() - t0 < 5000);
  });
});

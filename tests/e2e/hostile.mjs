// A hand-written, HOSTILE OpenID Provider for sealgate's negative tests.
//
//   const h = await startHostile({ clientId: 'bff', redirectUri: 'http://127.0.0.1:P/bff/callback' });
//   h.scenario = 'alg_none';   // read at each request: one server serves every case
//   ... drive a login against the BFF, expect a 4xx/5xx at the callback and no session ...
//   await h.close();
//
// The authorization endpoint logs nobody in: it answers at once with a 302 to redirect_uri
// carrying code, state and iss. The token endpoint checks client_secret_basic (when a secret is
// given), the code, redirect_uri and the PKCE code_verifier, and then answers according to the
// current scenario. Every scenario but `ok` and `kid_rotated` must make a correct BFF refuse the
// login (SCENARIOS says which and why).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import { CompactSign, exportJWK, exportSPKI, generateKeyPair } from 'jose';

// name -> { expect: 'accept' | 'refuse', what }
export const SCENARIOS = {
  ok: { expect: 'accept', what: 'a fully valid response (the control case)' },
  bad_signature: { expect: 'refuse', what: 'RS256 ID token whose signature bytes were altered' },
  alg_none: { expect: 'refuse', what: 'unsigned ID token, header alg "none"' },
  hs256_with_public_key: { expect: 'refuse', what: 'HS256 ID token, HMAC key = the published RSA public key (SPKI PEM)' },
  unknown_kid: { expect: 'refuse', what: 'signed by a key whose kid is never in the JWKS' },
  kid_rotated: { expect: 'accept', what: 'signed by a new key that appears in the JWKS only after the first JWKS fetch: re-fetch and accept' },
  wrong_iss: { expect: 'refuse', what: 'ID token iss is another issuer' },
  missing_iss: { expect: 'refuse', what: 'ID token without iss' },
  wrong_aud: { expect: 'refuse', what: 'ID token aud is another client' },
  missing_aud: { expect: 'refuse', what: 'ID token without aud' },
  multi_aud_without_azp: { expect: 'refuse', what: 'aud = [client, other] and no azp' },
  wrong_azp: { expect: 'refuse', what: 'aud = [client, other] and azp = other' },
  expired: { expect: 'refuse', what: 'exp an hour in the past' },
  iat_future: { expect: 'refuse', what: 'iat a day in the future' },
  missing_exp: { expect: 'refuse', what: 'ID token without exp' },
  missing_iat: { expect: 'refuse', what: 'ID token without iat' },
  iat_old: { expect: 'refuse', what: 'iat two hours in the past (exp still ahead)' },
  wrong_nonce: { expect: 'refuse', what: 'nonce differs from the one sent' },
  missing_nonce: { expect: 'refuse', what: 'nonce absent although one was sent' },
  iss_param_mismatch: { expect: 'refuse', what: 'authorization response iss parameter names another issuer (RFC 9207 mix-up): the token endpoint must not even be called' },
  iss_param_missing: { expect: 'refuse', what: 'authorization response without iss although discovery advertises it (RFC 9207 2.4)' },
  wrong_state: { expect: 'refuse', what: 'authorization response state differs from the one sent' },
  token_error: { expect: 'refuse', what: 'token endpoint answers 400 {error: invalid_grant}' },
  token_timeout: { expect: 'refuse', what: 'token endpoint never answers (socket held open)' },
  token_500: { expect: 'refuse', what: 'token endpoint answers 500' },
  huge_token_response: { expect: 'refuse', what: 'a valid token response padded to 2 MB' },
  huge_id_token: { expect: 'refuse', what: 'a correctly signed ID token carrying 20 KB of claims (must be refused or at least not produce cookies beyond browser limits)' },
  token_not_json: { expect: 'refuse', what: 'token endpoint answers 200 text/html' },
  missing_id_token: { expect: 'refuse', what: 'token response without id_token' },
  wrong_at_hash: { expect: 'refuse', what: 'ID token at_hash is the hash of another access token (token substitution, OpenID Connect Core 3.1.3.8)' },
  userinfo_other_sub: { expect: 'refuse', what: 'userinfo answers for another sub than the ID token (OpenID Connect Core 5.3.2)' },
};
export const SCENARIO_NAMES = Object.keys(SCENARIOS);

function check(name) {
  if (!Object.hasOwn(SCENARIOS, name)) throw new Error(`unknown hostile scenario ${name}`);
  return name;
}

const ATTACKER_ISSUER = 'https://attacker.example';
const epoch = () => Math.floor(Date.now() / 1000);
const b64json = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
const random = () => crypto.randomBytes(24).toString('base64url');
// OpenID Connect Core 3.1.3.6: the left half of the SHA-256 of the access token (RS256).
const atHash = (accessToken) => crypto.createHash('sha256').update(accessToken).digest().subarray(0, 16).toString('base64url');

async function rsaKey(kid) {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, publicKey, jwk, pem: await exportSPKI(publicKey) };
}

async function signRS256(key, payload, header = {}) {
  return new CompactSign(Buffer.from(JSON.stringify(payload)))
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: key.kid, ...header })
    .sign(key.privateKey);
}

// HS256 by hand: jose (rightly) will not treat an RSA public key as an HMAC secret.
function signHS256(secret, payload, kid) {
  const input = `${b64json({ alg: 'HS256', typ: 'JWT', kid })}.${b64json(payload)}`;
  return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`;
}

function send(res, status, body, headers = {}) {
  const isText = typeof body === 'string';
  res.writeHead(status, {
    'content-type': isText ? 'text/plain; charset=utf-8' : 'application/json',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(isText ? body : JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

// RFC 6749 2.3.1: id and secret are form-urlencoded before being put in the Basic header.
function basicAuth(req) {
  const m = /^basic\s+(.+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString();
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  const dec = (s) => decodeURIComponent(s.replace(/\+/g, ' '));
  return { id: dec(decoded.slice(0, i)), secret: dec(decoded.slice(i + 1)) };
}

/**
 * @returns {Promise<{ issuer: string, port: number, scenario: string, stats: object,
 *   keys: object, resetRotation(): void, close(): Promise<void> }>}
 */
// discoveryIssuer: the `issuer` the discovery document claims (default: the real one). Another
// value must keep a correct BFF from ever becoming ready (OpenID Connect Discovery 4.3). It can
// be changed later through h.discoveryIssuer (undefined = the real issuer again).
export async function startHostile({ clientId = 'bff', clientSecret, redirectUri, scenario = 'ok', discoveryIssuer } = {}) {
  if (!redirectUri) throw new Error('startHostile needs the relying party redirectUri');
  let current = check(scenario);
  const keys = {
    current: await rsaKey('hostile-1'), // always in the JWKS
    rotated: await rsaKey('hostile-2'), // in the JWKS once a JWKS without it has been served
    unknown: await rsaKey('hostile-unknown'), // never in the JWKS
  };
  let jwksServedWithoutRotated = false;
  const codes = new Map(); // code -> { nonce, challenge, redirectUri, used }
  const accessTokens = new Set();
  const refreshTokens = new Set();
  const held = new Set(); // responses of token_timeout, never answered
  const stats = {
    discoveryFetches: 0,
    jwksFetches: 0,
    authorizations: 0,
    tokenRequests: 0,
    tokenRequestLog: [], // { scenario, grantType, clientAuth, outcome }
    userinfoRequests: 0,
    lastAuthorizationRequest: undefined,
  };

  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const h = {
    issuer,
    port,
    discoveryIssuer,
    // A typo in a test must not silently turn into the `ok` case.
    get scenario() { return current; },
    set scenario(name) { current = check(name); },
    stats,
    keys,
    // Hide the rotated key again, to replay the kid_rotated case on the same server.
    resetRotation() { jwksServedWithoutRotated = false; },
    async close() {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };

  const discovery = () => ({
    issuer: h.discoveryIssuer ?? issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    userinfo_endpoint: `${issuer}/userinfo`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    id_token_signing_alg_values_supported: ['RS256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true,
  });

  function jwks() {
    const published = [keys.current.jwk];
    if (jwksServedWithoutRotated) published.push(keys.rotated.jwk);
    jwksServedWithoutRotated = true;
    return { keys: published };
  }

  function authorize(url, res) {
    const p = url.searchParams;
    stats.authorizations++;
    stats.lastAuthorizationRequest = Object.fromEntries(p);
    const problems = [];
    if (p.get('client_id') !== clientId) problems.push('client_id');
    if (p.get('redirect_uri') !== redirectUri) problems.push('redirect_uri');
    if (p.get('response_type') !== 'code') problems.push('response_type');
    if (p.get('code_challenge_method') !== 'S256' || !p.get('code_challenge')) problems.push('PKCE S256');
    if (problems.length) return send(res, 400, `bad authorization request: ${problems.join(', ')}`);

    const code = random();
    codes.set(code, { nonce: p.get('nonce') ?? undefined, challenge: p.get('code_challenge'), redirectUri: p.get('redirect_uri'), used: false });
    const back = new URL(redirectUri);
    back.searchParams.set('code', code);
    if (p.has('state')) back.searchParams.set('state', h.scenario === 'wrong_state' ? random() : p.get('state'));
    if (h.scenario === 'iss_param_mismatch') back.searchParams.set('iss', ATTACKER_ISSUER);
    else if (h.scenario !== 'iss_param_missing') back.searchParams.set('iss', issuer);
    return send(res, 302, '', { location: back.href });
  }

  // The ID token (or its absence) for one scenario.
  async function idTokenFor(scn, nonce, accessToken) {
    const now = epoch();
    const claims = {
      at_hash: atHash(scn === 'wrong_at_hash' ? random() : accessToken),
      iss: issuer,
      sub: 'hostile-user',
      aud: clientId,
      exp: now + 300,
      iat: now,
      auth_time: now,
      nonce,
      name: 'Hostile User',
      email: 'hostile@example.com',
      email_verified: true,
    };
    switch (scn) {
      case 'wrong_iss': claims.iss = ATTACKER_ISSUER; break;
      case 'missing_iss': delete claims.iss; break;
      case 'wrong_aud': claims.aud = 'someone-else'; break;
      case 'missing_aud': delete claims.aud; break;
      case 'multi_aud_without_azp': claims.aud = [clientId, 'someone-else']; break;
      case 'wrong_azp': claims.aud = [clientId, 'someone-else']; claims.azp = 'someone-else'; break;
      case 'expired': claims.iat = now - 7200; claims.auth_time = now - 7200; claims.exp = now - 3600; break;
      case 'iat_future': claims.iat = now + 86400; claims.exp = now + 86400 + 300; break;
      case 'missing_exp': delete claims.exp; break;
      case 'missing_iat': delete claims.iat; break;
      case 'iat_old': claims.iat = now - 7200; break;
      case 'wrong_nonce': claims.nonce = random(); break;
      case 'missing_nonce': delete claims.nonce; break;
      case 'huge_id_token': {
        claims.groups = [];
        for (let i = 0; JSON.stringify(claims).length < 20 * 1024; i++) claims.groups.push(`group-${String(i).padStart(4, '0')}-${'g'.repeat(24)}`);
        break;
      }
      default: break;
    }
    if (claims.nonce === undefined) delete claims.nonce; // e.g. a refresh: no nonce to echo

    switch (scn) {
      case 'alg_none':
        return `${b64json({ alg: 'none', typ: 'JWT' })}.${b64json(claims)}.`;
      case 'hs256_with_public_key':
        return signHS256(Buffer.from(keys.current.pem), claims, keys.current.kid);
      case 'unknown_kid':
        return signRS256(keys.unknown, claims);
      case 'kid_rotated':
        return signRS256(keys.rotated, claims);
      case 'bad_signature': {
        const [head, body, sig] = (await signRS256(keys.current, claims)).split('.');
        const bytes = Buffer.from(sig, 'base64url');
        bytes[10] ^= 0xff; // a byte in the middle: base64url padding bits cannot hide it
        return `${head}.${body}.${bytes.toString('base64url')}`;
      }
      case 'missing_id_token':
        return undefined;
      default:
        return signRS256(keys.current, claims);
    }
  }

  async function token(req, res) {
    stats.tokenRequests++;
    const scn = h.scenario;
    const body = await readBody(req);
    const auth = basicAuth(req);
    const log = { scenario: scn, grantType: body.get('grant_type'), clientAuth: auth ? 'client_secret_basic' : (body.has('client_secret') ? 'client_secret_post' : 'none'), outcome: '' };
    stats.tokenRequestLog.push(log);
    const fail = (status, error, description) => {
      log.outcome = `${status} ${error}: ${description}`;
      return send(res, status, { error, error_description: description });
    };

    if (scn === 'token_timeout') {
      log.outcome = 'held';
      held.add(res);
      res.on('close', () => held.delete(res));
      return undefined; // never answer
    }
    if (clientSecret !== undefined && (!auth || auth.id !== clientId || auth.secret !== clientSecret)) {
      return fail(401, 'invalid_client', 'client_secret_basic authentication failed');
    }

    let nonce;
    if (body.get('grant_type') === 'authorization_code') {
      const entry = codes.get(body.get('code') ?? '');
      if (!entry || entry.used) return fail(400, 'invalid_grant', 'unknown or used code');
      entry.used = true;
      if (body.get('redirect_uri') !== entry.redirectUri) return fail(400, 'invalid_grant', 'redirect_uri mismatch');
      const verifier = body.get('code_verifier') ?? '';
      if (crypto.hash('sha256', verifier, 'base64url') !== entry.challenge) return fail(400, 'invalid_grant', 'PKCE verification failed');
      nonce = entry.nonce;
    } else if (body.get('grant_type') === 'refresh_token') {
      if (!refreshTokens.delete(body.get('refresh_token') ?? '')) return fail(400, 'invalid_grant', 'unknown refresh token');
    } else {
      return fail(400, 'unsupported_grant_type', String(body.get('grant_type')));
    }

    switch (scn) {
      case 'token_error': return fail(400, 'invalid_grant', 'the hostile provider says no');
      case 'token_500':
        log.outcome = '500';
        return send(res, 500, 'Internal Server Error');
      case 'token_not_json':
        log.outcome = '200 html';
        return send(res, 200, '<html><body>Welcome to the provider!</body></html>', { 'content-type': 'text/html' });
      default: break;
    }

    const accessToken = random();
    const refreshToken = random();
    accessTokens.add(accessToken);
    refreshTokens.add(refreshToken);
    const out = {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: 300,
      refresh_token: refreshToken,
      scope: 'openid profile email offline_access',
      id_token: await idTokenFor(scn, nonce, accessToken),
    };
    if (out.id_token === undefined) delete out.id_token;
    if (scn === 'huge_token_response') out.padding = 'x'.repeat(2 * 1024 * 1024);
    log.outcome = '200';
    return send(res, 200, out);
  }

  function userinfo(req, res) {
    stats.userinfoRequests++;
    const m = /^bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    if (!m || !accessTokens.has(m[1])) {
      return send(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    }
    const sub = h.scenario === 'userinfo_other_sub' ? 'someone-else' : 'hostile-user';
    return send(res, 200, { sub, name: 'Hostile User', email: 'hostile@example.com', email_verified: true });
  }

  server.on('request', async (req, res) => {
    try {
      const url = new URL(req.url, issuer);
      switch (`${req.method} ${url.pathname}`) {
        case 'GET /.well-known/openid-configuration':
          stats.discoveryFetches++;
          return send(res, 200, discovery());
        case 'GET /jwks':
          stats.jwksFetches++;
          return send(res, 200, jwks(), { 'content-type': 'application/jwk-set+json' });
        case 'GET /authorize': return authorize(url, res);
        case 'POST /token': return await token(req, res);
        case 'GET /userinfo':
        case 'POST /userinfo': return userinfo(req, res);
        default: return send(res, 404, 'not found');
      }
    } catch (err) {
      if (!res.headersSent) send(res, 500, String(err));
      return undefined;
    }
  });

  return h;
}

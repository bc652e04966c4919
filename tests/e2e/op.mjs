// A real OpenID Provider (panva's oidc-provider 9) for sealgate's end-to-end tests and demo.
//
//   import { startProvider } from './op.mjs';
//   const op = await startProvider({ clientId: 'bff', clientSecret: 's', redirectUris: [...] });
//   ... op.issuer, op.stats ...; await op.close();
//
// or, for the demo:  node tests/e2e/op.mjs --port 9000 --client-id bff --client-secret S \
//   --redirect-uri http://127.0.0.1:8080/bff/callback --post-logout-redirect-uri http://127.0.0.1:8080/
//
// Logins go through oidc-provider's built-in development login and consent forms
// (devInteractions): any username with any password logs in.
//
// With `fapi: { jwks: [publicJwk] }` the provider is a FAPI 2.0 authorization server (issue
// #14): PAR required, DPoP required with server nonces, private_key_jwt only, refresh tokens not
// rotated; see startProvider's `fapi` option.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose';

const DEBUG = Boolean(process.env.DEBUG);

// oidc-provider prints "NOTICE/WARNING: development-only feature ..." lines (and, on Node 20,
// "Unsupported runtime": version 9 wants Node 22, yet works on 20) through console.info and
// console.warn. They are expected for a test provider, so hide them unless DEBUG is set. The
// filter must be in place before oidc-provider is evaluated, hence the dynamic import below.
if (!DEBUG) {
  for (const level of ['info', 'warn']) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider ')) return;
      original(...args);
    };
  }
}
const { default: Provider } = await import('oidc-provider');

// A per-provider in-memory adapter. oidc-provider's own memory adapter cannot list what it
// holds; this one can, so a test can revoke every refresh token "at the provider".
function memoryAdapter() {
  const items = new Map(); // 'Model:id' -> { payload, expiresAt }
  const grants = new Map(); // grantId -> Set of 'Model:id'
  const uids = new Map(); // session uid -> id
  const userCodes = new Map();

  const live = (key) => {
    const item = items.get(key);
    if (!item) return undefined;
    if (item.expiresAt && item.expiresAt < Date.now()) {
      items.delete(key);
      return undefined;
    }
    return item.payload;
  };

  class MemoryAdapter {
    constructor(model) { this.model = model; }

    key(id) { return `${this.model}:${id}`; }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      items.set(key, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined });
      if (payload.grantId) {
        if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
        grants.get(payload.grantId).add(key);
      }
      if (this.model === 'Session' && payload.uid) uids.set(payload.uid, id);
      if (payload.userCode) userCodes.set(payload.userCode, id);
    }

    async find(id) { return live(this.key(id)); }

    async findByUid(uid) { return uids.has(uid) ? this.find(uids.get(uid)) : undefined; }

    async findByUserCode(code) { return userCodes.has(code) ? this.find(userCodes.get(code)) : undefined; }

    async consume(id) {
      const payload = live(this.key(id));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }

    async destroy(id) { items.delete(this.key(id)); }

    async revokeByGrantId(grantId) {
      for (const key of grants.get(grantId) ?? []) items.delete(key);
      grants.delete(grantId);
    }
  }

  // Every live stored entry of one model: [{ id, payload }].
  MemoryAdapter.entries = (model) => [...items.keys()]
    .filter((k) => k.startsWith(`${model}:`) && live(k))
    .map((k) => ({ id: k.slice(model.length + 1), payload: live(k) }));

  return MemoryAdapter;
}

function defaultClaims(username) {
  const given = username.charAt(0).toUpperCase() + username.slice(1);
  return {
    name: `${given} Example`,
    given_name: given,
    family_name: 'Example',
    preferred_username: username,
    email: `${username}@example.com`,
    email_verified: true,
  };
}

// How the client authenticated at the token/revocation/PAR endpoint, for assertions. A client
// assertion (RFC 7523) signed with an HMAC is client_secret_jwt, any other private_key_jwt.
function clientAuthOf(req, body) {
  if (/^basic /i.test(req.headers.authorization ?? '')) return 'client_secret_basic';
  if (body?.client_secret !== undefined) return 'client_secret_post';
  if (body?.client_assertion !== undefined) {
    return /^HS/.test(decodeSafely(body.client_assertion)?.header.alg ?? '') ? 'client_secret_jwt' : 'private_key_jwt';
  }
  return 'none';
}

// { header, claims } of a compact JWS, or undefined when it is not one. No verification: the
// provider verifies; this is for recording what the client sent.
function decodeSafely(jws) {
  try {
    return { header: decodeProtectedHeader(jws), claims: decodeJwt(jws) };
  } catch {
    return undefined;
  }
}

// The FAPI 2.0 part of the provider configuration (FAPI 2.0 Security Profile §5.3, as
// oidc-provider's `fapi` profile '2.0' enforces it: PKCE S256 required, redirect_uri required,
// a client assertion's aud must be the issuer identifier itself).
function fapiConfiguration(fapi) {
  return {
    client: {
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      // Inline keys: oidc-provider >= 9.7 refuses to fetch a jwks_uri on a loopback address.
      jwks: { keys: fapi.jwks },
      require_pushed_authorization_requests: true,
      dpop_bound_access_tokens: true,
    },
    clientAuthMethods: ['private_key_jwt'],
    features: {
      fapi: { enabled: true, profile: '2.0' },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
      // RFC 9449 §8: a nonce in every proof, at PAR and at the token endpoint. The secret
      // derives the nonces (they rotate with time); a fresh one per provider.
      dPoP: { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => fapi.requireNonce ?? true },
    },
  };
}

/**
 * Start oidc-provider on 127.0.0.1.
 * @returns {Promise<{ issuer: string, port: number, provider: Provider, stats: object,
 *   signingKey: object, revokeRefreshTokens(accountId?: string): Promise<number>,
 *   backchannelLogout(sub: string, sid: string): Promise<object>, close(): Promise<void> }>}
 */
export async function startProvider({
  clientId = 'bff',
  clientSecret = 'bff-secret-for-tests-only',
  redirectUris = ['http://127.0.0.1:8080/bff/callback'],
  postLogoutRedirectUris = ['http://127.0.0.1:8080/'],
  accessTokenTTL = 300, // seconds, or oidc-provider's (ctx, token, client) => seconds
  idTokenTTL = 3600,
  refreshTokenTTL = 14 * 24 * 3600,
  accounts, // { username: { claims... } }; undefined = any username logs in
  conformIdTokenClaims = false,
  extraProfileClaims = [], // more claim names released with the profile scope (e.g. 'groups')
  port = 0,
  // Koa middlewares run before everything else of the provider (e.g. faulty.mjs's token
  // endpoint faults); what they answer themselves is not counted in `stats`.
  middleware = [],
  // OpenID Connect Back-Channel Logout 1.0: the client's backchannel_logout_uri (with
  // backchannel_logout_session_required, so ID and logout tokens carry `sid`). Undefined: off.
  backchannelLogoutUri,
  // FAPI 2.0 (issue #14): { jwks: [the client's public JWK(s)], requireNonce = true }. The
  // client then has no secret and authenticates with private_key_jwt (ES256) only; PAR is
  // required (discovery says require_pushed_authorization_requests), access tokens are
  // DPoP-bound (dpop_bound_access_tokens: a code or refresh grant without a proof fails),
  // DPoP proofs need a server nonce (use_dpop_nonce), refresh tokens are not rotated.
  // Undefined: the ordinary provider above.
  fapi,
  // The ordinary provider offering PAR (RFC 9126) without requiring it.
  par = false,
  // Features the provider lacks (issue #15), any of: 'revocation' (no revocation_endpoint),
  // 'endSession' (no end_session_endpoint: RP-initiated logout off), 'refreshToken' (the
  // client may not use the refresh_token grant, so no refresh token is ever issued),
  // 'userinfo' (no userinfo_endpoint). Empty: every feature, as before.
  without = [],
  // The introspection endpoint (RFC 7662), off unless asked for.
  introspection = false,
} = {}) {
  const lacks = new Set(without);
  for (const name of lacks) {
    if (!['revocation', 'endSession', 'refreshToken', 'userinfo'].includes(name)) throw new Error(`unknown feature ${name}`);
  }
  // Listen first: the issuer must contain the real port, and port 0 picks a free one.
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const actualPort = server.address().port;
  const issuer = `http://127.0.0.1:${actualPort}`;

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: 'op-rs256', alg: 'RS256', use: 'sig' };

  const stats = {
    authorizationCodeGrants: 0,
    authorizationCodeFailures: 0,
    refreshGrants: 0,
    refreshFailures: 0,
    revocations: 0, // successful (200) calls of the revocation endpoint
    revokedRefreshTokens: 0, // of those, calls that found and revoked a refresh token
    endSessions: 0,
    userinfoRequests: 0,
    authorizationRequests: [], // raw query parameters of every GET /auth (not resumes)
    tokenRequests: [], // { grantType, clientAuth, status } of every POST /token
    // The tokens of every successful token endpoint answer: { access_token, refresh_token,
    // id_token } (absent ones undefined). Lets a test check that none of them reaches a browser.
    issuedTokens: [],
    lastError: undefined, // the last grant error, for debugging failed assertions
    // Every logout token the provider POSTed (RP-initiated logout or backchannelLogout()):
    // { url, sub, sid, jti, status (0 = no answer), error, at (Date.now()) }.
    backchannelLogouts: [],
    // FAPI (issue #14). Every POST /request (PAR, RFC 9126): { params (the form without the
    // client assertion), clientAuth, dpop (the proof's { header, claims } or undefined), status,
    // requestUri }.
    pushedAuthorizationRequests: [],
    // Every client assertion (RFC 7523) received at PAR, token or revocation: { path, header, claims }.
    clientAssertions: [],
    // Every DPoP proof received at PAR or token: { path, header, claims, status }.
    dpopProofs: [],
    // Answers `use_dpop_nonce` (RFC 9449 §8), by path ('/request', '/token').
    dpopNonceChallenges: {},
  };

  const Adapter = memoryAdapter();
  const fapiConfig = fapi ? fapiConfiguration(fapi) : undefined;

  async function deliverLogoutToken(url, options) {
    delete options.dispatcher;
    const token = options.body instanceof URLSearchParams ? options.body.get('logout_token') : undefined;
    const claims = token ? decodeJwt(token) : {};
    const record = { url: String(url), sub: claims.sub, sid: claims.sid, jti: claims.jti, status: 0, error: undefined, at: Date.now() };
    stats.backchannelLogouts.push(record);
    try {
      const res = await fetch(url, options);
      record.status = res.status;
      return res;
    } catch (err) {
      record.error = err.cause?.code ?? err.message;
      throw err;
    }
  }

  const provider = new Provider(issuer, {
    adapter: Adapter,
    clients: [{
      client_id: clientId,
      ...(fapiConfig ? {} : { client_secret: clientSecret }),
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutRedirectUris,
      grant_types: lacks.has('refreshToken') ? ['authorization_code'] : ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...(backchannelLogoutUri ? {
        backchannel_logout_uri: backchannelLogoutUri,
        backchannel_logout_session_required: true,
      } : {}),
      ...fapiConfig?.client,
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    // Only confidential clients with basic auth exist here.
    clientAuthMethods: fapiConfig?.clientAuthMethods ?? ['client_secret_basic'],
    // PKCE on every authorization request (oidc-provider 9 only knows S256 anyway).
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username', ...extraProfileClaims],
      email: ['email', 'email_verified'],
    },
    // oidc-provider's default puts only `sub` in an ID token issued next to an access token
    // (the rest is for userinfo). Most providers (Keycloak, Entra, Auth0) include the scope
    // claims in the ID token, so that is the default here; pass true for the strict behaviour.
    conformIdTokenClaims,
    // A refresh token for our client whenever it may use the refresh_token grant. The stock
    // rule also needs offline_access among the granted scopes, but oidc-provider drops
    // offline_access from every authorization request that lacks prompt=consent (OpenID
    // Connect Core 11), so a BFF that does not force a consent screen on each login would get
    // no refresh token at all. Whether offline_access was requested is still visible in
    // stats.authorizationRequests.
    issueRefreshToken: async (ctx, client, source) => (client.clientId === clientId
      ? client.grantTypeAllowed('refresh_token')
      : client.grantTypeAllowed('refresh_token') && source.scopes.has('offline_access')),
    // Rotate on every use: a reused (already rotated) refresh token then fails, and
    // oidc-provider also revokes the whole grant when that happens.
    // FAPI mode: not rotated (the FAPI 2.0 profile discourages rotation; a DPoP-bound
    // confidential client's refresh token stays valid across refreshes).
    rotateRefreshToken: !fapiConfig,
    ttl: {
      AccessToken: accessTokenTTL,
      IdToken: idTokenTTL,
      RefreshToken: refreshTokenTTL,
    },
    features: {
      devInteractions: { enabled: true }, // the built-in login and consent forms
      revocation: { enabled: !lacks.has('revocation') },
      rpInitiatedLogout: { enabled: !lacks.has('endSession') },
      userinfo: { enabled: !lacks.has('userinfo') },
      // Off unless asked for (`par: true`, offered but not required; the FAPI mode requires it).
      pushedAuthorizationRequests: { enabled: Boolean(par) },
      backchannelLogout: { enabled: Boolean(backchannelLogoutUri) },
      introspection: { enabled: Boolean(introspection) },
      ...fapiConfig?.features,
      // The `iss` authorization response parameter (RFC 9207) is always on in oidc-provider 9
      // for non-JARM responses, and discovery always advertises
      // authorization_response_iss_parameter_supported: true. Nothing to enable.
    },
    // oidc-provider >= 9.7 sends its outgoing requests through a dispatcher that refuses
    // special-use addresses (SSRF protection), loopback included, and every test server is on
    // 127.0.0.1: drop it. Only with back-channel logout, the one outgoing request made here.
    ...(backchannelLogoutUri ? { fetch: deliverLogoutToken } : {}),
    async findAccount(ctx, sub) {
      if (accounts && !Object.hasOwn(accounts, sub)) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { ...defaultClaims(sub), ...(accounts?.[sub] ?? {}), sub };
        },
      };
    },
  });

  // Koa would print unexpected errors; oidc-provider reports them as events anyway.
  provider.silent = !DEBUG;
  if (DEBUG) provider.on('server_error', (ctx, err) => console.error('op server_error', err));

  provider.on('grant.success', (ctx) => {
    const gt = ctx.oidc.params.grant_type;
    if (gt === 'authorization_code') stats.authorizationCodeGrants++;
    if (gt === 'refresh_token') stats.refreshGrants++;
  });
  provider.on('grant.error', (ctx, err) => {
    const gt = ctx.oidc?.params?.grant_type;
    stats.lastError = `${gt}: ${err.message} ${err.error_description ?? ''}`.trim();
    if (gt === 'authorization_code') stats.authorizationCodeFailures++;
    if (gt === 'refresh_token') stats.refreshFailures++;
    if (DEBUG) console.error('op grant.error', stats.lastError);
  });
  provider.on('end_session.success', () => { stats.endSessions++; });

  for (const m of middleware) provider.use(m);

  // There is no "revocation.success" event in oidc-provider 9, so count at the HTTP level.
  provider.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/auth') {
      stats.authorizationRequests.push(Object.fromEntries(new URLSearchParams(ctx.querystring)));
    }
    await next();
    if (ctx.method === 'POST' && ['/request', '/token', '/token/revocation'].includes(ctx.path)) recordFapi(ctx);
    if (ctx.method === 'POST' && ctx.path === '/token') {
      const body = ctx.oidc?.body ?? {};
      stats.tokenRequests.push({
        grantType: body.grant_type, clientAuth: clientAuthOf(ctx.req, body), status: ctx.status,
        error: ctx.body?.error, tokenType: ctx.body?.token_type, dpop: Boolean(ctx.get('DPoP')),
      });
      if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
        const { access_token, refresh_token, id_token } = ctx.body;
        stats.issuedTokens.push({ access_token, refresh_token, id_token });
      }
    }
    if (ctx.method === 'POST' && ctx.path === '/token/revocation' && ctx.status === 200) {
      stats.revocations++;
      if (ctx.oidc?.entities?.RefreshToken) stats.revokedRefreshTokens++;
    }
    if (ctx.path === '/me' && ctx.status === 200) stats.userinfoRequests++;
  });

  // What a FAPI client sent to PAR, token and revocation (after the provider answered).
  function recordFapi(ctx) {
    const body = ctx.oidc?.body ?? {};
    const assertion = body.client_assertion && decodeSafely(body.client_assertion);
    if (assertion) stats.clientAssertions.push({ path: ctx.path, ...assertion });
    const proof = ctx.get('DPoP') ? decodeSafely(ctx.get('DPoP')) : undefined;
    if (proof && ctx.path !== '/token/revocation') stats.dpopProofs.push({ path: ctx.path, ...proof, status: ctx.status });
    if (ctx.body?.error === 'use_dpop_nonce') stats.dpopNonceChallenges[ctx.path] = (stats.dpopNonceChallenges[ctx.path] ?? 0) + 1;
    if (ctx.path === '/request') {
      const { client_assertion, client_assertion_type, ...params } = body;
      stats.pushedAuthorizationRequests.push({
        params, clientAuth: clientAuthOf(ctx.req, body), dpop: proof, status: ctx.status, requestUri: ctx.body?.request_uri,
      });
    }
  }

  // The development login form accepts any username. With `accounts`, refuse unknown ones the
  // way a real login page does: show the form again (otherwise oidc-provider answers 500 later,
  // when findAccount finds nobody). The body is read here and handed on pre-parsed.
  if (accounts) {
    provider.use(async (ctx, next) => {
      if (ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path)) {
        const chunks = [];
        for await (const c of ctx.req) chunks.push(c);
        const raw = Buffer.concat(chunks).toString();
        const form = new URLSearchParams(raw);
        if (form.get('prompt') === 'login' && !Object.hasOwn(accounts, form.get('login') ?? '')) {
          ctx.status = 303;
          ctx.redirect(ctx.path);
          return;
        }
        ctx.req.body = raw;
      }
      await next();
    });
  }

  server.on('request', provider.callback());

  // Simulate "the refresh token was revoked at the provider" (admin action, password reset).
  async function revokeRefreshTokens(accountId) {
    let n = 0;
    for (const { id, payload } of Adapter.entries('RefreshToken')) {
      if (accountId !== undefined && payload.accountId !== accountId) continue;
      await new Adapter('RefreshToken').destroy(id);
      n++;
    }
    return n;
  }

  // A back-channel logout of (sub, sid) for our client, as the provider sends it when that
  // session ends; resolves with its record in stats.backchannelLogouts, also on failure.
  async function backchannelLogout(sub, sid) {
    const client = await provider.Client.find(clientId);
    const n = stats.backchannelLogouts.length;
    await client.backchannelLogout(sub, sid).catch(() => {});
    return stats.backchannelLogouts.slice(n).find((r) => r.sub === sub && r.sid === sid);
  }

  async function close() {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(() => resolve()));
  }

  // signingKey: the private JWK the provider signs with, so a test can forge tokens with it.
  return { issuer, port: actualPort, provider, stats, signingKey, revokeRefreshTokens, backchannelLogout, close };
}

// ---- command line (the demo) --------------------------------------------------------------

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '9000' },
      'client-id': { type: 'string', default: 'bff' },
      'client-secret': { type: 'string' },
      'redirect-uri': { type: 'string', multiple: true },
      'post-logout-redirect-uri': { type: 'string', multiple: true },
      'access-token-ttl': { type: 'string', default: '300' },
    },
  });
  const secret = values['client-secret'] ?? process.env.OP_CLIENT_SECRET;
  if (!secret || !values['redirect-uri']) {
    console.error('usage: node op.mjs [--port 9000] [--client-id bff] --client-secret S '
      + '--redirect-uri URL [--post-logout-redirect-uri URL] [--access-token-ttl 300]');
    process.exit(2);
  }
  const op = await startProvider({
    port: Number(values.port),
    clientId: values['client-id'],
    clientSecret: secret,
    redirectUris: values['redirect-uri'],
    postLogoutRedirectUris: values['post-logout-redirect-uri'] ?? [],
    accessTokenTTL: Number(values['access-token-ttl']),
  });
  console.log(op.issuer);
  const stop = async () => {
    await op.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

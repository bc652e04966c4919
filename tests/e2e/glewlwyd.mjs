// A real Glewlwyd 2.7 (Debian's `glewlwyd` package, a C OpenID Connect server) for sealgate's
// end-to-end tests: the second real provider (issue #15).
//
//   import { startGlewlwyd, glewlwydLogin } from './glewlwyd.mjs';
//   const g = await startGlewlwyd({ clientSecret: 's', redirectUris: [...], postLogoutRedirectUris: [...] });
//   ... g.issuer, g.stats ...; await g.close();
//
// Everything is the test's own: a temp folder with a SQLite database created from the
// packaged schema (init.sqlite3.sql), a config file written here (never /etc/glewlwyd), the
// server on 127.0.0.1 and a free port, stopped by PID. Then, through glewlwyd's admin REST
// API as its webapp would do it (logged in as the schema's `admin`/`password`): the scopes, the
// OpenID Connect plugin instance (an RS256 key made here), the client and the test users.
//
// In front of glewlwyd sits a small recording HTTP proxy, and the issuer is ITS URL
// (glewlwyd's `external_url`): every request still reaches the real server unchanged, but the
// tests see what the token endpoint issued (`stats.issuedTokens`, for the leak search), count
// grants by type (`stats.grants`), and can read every answer it gave (`stats.tokenAnswers`).
//
// Glewlwyd's login page is a JavaScript app (webapp/login.html). `glewlwydLogin` does what
// that page does, over the same REST API: POST /api/auth/ with username and password (the
// session cookie), PUT /api/auth/grant/{client_id} (the consent), then the authorization
// request again with the cookie and `g_continue` (the page's "Continue" button). `glewlwydEndSession` does what the page does on `prompt=end_session`.
//
// Binary: /usr/bin/glewlwyd or GLEWLWYD; the schema: /usr/share/doc/glewlwyd/database/
// init.sqlite3.sql.gz; sqlite3 (a dependency of the package) loads it.

import { execFile, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

import { CookieJar } from './browserless.mjs';
import { freePort } from './sealgate.mjs';

const DEBUG = Boolean(process.env.DEBUG);
const SCHEMA = '/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz';
const MODULES = '/usr/lib/glewlwyd';
const PLUGIN = 'oidc'; // the plugin instance's name: its endpoints live under /api/oidc/

export const glewlwydBin = () => process.env.GLEWLWYD || (existsSync('/usr/bin/glewlwyd') ? '/usr/bin/glewlwyd' : undefined);

/** The test users: password `secret`, as op.mjs's forms accept. */
export const USERS = {
  alice: { name: 'Alice Example', email: 'alice@example.com' },
  bob: { name: 'Bob Example', email: 'bob@example.com' },
};
export const PASSWORD = 'secret';
export const SCOPES = ['openid', 'profile', 'email', 'offline_access'];

// The client database module's data format (from init.sqlite3.sql) knows the singular
// `post_logout_redirect_uri`, but the OIDC plugin reads the client's `post_logout_redirect_uris`
// (protocol_oidc.c, callback_oidc_end_session): a property the module does not know is not
// stored, so the packaged schema cannot hold a client's post-logout URIs. Added here.
const EXTRA_CLIENT_PROPERTIES = {
  post_logout_redirect_uris: { multiple: true, read: true, write: true },
};

async function createDatabase(file) {
  const sql = zlib.gunzipSync(await fs.readFile(SCHEMA)).toString();
  await new Promise((resolve, reject) => {
    const p = execFile('sqlite3', [file], { timeout: 10_000 }, (err, _out, stderr) => (err ? reject(new Error(`sqlite3: ${stderr || err.message}`)) : resolve()));
    p.stdin.end(sql);
  });
  const patch = `UPDATE g_client_module_instance SET gcmi_parameters = json_patch(gcmi_parameters, '${JSON.stringify({ 'data-format': EXTRA_CLIENT_PROPERTIES })}') WHERE gcmi_name = 'database';`;
  await promisify(execFile)('sqlite3', [file, patch], { timeout: 10_000 });
}

const configFile = ({ port, externalUrl, db }) => `# written by tests/e2e/glewlwyd.mjs
port = ${port}
bind_address = "127.0.0.1"
external_url = "${externalUrl}"
login_url = "login.html"
api_prefix = "api"
allow_origin = "*"
log_mode = "console"
log_level = "${DEBUG ? 'DEBUG' : 'WARNING'}"
cookie_secure = 0
session_expiration = 3600
session_key = "GLEWLWYD2_SESSION_ID"
admin_scope = "g_admin"
profile_scope = "g_profile"
login_api_enabled = true
allow_multiple_user_per_session = true
user_module_path = "${MODULES}/user"
client_module_path = "${MODULES}/client"
user_auth_scheme_module_path = "${MODULES}/scheme"
plugin_module_path = "${MODULES}/plugin"
hash_algorithm = "SHA512"
database = { type = "sqlite3"; path = "${db}"; };
`;

// ---- the recording proxy ----------------------------------------------------------------------

/** Forwards every request to glewlwyd as is; keeps the token endpoint's answers. */
function recordingProxy(target, stats) {
  return http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const isToken = req.method === 'POST' && req.url.split('?')[0] === `/api/${PLUGIN}/token`;
      const grant = isToken ? new URLSearchParams(body.toString()).get('grant_type') : undefined;
      const up = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers }, (ures) => {
        const out = [];
        ures.on('data', (c) => out.push(c));
        ures.on('end', () => {
          const text = Buffer.concat(out);
          if (isToken) {
            stats.grants[grant] = (stats.grants[grant] ?? 0) + 1;
            stats.tokenAnswers.push({ grant, status: ures.statusCode, body: text.toString() });
            try {
              const t = JSON.parse(text.toString());
              if (t.access_token) stats.issuedTokens.push({ access_token: t.access_token, refresh_token: t.refresh_token, id_token: t.id_token, token_type: t.token_type });
            } catch { /* an error answer */ }
          }
          if (req.url.startsWith(`/api/${PLUGIN}/revoke`)) stats.revocations.push({ status: ures.statusCode, body: text.toString() });
          res.writeHead(ures.statusCode, ures.rawHeaders);
          res.end(text);
        });
      });
      up.on('error', () => { res.destroy(); });
      up.end(body);
    });
  });
}

// ---- the admin API ------------------------------------------------------------------------------

async function api(jar, base, method, p, body) {
  const url = `${base}/api${p}`;
  const res = await jar.fetch(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`glewlwyd ${method} ${p}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** The OIDC plugin's parameters: the webapp's defaults (admin.js), changed where sealgate needs it. */
function pluginParameters({ issuer, key, cert, accessTokenTTL, refreshTokenTTL, introspection }) {
  return {
    iss: issuer,
    'jwt-type': 'rsa',
    'jwt-key-size': '256',
    key,
    cert,
    'jwks-show': true,
    'access-token-duration': accessTokenTTL,
    'refresh-token-duration': refreshTokenTTL,
    'code-duration': 600,
    'refresh-token-rolling': true,
    'refresh-token-one-use': 'always', // rotation, as oidc-provider's default
    'allow-non-oidc': false,
    'auth-type-code-enabled': true,
    'auth-type-code-revoke-replayed': true,
    'auth-type-token-enabled': false,
    'auth-type-id-token-enabled': false,
    'auth-type-none-enabled': false,
    'auth-type-password-enabled': false,
    'auth-type-client-enabled': false,
    'auth-type-device-enabled': false,
    'auth-type-refresh-enabled': true,
    scope: [],
    'additional-parameters': [],
    claims: [
      { name: 'preferred_username', 'user-property': 'username', type: 'string', mandatory: true, scope: [] },
    ],
    'subject-type': 'public',
    'service-documentation': '',
    'name-claim': 'mandatory',
    'name-claim-scope': [],
    'email-claim': 'mandatory',
    'email-claim-scope': [],
    'scope-claim': 'no',
    'scope-claim-scope': [],
    'address-claim': { type: 'no' },
    'allowed-scope': ['openid', 'profile', 'email', 'offline_access'],
    'pkce-allowed': true,
    'pkce-method-plain-allowed': false,
    'pkce-required': true,
    'introspection-revocation-allowed': true,
    'introspection-revocation-auth-scope': [],
    'introspection-revocation-allow-target-client': introspection,
    'register-client-allowed': false,
    'session-management-allowed': true,
    'session-cookie-name': 'GLEWLWYD2_OIDC_SID',
    'session-cookie-expiration': 2419200,
    'front-channel-logout-allowed': true,
    'back-channel-logout-allowed': true,
    'request-parameter-allow': true,
    'request-uri-allow-https-non-secure': false,
    'request-maximum-exp': 3600,
    'encrypt-out-token-allow': false,
    'oauth-dpop-allowed': true,
    'oauth-dpop-iat-duration': 60,
    'oauth-par-allowed': true,
    'oauth-par-duration': 90,
    'oauth-par-required': false,
    'oauth-par-request_uri-prefix': 'urn:ietf:params:oauth:request_uri:',
    'oauth-rar-allowed': false,
    'oauth-ciba-allowed': false,
    'resource-allowed': false,
  };
}

/**
 * Start glewlwyd, configured for one confidential client.
 *
 * clientId, clientSecret: the client (client_secret_basic, confidential).
 * redirectUris, postLogoutRedirectUris: exact URIs, as the client registers them.
 * backchannelLogoutUri: OpenID Connect Back-Channel Logout 1.0 for the client (with sid).
 * accessTokenTTL, refreshTokenTTL: seconds (glewlwyd has one access-token duration per plugin).
 * introspection: whether the client may introspect its own tokens (RFC 7662), default true.
 *
 * @returns {Promise<{ issuer: string, port: number, stats: object, logs(): string,
 *   admin: (method, path, body) => Promise<any>, close(): Promise<void> }>}
 */
export async function startGlewlwyd({
  clientId = 'bff',
  clientSecret,
  redirectUris = [],
  postLogoutRedirectUris = [],
  backchannelLogoutUri,
  accessTokenTTL = 300,
  refreshTokenTTL = 3600,
  introspection = true,
  timeoutMs = 10_000,
} = {}) {
  const bin = glewlwydBin();
  if (!bin) throw new Error('glewlwyd not found (apt-get install -y glewlwyd, or GLEWLWYD=/path)');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'glewlwyd-e2e-'));
  const db = path.join(dir, 'glewlwyd.sqlite3');
  const [port, proxyPort] = await Promise.all([freePort(), freePort()]);
  const base = `http://127.0.0.1:${proxyPort}`;
  const issuer = `${base}/api/${PLUGIN}`;
  const stats = { issuedTokens: [], grants: {}, tokenAnswers: [], revocations: [] };

  await createDatabase(db);
  const conf = path.join(dir, 'glewlwyd.conf');
  await fs.writeFile(conf, configFile({ port, externalUrl: base, db }));

  const proc = spawn(bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let buffer = '';
  const capture = (c) => {
    buffer = (buffer + c).slice(-2 * 1024 * 1024);
    if (DEBUG) process.stderr.write(`[glewlwyd:${port}] ${c}`);
  };
  proc.stdout.on('data', capture);
  proc.stderr.on('data', capture);
  let exit;
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => { exit = { code, signal }; resolve(exit); });
    proc.once('error', (err) => { exit = { error: err.message }; resolve(exit); });
  });
  const proxy = recordingProxy(port, stats);
  await new Promise((resolve) => proxy.listen(proxyPort, '127.0.0.1', resolve));

  async function close() {
    await new Promise((resolve) => { proxy.closeAllConnections?.(); proxy.close(resolve); });
    if (!exit) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => { if (!exit) proc.kill('SIGKILL'); }, 3000);
      await exited;
      clearTimeout(timer);
    }
    if (!process.env.KEEP_TMP) await fs.rm(dir, { recursive: true, force: true });
  }

  try {
    // Up when the API answers (401 without a session).
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (exit) throw new Error(`glewlwyd exited: ${JSON.stringify(exit)}`);
      try {
        const res = await fetch(`http://127.0.0.1:${port}/api/profile`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        break;
      } catch { /* not yet */ }
      if (Date.now() > deadline) throw new Error('glewlwyd did not answer in time');
      await new Promise((r) => setTimeout(r, 50));
    }

    const jar = new CookieJar();
    const admin = (method, p, body) => api(jar, base, method, p, body);
    await admin('POST', '/auth/', { username: 'admin', password: 'password' });
    for (const name of ['profile', 'email', 'offline_access']) {
      await admin('POST', '/scope/', { name, display_name: name, description: name, password_required: false, password_max_age: 0, scheme: {} });
    }
    const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    await admin('POST', '/mod/plugin/', {
      module: 'oidc',
      name: PLUGIN,
      display_name: 'OpenID Connect',
      parameters: pluginParameters({
        issuer,
        key: privateKey.export({ type: 'pkcs8', format: 'pem' }),
        cert: publicKey.export({ type: 'spki', format: 'pem' }),
        accessTokenTTL,
        refreshTokenTTL,
        introspection,
      }),
    });
    await admin('POST', '/client/', {
      client_id: clientId,
      name: clientId,
      description: 'sealgate e2e',
      enabled: true,
      confidential: true,
      client_secret: clientSecret,
      scope: [],
      redirect_uri: redirectUris,
      authorization_type: ['code', 'refresh_token'],
      token_endpoint_auth_method: ['client_secret_basic'],
      post_logout_redirect_uris: postLogoutRedirectUris,
      ...(backchannelLogoutUri ? { backchannel_logout_uri: backchannelLogoutUri, backchannel_logout_session_required: 'true' } : {}),
    });
    for (const [username, u] of Object.entries(USERS)) {
      await admin('POST', '/user/', { username, password: PASSWORD, name: u.name, email: u.email, enabled: true, scope: [...SCOPES, 'g_profile'] });
    }
    return { issuer, base, port: proxyPort, stats, admin, logs: () => buffer, close };
  } catch (err) {
    const logs = buffer;
    await close();
    throw new Error(`${err.message}\n--- glewlwyd logs ---\n${logs.slice(-4000)}`);
  }
}

// ---- the login page's REST calls ----------------------------------------------------------------

const manual = (jar, url, init = {}) => jar.fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(5000), ...init });

/**
 * A whole login at sealgate, glewlwyd's login page driven over its REST API as the page does:
 * GET /bff/login -> 302 glewlwyd's authorization endpoint -> 302 login.html (no session yet);
 * POST /api/auth/ (username, password); PUT /api/auth/grant/{client_id} (the consent); the
 * authorization URL again -> 302 to sealgate's callback -> 302 returnTo.
 * Returns { jar, loginResponse, authorizeUrl, callbackUrl, callbackResponse, finalLocation }.
 */
export async function glewlwydLogin({ bffUrl, username = 'alice', password = PASSWORD, returnTo = '/', jar = new CookieJar(), clientId = 'bff', scopes = SCOPES }) {
  const loginResponse = await manual(jar, `${bffUrl}/bff/login?returnTo=${encodeURIComponent(returnTo)}`);
  const authorizeUrl = loginResponse.headers.get('location');
  if (loginResponse.status !== 302 || !authorizeUrl) throw new Error(`/bff/login: ${loginResponse.status}`);
  const api = `${new URL(authorizeUrl).origin}/api`;
  let res = await manual(jar, authorizeUrl);
  await res.arrayBuffer();
  let location = res.headers.get('location') ?? '';
  if (res.status === 302 && /\/login\.html\?/.test(location)) {
    const auth = await jar.fetch(`${api}/auth/`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }) });
    if (auth.status !== 200) throw new Error(`glewlwyd /api/auth/: ${auth.status} ${await auth.text()}`);
    const grant = await jar.fetch(`${api}/auth/grant/${encodeURIComponent(clientId)}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scope: scopes.join(' ') }) });
    if (grant.status !== 200) throw new Error(`glewlwyd grant: ${grant.status} ${await grant.text()}`);
    // The page's "Continue" button: back to `callback_url` (glewlwyd's own copy of the
    // authorization request), with `g_continue` added.
    const callback = new URL(location, authorizeUrl).searchParams.get('callback_url');
    res = await manual(jar, `${callback}${callback.includes('?') ? '&' : '?'}g_continue`);
    await res.arrayBuffer();
    location = res.headers.get('location') ?? '';
  }
  if (res.status !== 302 || !location.startsWith(`${bffUrl}/bff/callback`)) {
    throw new Error(`glewlwyd authorization did not return to sealgate: ${res.status} ${location}`);
  }
  const callbackUrl = location;
  const callbackResponse = await manual(jar, callbackUrl);
  await callbackResponse.arrayBuffer();
  return { jar, loginResponse, authorizeUrl, callbackUrl, callbackResponse, finalLocation: callbackResponse.headers.get('location') };
}

/**
 * glewlwyd's end-session page, as login.html runs it for `prompt=end_session`: the session's
 * clients (GET /api/oidc/session/{sid}/{client_id}?post_redirect_to=...), then "log out":
 * DELETE /api/oidc/session/{sid} (which sends the back-channel logouts), DELETE /api/auth/,
 * and only when glewlwyd named a post_redirect_to, the browser goes to `callback_url`.
 * `url` is the end-session endpoint's redirect to login.html. Returns { redirectTo, session }:
 * redirectTo is undefined when the page would stay (no way back to the app).
 */
export async function glewlwydEndSession({ jar, url }) {
  const u = new URL(url);
  const p = Object.fromEntries(u.searchParams);
  const api = `${u.origin}/api`;
  if (p.prompt !== 'end_session' || !p.sid || !p.plugin || !p.client_id) return { redirectTo: undefined, params: p };
  const q = p.post_redirect_to ? `?post_redirect_to=${encodeURIComponent(p.post_redirect_to)}` : '';
  const s = await jar.fetch(`${api}/${p.plugin}/session/${p.sid}/${p.client_id}${q}`);
  if (s.status !== 200) throw new Error(`glewlwyd session list: ${s.status} ${await s.text()}`);
  const session = await s.json();
  const del = await jar.fetch(`${api}/${p.plugin}/session/${p.sid}`, { method: 'DELETE' });
  if (del.status !== 200) throw new Error(`glewlwyd end session: ${del.status} ${await del.text()}`);
  await (await jar.fetch(`${api}/auth/`, { method: 'DELETE' })).arrayBuffer();
  return { redirectTo: session.post_redirect_to ? p.callback_url : undefined, session, params: p };
}

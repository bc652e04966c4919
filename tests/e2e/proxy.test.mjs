// End-to-end tests of sealgate's API proxy: the real provider (op.mjs), the real sealgate
// binary, and a real upstream (upstream.mjs) on sockets. Nothing is mocked.
//
//   cd tests/e2e && node --test proxy.test.mjs        (needs `cargo build` first)
//
// Two stacks: "forwarding" (long-lived access tokens, several routes) and "refresh" (access
// tokens of 4 s with session.refresh_skew = 1s, so a token is due for refresh 3 s after login).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { CookieJar, bffFetch, login } from './browserless.mjs';
import { startProvider } from './op.mjs';
import { freePort, sealgateBin, startSealgate } from './sealgate.mjs';
import { downloadSha256, startUpstream } from './upstream.mjs';
import { findToken, issuedTokens, rawRequest, rssBytes, sampleRss, writeStream, wsConnect } from './proxy-lib.mjs';

const SECRET = 'proxy-e2e-client-secret';
const MB = 1024 * 1024;
const skip = existsSync(sealgateBin()) ? false : `no sealgate binary at ${sealgateBin()} (cargo build)`;
const log = (...args) => console.log('[proxy]', ...args); // numbers worth keeping: RSS, timings

/** The real provider plus a sealgate whose redirect URI the provider knows. */
async function startStack({ accessTokenTTL = 300, config = {} }) {
  const port = await freePort();
  const bff = `http://127.0.0.1:${port}`;
  const op = await startProvider({
    clientId: 'bff',
    clientSecret: SECRET,
    redirectUris: [`${bff}/bff/callback`],
    postLogoutRedirectUris: [`${bff}/`],
    accessTokenTTL,
  });
  let opClosed = false;
  const closeOp = async () => {
    if (!opClosed) {
      opClosed = true;
      await op.close();
    }
  };
  let sg;
  try {
    sg = await startSealgate({ issuer: op.issuer, clientSecret: SECRET, port, config });
  } catch (err) {
    await closeOp();
    throw err;
  }
  return { op, sg, closeOp, stop: async () => { await sg.stop(); await closeOp(); } };
}

async function loginAs(sg, username) {
  const { jar, callbackResponse } = await login({ bffUrl: sg.url, username });
  assert.equal(callbackResponse.status, 302, `login of ${username} failed: ${sg.logs().slice(-2000)}`);
  return jar;
}

/** Names of the cookies in a Cookie header. */
const cookieNames = (header) => (header ?? '').split(';').map((p) => p.trim().split('=')[0]).filter(Boolean);
const isSealgateCookie = (name) => /^(__Host-)?sealgate[.-]/.test(name);

/** The value of one sample line of the Prometheus text. */
function metric(text, name, labels) {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',');
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${want}} `));
  assert.ok(line, `no ${name}{${want}} in /metrics:\n${text}`);
  return Number(line.split(' ').at(-1));
}

async function readJson(res) {
  const text = await res.text();
  try {
    return { text, json: JSON.parse(text) };
  } catch {
    return { text, json: undefined };
  }
}

// ---------------------------------------------------------------------------------------------

describe('proxy: forwarding, guards, errors and streaming', { skip }, () => {
  let stack;
  let sg;
  let op;
  let up; // the main upstream
  let up2; // the upstream of the stripped, longer route and of /svc
  let dev; // the frontend dev server (the SPA's own origin)
  let jar;
  let token; // the access token the provider issued at login
  let downPort;

  before(async () => {
    up = await startUpstream();
    up2 = await startUpstream();
    dev = await startUpstream();
    downPort = await freePort(); // nothing listens there
    stack = await startStack({
      config: {
        routes: [
          { prefix: '/api/', upstream: up.url },
          // Longer and listed later: must still win over /api/ for its paths.
          { prefix: '/api/b/', upstream: up2.url, strip_prefix: true },
          { prefix: '/pub/', upstream: up.url, strip_prefix: true, token: 'optional' },
          { prefix: '/down/', upstream: `http://127.0.0.1:${downPort}` },
          { prefix: '/slow/', upstream: up.url, strip_prefix: true, timeout: '1s' },
          // No trailing slash: must still match on segment boundaries only.
          { prefix: '/svc', upstream: up2.url },
          { prefix: '/named/', upstream: up.url, strip_prefix: true, forward_cookies: ['lang', 'sealgate.0'] },
        ],
        frontend: { upstream: dev.url },
      },
    });
    ({ sg, op } = stack);
    jar = await loginAs(sg, 'alice');
    token = op.stats.issuedTokens.at(-1).access_token;
    assert.ok(token, 'the provider issued an access token');
  });

  after(async () => {
    await stack?.stop();
    await up?.close();
    await up2?.close();
    await dev?.close();
  });

  test('forwards with the Bearer token, without the browser\'s cookies, with Forwarded and X-Forwarded-* from what sealgate knows; the answer carries no token', async () => {
    const n = up.requests.length;
    const cookie = `${jar.header(`${sg.url}/api/echo`)}; theme=dark; sealgate-tx-abcdefgh.0=stale-tx`;
    assert.ok(cookieNames(cookie).some((c) => /^sealgate\.\d+$/.test(c)), `the jar holds the session cookie: ${cookie}`);
    // What a client may claim, hoping an upstream trusts it (links, redirects, rate limits).
    const forged = {
      forwarded: 'for=10.0.0.1;host=admin.internal;proto=https',
      'x-forwarded-for': '10.0.0.1',
      'x-forwarded-host': 'admin.internal',
      'x-forwarded-proto': 'https',
      'x-forwarded-port': '1',
      'x-real-ip': '10.0.0.1',
    };
    const res = await fetch(`${sg.url}/api/echo?q=a%20b&x=1&x=2&e=%2F%3F`, {
      headers: { 'x-csrf': '1', cookie, authorization: 'Bearer forged-by-the-page', 'x-custom': 'kept', ...forged },
    });
    const { text, json } = await readJson(res);
    assert.equal(res.status, 200, text);
    assert.equal(up.requests.length, n + 1, 'exactly one request reached the upstream');
    const seen = up.requests.at(-1);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/api/echo?q=a%20b&x=1&x=2&e=%2F%3F', 'path and query arrive byte for byte');
    assert.equal(seen.headers.authorization, `Bearer ${token}`, 'the session token, not the page\'s header');
    // The route names no cookie: no Cookie header at all (before: every non-sealgate cookie).
    assert.equal(seen.headers.cookie, undefined, 'no Cookie header upstream by default');
    // From sealgate's own knowledge (the peer, public_url), each header once.
    assert.equal(seen.headers.forwarded, `for=127.0.0.1;host="127.0.0.1:${sg.port}";proto=http`);
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen.headers['x-real-ip'], '127.0.0.1');
    assert.equal(seen.headers['x-forwarded-proto'], 'http');
    assert.equal(seen.headers['x-forwarded-host'], `127.0.0.1:${sg.port}`);
    assert.equal(seen.headers['x-forwarded-port'], String(sg.port));
    const raw = seen.rawHeaders.filter((_, i) => i % 2 === 0).map((h) => h.toLowerCase());
    for (const h of Object.keys(forged)) assert.equal(raw.filter((r) => r === h).length, 1, `${h} sent once`);
    assert.equal(seen.headers.host, `127.0.0.1:${up.port}`);
    assert.equal(seen.headers['x-custom'], 'kept');
    assert.equal(seen.headers['x-csrf'], '1');
    // What the page gets back: the upstream's answer, and no token anywhere in it.
    assert.equal(json.url, seen.url);
    assert.equal(json.authorization.present, true);
    assert.equal(findToken(res.headers, text, issuedTokens(op)), undefined);
  });

  test('POST bodies and methods are forwarded; hop-by-hop headers are not', async () => {
    const body = JSON.stringify({ hello: 'upstream', pad: 'x'.repeat(5000) });
    const res = await bffFetch(jar, `${sg.url}/api/echo`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body,
    });
    const { text, json } = await readJson(res);
    assert.equal(res.status, 200, text);
    assert.equal(json.method, 'POST');
    assert.equal(json.bodyLength, Buffer.byteLength(body));
    assert.equal(json.headers['content-type'], 'application/json');

    const del = await bffFetch(jar, `${sg.url}/api/echo?id=7`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    assert.equal((await del.json()).method, 'DELETE');

    // node:http lets the test send the hop-by-hop headers fetch refuses to set.
    const n = up.requests.length;
    const raw = await rawRequest(`${sg.url}/api/echo`, {
      headers: {
        'x-csrf': '1',
        cookie: jar.header(`${sg.url}/api/echo`),
        connection: 'keep-alive, x-hop-secret',
        'x-hop-secret': 'for-the-proxy-only',
        'proxy-authorization': 'Basic cHJveHk6c2VjcmV0',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        'x-end-to-end': 'yes',
      },
    });
    assert.equal(raw.status, 200, raw.body);
    assert.equal(up.requests.length, n + 1);
    const seen = up.requests.at(-1).headers;
    assert.equal(seen['x-end-to-end'], 'yes');
    for (const h of ['x-hop-secret', 'proxy-authorization', 'keep-alive', 'te']) {
      assert.equal(seen[h], undefined, `${h} must not be forwarded`);
    }
    assert.equal(seen.authorization, `Bearer ${token}`);
  });

  test('HTTP/2 (h2c) clients are proxied the same way: token, cookies filtered, X-Forwarded-*', async () => {
    const client = http2.connect(sg.url);
    client.on('error', () => {});
    try {
      const n = up.requests.length;
      // HTTP/2 may split Cookie into several header fields (RFC 9113 §8.2.3): send it so.
      const req = client.request({
        ':path': '/api/echo?h2=1',
        'x-csrf': '1',
        cookie: [jar.header(`${sg.url}/api/echo`), 'theme=dark'],
      });
      req.setTimeout(5000, () => req.close(http2.constants.NGHTTP2_CANCEL));
      const head = await new Promise((resolve, reject) => { req.once('response', resolve); req.once('error', reject); });
      let text = '';
      for await (const c of req) text += c;
      assert.equal(head[':status'], 200, text);
      assert.equal(up.requests.length, n + 1);
      const seen = up.requests.at(-1);
      assert.equal(seen.url, '/api/echo?h2=1');
      assert.equal(seen.headers.authorization, `Bearer ${token}`);
      assert.equal(seen.headers.cookie, undefined, 'no Cookie header upstream by default');
      assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
      assert.equal(seen.headers['x-forwarded-proto'], 'http');
      assert.equal(seen.headers['x-forwarded-host'], `127.0.0.1:${sg.port}`, 'X-Forwarded-Host from :authority');
      assert.equal(findToken(head, text, issuedTokens(op)), undefined);
    } finally {
      client.close();
    }
  });

  test('strip_prefix removes the route prefix; the longest prefix wins', async () => {
    const n1 = up.requests.length;
    const n2 = up2.requests.length;
    const res = await bffFetch(jar, `${sg.url}/api/b/api/echo?z=9`);
    const { text, json } = await readJson(res);
    assert.equal(res.status, 200, text);
    assert.equal(up2.requests.length, n2 + 1, 'the /api/b/ route went to the second upstream');
    assert.equal(up.requests.length, n1, 'and not to the /api/ upstream');
    assert.equal(up2.requests.at(-1).url, '/api/echo?z=9', 'prefix /api/b stripped, query kept');
    assert.equal(json.url, '/api/echo?z=9');
    assert.equal(up2.requests.at(-1).headers.authorization, `Bearer ${token}`);

    // /api/echo and /api/bb/... belong to the shorter /api/ route, unstripped.
    const plain = await bffFetch(jar, `${sg.url}/api/echo?z=1`);
    assert.equal(plain.status, 200);
    await plain.arrayBuffer();
    const sibling = await bffFetch(jar, `${sg.url}/api/bb/echo`);
    assert.equal(sibling.status, 404, 'the upstream\'s own 404 for an unknown path');
    assert.deepEqual(await sibling.json(), { error: 'no_such_endpoint', path: '/api/bb/echo' });
    assert.equal(up2.requests.length, n2 + 1);
    assert.deepEqual(up.requests.slice(n1).map((r) => r.url), ['/api/echo?z=1', '/api/bb/echo']);
  });

  test('forward_cookies: only the named cookies reach the route, never sealgate\'s even when named', async () => {
    const n = up.requests.length;
    const cookie = `${jar.header(`${sg.url}/named/api/echo`)}; theme=dark; lang=de; _ga=GA1.2.3`;
    const res = await fetch(`${sg.url}/named/api/echo`, { headers: { 'x-csrf': '1', cookie } });
    assert.equal(res.status, 200, await res.text());
    assert.equal(up.requests.length, n + 1);
    const seen = up.requests.at(-1).headers;
    assert.equal(seen.cookie, 'lang=de', 'lang (named) only; sealgate.0 (named too) never');
    assert.equal(seen.authorization, `Bearer ${token}`);
  });

  test('a route prefix matches on segment boundaries: /svcfoo and /svc-internal never get the token', async () => {
    const n2 = up2.requests.length;
    const nd = dev.requests.length;
    const cookie = `${jar.header(`${sg.url}/svc`)}; lang=de`;
    for (const path of ['/svcfoo/echo', '/svc-internal/echo', '/apifoo']) {
      const res = await fetch(`${sg.url}${path}`, { headers: { 'x-csrf': '1', cookie } });
      await res.arrayBuffer();
      assert.equal(res.status, 404, `${path}: the dev server's own 404`);
    }
    assert.equal(up2.requests.length, n2, 'the /svc upstream saw none of them');
    const toDev = dev.requests.slice(nd);
    assert.deepEqual(toDev.map((r) => r.url), ['/svcfoo/echo', '/svc-internal/echo', '/apifoo'], 'they went to the frontend');
    for (const r of toDev) {
      assert.equal(r.headers.authorization, undefined, `${r.url}: no token`);
      // The dev server is the site itself: it gets the page's cookies, never sealgate's.
      assert.ok(cookieNames(r.headers.cookie).includes('lang'), `${r.url}: ${r.headers.cookie}`);
      assert.deepEqual(cookieNames(r.headers.cookie).filter(isSealgateCookie), [], `${r.url}: ${r.headers.cookie}`);
    }
    // The prefix itself and paths below it are the route's; /api matches the /api/ route.
    for (const [path, upstream] of [['/svc', up2], ['/svc/echo', up2], ['/api', up]]) {
      const before = upstream.requests.length;
      const res = await fetch(`${sg.url}${path}`, { headers: { 'x-csrf': '1', cookie } });
      await res.arrayBuffer();
      assert.equal(upstream.requests.length, before + 1, `${path} proxied`);
      assert.equal(upstream.requests.at(-1).url, path);
      assert.equal(upstream.requests.at(-1).headers.authorization, `Bearer ${token}`);
    }
    // A dot segment would leave the route at the upstream (/api/../admin is /admin there).
    const n = up.requests.length;
    // (node:http with a raw path: a URL parser would resolve the dot segment itself.)
    const dots = await new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: sg.port, path: '/api/%2e%2e/admin', headers: { 'x-csrf': '1', cookie }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on('error', reject);
    });
    assert.equal(dots, 400);
    assert.equal(up.requests.length, n, 'refused before the upstream');
  });

  test('without X-CSRF: 403 and nothing reaches the upstream', async () => {
    const n = up.requests.length;
    for (const [method, headers] of [['GET', {}], ['POST', { 'content-type': 'text/plain' }], ['GET', { 'x-csrf': '0' }]]) {
      const res = await jar.fetch(`${sg.url}/api/echo`, { method, headers, body: method === 'POST' ? 'x' : undefined });
      assert.equal(res.status, 403, `${method} ${JSON.stringify(headers)}`);
      assert.deepEqual(await res.json(), { error: 'csrf' });
    }
    assert.equal(up.requests.length, n, 'the upstream saw nothing');
  });

  test('a state-changing call from another origin is refused even with X-CSRF (Origin, Sec-Fetch-Site)', async () => {
    const n = up.requests.length;
    const post = (headers) => jar.fetch(`${sg.url}/api/echo`, {
      method: 'POST', headers: { 'x-csrf': '1', 'content-type': 'text/plain', ...headers }, body: 'x',
    });
    for (const headers of [{ origin: 'http://evil.example' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }]) {
      const res = await post(headers);
      assert.equal(res.status, 403, JSON.stringify(headers));
      assert.deepEqual(await res.json(), { error: 'csrf' });
    }
    assert.equal(up.requests.length, n, 'the upstream saw nothing');
    // The SPA's own origin, and browsers' same-origin marker, pass; safe methods are not checked.
    assert.equal((await post({ origin: new URL(sg.url).origin, 'sec-fetch-site': 'same-origin' })).status, 200);
    const get = await jar.fetch(`${sg.url}/api/echo`, { headers: { 'x-csrf': '1', 'sec-fetch-site': 'cross-site' } });
    assert.equal(get.status, 200);
    // POST /bff/logout likewise: refused from another origin, the session untouched.
    const logout = await jar.fetch(`${sg.url}/bff/logout`, { method: 'POST', headers: { 'x-csrf': '1', origin: 'http://evil.example' } });
    assert.equal(logout.status, 403);
    assert.equal((await bffFetch(jar, `${sg.url}/bff/user`)).status, 200);
  });

  test('without a valid session: 401 login_required and nothing reaches the upstream', async () => {
    const n = up.requests.length;
    const none = await fetch(`${sg.url}/api/echo`, { headers: { 'x-csrf': '1', cookie: 'theme=dark' } });
    assert.equal(none.status, 401);
    assert.match(none.headers.get('content-type') ?? '', /application\/json/);
    assert.deepEqual(await none.json(), { error: 'login_required' });
    const forged = await fetch(`${sg.url}/api/echo`, {
      headers: { 'x-csrf': '1', cookie: 'sealgate.0=AAAAforgedAAAA', authorization: `Bearer ${token}` },
    });
    assert.equal(forged.status, 401, 'a forged cookie or a bare Authorization header opens nothing');
    assert.deepEqual(await forged.json(), { error: 'login_required' });
    assert.equal(up.requests.length, n, 'the upstream saw nothing');
  });

  test('token = "optional": forwarded without Authorization when there is no session, with it when there is', async () => {
    const n = up.requests.length;
    const anon = await fetch(`${sg.url}/pub/api/echo?anon=1`, {
      headers: { 'x-csrf': '1', authorization: 'Bearer forged-by-the-page', cookie: 'theme=dark' },
    });
    assert.equal(anon.status, 200);
    assert.equal((await anon.json()).authorization.present, false);
    assert.equal(up.requests.length, n + 1);
    assert.equal(up.requests.at(-1).url, '/api/echo?anon=1');
    assert.equal(up.requests.at(-1).headers.authorization, undefined, 'no Authorization, not even the page\'s');
    assert.equal(up.requests.at(-1).headers.cookie, undefined, 'the route names no cookie');

    const authed = await bffFetch(jar, `${sg.url}/pub/api/echo?anon=0`);
    assert.equal(authed.status, 200);
    await authed.arrayBuffer();
    assert.equal(up.requests.at(-1).headers.authorization, `Bearer ${token}`);
  });

  test('upstream down: 502 upstream_unavailable', async () => {
    const res = await bffFetch(jar, `${sg.url}/down/anything`);
    assert.equal(res.status, 502);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    assert.deepEqual(await res.json(), { error: 'upstream_unavailable' });
  });

  test('slow upstream: 504 upstream_timeout after the route timeout (1s)', async () => {
    const n = up.requests.length;
    const t0 = performance.now();
    const res = await bffFetch(jar, `${sg.url}/slow/api/slow?ms=3000`, { signal: AbortSignal.timeout(5000) });
    const body = await res.json();
    const elapsed = performance.now() - t0;
    log(`504 after ${elapsed.toFixed(0)} ms`);
    assert.equal(res.status, 504);
    assert.deepEqual(body, { error: 'upstream_timeout' });
    assert.equal(up.requests.length, n + 1, 'the request did reach the upstream');
    assert.equal(up.requests.at(-1).url, '/api/slow?ms=3000');
    assert.ok(elapsed >= 900, `waited for the timeout (${elapsed} ms)`);
    assert.ok(elapsed < 1500, `answered within ~1.5 s (${elapsed} ms)`);

    // A fast enough answer on the same route is served.
    const ok = await bffFetch(jar, `${sg.url}/slow/api/slow?ms=100`);
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { slept: 100 });
  });

  test('the route timeout bounds the answer head only: a body streaming longer is not cut', async () => {
    let bytes = 0;
    const t0 = performance.now();
    const res = await rawRequest(`${sg.url}/slow/api/download?mb=8`, {
      headers: { 'x-csrf': '1', cookie: jar.header(`${sg.url}/slow/api/download`) },
      onResponse: async (r) => {
        let paused = false;
        for await (const c of r) {
          bytes += c.length;
          if (!paused && bytes >= MB) {
            paused = true;
            await sleep(1500); // longer than the route's 1 s timeout
          }
        }
      },
    });
    assert.equal(res.status, 200);
    assert.equal(bytes, 8 * MB);
    assert.ok(performance.now() - t0 >= 1500);
  });

  test('an upstream cannot set or clear sealgate\'s cookies; its own cookies pass', async () => {
    const res = await bffFetch(jar, `${sg.url}/api/set-cookie`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.headers.getSetCookie(), ['theme=dark; Path=/']);
    assert.equal((await bffFetch(jar, `${sg.url}/bff/user`)).status, 200, 'the session is untouched');
  });

  test('the upstream\'s own 401 is passed through and does not end the session', async () => {
    const res = await bffFetch(jar, `${sg.url}/api/status/401`);
    const { text, json } = await readJson(res);
    assert.equal(res.status, 401);
    assert.deepEqual(json, { error: 'upstream_401' }, 'the upstream\'s body, not sealgate\'s');
    assert.equal(res.headers.get('www-authenticate'), 'Bearer error="invalid_token"');
    assert.equal(res.headers.get('x-upstream'), 'status');
    assert.deepEqual(res.headers.getSetCookie().filter((c) => /max-age=0/i.test(c)), [], 'no cookie cleared');
    assert.equal(findToken(res.headers, text, issuedTokens(op)), undefined);
    for (const code of [403, 500, 503]) {
      const r = await bffFetch(jar, `${sg.url}/api/status/${code}`);
      assert.equal(r.status, code);
      assert.deepEqual(await r.json(), { error: `upstream_${code}` });
    }
    const user = await bffFetch(jar, `${sg.url}/bff/user`);
    assert.equal(user.status, 200, 'the session still works');
    await user.arrayBuffer();
    const again = await bffFetch(jar, `${sg.url}/api/echo`);
    assert.equal(again.status, 200);
    await again.arrayBuffer();
  });

  test('a 100 MB upload streams through with bounded memory', { timeout: 30_000 }, async () => {
    const pid = sg.proc.pid;
    const base = rssBytes(pid);
    const sampler = sampleRss(pid, 10);
    const sent = { bytes: 0 };
    let sentWhenResumed;
    const resumeWatch = setInterval(() => {
      // The upstream stops reading at 5 MiB for 1.5 s; note how far the browser got by then.
      if (sentWhenResumed === undefined && up.progress.uploadRead > 6 * MB) sentWhenResumed = sent.bytes;
    }, 5);
    let sha;
    const t0 = performance.now();
    let res;
    try {
      res = await rawRequest(`${sg.url}/api/upload?pauseAfterMb=5&pauseMs=1500`, {
        method: 'POST',
        headers: { 'x-csrf': '1', cookie: jar.header(`${sg.url}/api/upload`), 'content-type': 'application/octet-stream' },
        body: async (req) => { sha = await writeStream(req, 100 * MB, 64 * 1024, sent); },
      });
    } finally {
      clearInterval(resumeWatch);
    }
    const secs = (performance.now() - t0) / 1000;
    const { peak, samples } = sampler.stop();
    log(`upload 100 MB in ${secs.toFixed(2)} s: sealgate RSS before ${(base / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB (+${((peak - base) / MB).toFixed(1)} MB, ${samples} samples); browser had sent ${(sentWhenResumed / MB).toFixed(1)} MB when the upstream resumed reading at 5 MB`);
    assert.equal(res.status, 200, res.body);
    const body = JSON.parse(res.body);
    assert.equal(body.bytes, 100 * MB);
    assert.equal(body.sha256, sha, 'the bytes arrived intact and in order');
    assert.ok(peak - base < 64 * MB, `sealgate's RSS grew by ${((peak - base) / MB).toFixed(1)} MB (limit 64 MB)`);
    assert.ok(sentWhenResumed !== undefined && sentWhenResumed < 100 * MB,
      'backpressure: while the upstream did not read, sealgate did not swallow the whole body');
  });

  test('a 100 MB download streams through with bounded memory', { timeout: 30_000 }, async () => {
    const pid = sg.proc.pid;
    const expected = downloadSha256(100);
    const base = rssBytes(pid);
    const sampler = sampleRss(pid, 10);
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    let writtenAtPause;
    let writtenAfterPause;
    const t0 = performance.now();
    const res = await rawRequest(`${sg.url}/api/download?mb=100`, {
      headers: { 'x-csrf': '1', cookie: jar.header(`${sg.url}/api/download`) },
      onResponse: async (r) => {
        let paused = false;
        for await (const c of r) {
          hash.update(c);
          bytes += c.length;
          if (!paused && bytes >= 5 * MB) {
            // A slow browser: stop reading for 1.5 s. The upstream must be held back.
            paused = true;
            writtenAtPause = up.progress.downloadWritten;
            await sleep(1500);
            writtenAfterPause = up.progress.downloadWritten;
          }
        }
      },
    });
    const secs = (performance.now() - t0) / 1000;
    const { peak, samples } = sampler.stop();
    log(`download 100 MB in ${secs.toFixed(2)} s: sealgate RSS before ${(base / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB (+${((peak - base) / MB).toFixed(1)} MB, ${samples} samples); upstream had written ${(writtenAtPause / MB).toFixed(1)} MB when the browser paused at 5 MB, ${(writtenAfterPause / MB).toFixed(1)} MB after 1.5 s`);
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(bytes, 100 * MB);
    assert.equal(hash.digest('hex'), expected, 'the bytes arrived intact and in order');
    assert.ok(peak - base < 64 * MB, `sealgate's RSS grew by ${((peak - base) / MB).toFixed(1)} MB (limit 64 MB)`);
    assert.ok(writtenAfterPause < 100 * MB, 'backpressure: the upstream was held back while the browser did not read');
  });

  test('a browser that goes away mid-transfer: the upstream stream is released, sealgate serves on', { timeout: 20_000 }, async () => {
    const ac = new AbortController();
    let got = 0;
    const res = await bffFetch(jar, `${sg.url}/api/download?mb=100`, { signal: ac.signal });
    assert.equal(res.status, 200);
    await assert.rejects((async () => {
      for await (const c of res.body) {
        got += c.length;
        if (got >= 3 * MB) ac.abort();
      }
    })());
    await sleep(500);
    const written = up.progress.downloadWritten;
    await sleep(500);
    assert.equal(up.progress.downloadWritten, written, 'the upstream stopped sending: its connection was closed');
    assert.ok(written < 100 * MB, `the upstream wrote ${(written / MB).toFixed(1)} MB, not everything`);

    // An upload cut half-way.
    await assert.rejects(rawRequest(`${sg.url}/api/upload`, {
      method: 'POST',
      headers: { 'x-csrf': '1', cookie: jar.header(`${sg.url}/api/upload`), 'content-length': String(50 * MB) },
      body: async (req) => {
        req.write(Buffer.alloc(MB));
        await sleep(200);
        req.destroy(new Error('the browser tab closed'));
      },
    }));
    const health = await fetch(`${sg.url}/healthz`);
    assert.equal(health.status, 200);
    const echo = await bffFetch(jar, `${sg.url}/api/echo`);
    assert.equal(echo.status, 200);
    await echo.arrayBuffer();
    assert.equal(sg.proc.exitCode, null, 'sealgate is still running');
  });

  test('server-sent events arrive one by one, not buffered to the end', async () => {
    const t0 = performance.now();
    const res = await bffFetch(jar, `${sg.url}/api/sse`, { signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const arrivals = [];
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = JSON.parse(/^data: (.*)$/m.exec(event)[1]);
        arrivals.push({ n: data.n, at: performance.now() - t0, latency: Date.now() - data.sent });
      }
    }
    log(`SSE arrivals (ms since request): ${arrivals.map((a) => a.at.toFixed(0)).join(', ')}; `
      + `latency after the upstream wrote each (ms): ${arrivals.map((a) => a.latency).join(', ')}`);
    assert.deepEqual(arrivals.map((a) => a.n), [0, 1, 2, 3, 4]);
    // Sent 200 ms apart. A proxy that buffers the stream delivers them together at the end.
    // The upstream shares this process's event loop, so one gap may shrink when a stall
    // (e.g. a GC after the 100 MB transfers) delays an event; demand 3 of the 4 gaps.
    const gaps = arrivals.slice(1).map((a, k) => a.at - arrivals[k].at);
    assert.ok(gaps.filter((g) => g >= 150).length >= 3, `gaps between arrivals: ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`);
    assert.ok(arrivals[4].at - arrivals[0].at >= 600, 'the events were spread over the stream\'s life');
    assert.ok(arrivals[0].at < 400, `the first event arrived at once (${arrivals[0].at.toFixed(0)} ms), not at the end`);
  });

  test('WebSocket: a same-origin handshake with the session round-trips; a cross-site one is refused', async () => {
    const wsUrl = `${sg.url}/api/ws`;
    const n = up.requests.length;
    // plant=1: the upstream's 101 tries to set sealgate.0 and carries hop-by-hop headers.
    const ws = await wsConnect(`${wsUrl}?plant=1`, { headers: { Origin: sg.url, Cookie: `${jar.header(wsUrl)}; theme=dark` } });
    try {
      assert.equal(ws.status, 101, `handshake answered ${ws.status}: ${ws.body}`);
      assert.equal(ws.accepted, true, 'Sec-WebSocket-Accept matches the key');
      assert.deepEqual(ws.setCookie, ['theme=dark; Path=/'], 'the 101 cannot set sealgate\'s cookies');
      assert.equal(ws.headers['keep-alive'], undefined);
      assert.equal(ws.headers['x-hop'], undefined, 'a header named in Connection is hop-by-hop');
      assert.match(ws.headers.connection, /^upgrade$/i);
      assert.match(ws.headers.upgrade, /^websocket$/i);
      ws.send('hello through sealgate');
      const echo = await ws.receive();
      assert.equal(echo.opcode, 1);
      assert.equal(echo.text, 'hello through sealgate');
      ws.send('x'.repeat(70_000)); // a 64-bit length frame
      assert.equal((await ws.receive()).text.length, 70_000);
    } finally {
      ws.close();
    }
    const handshake = up.requests.slice(n).find((r) => r.upgrade);
    assert.ok(handshake, 'the upstream saw the handshake');
    assert.equal(handshake.headers.authorization, `Bearer ${token}`);
    assert.equal(handshake.headers.cookie, undefined, 'no Cookie header upstream by default');
    assert.equal(handshake.headers.origin, sg.url);

    const m = up.requests.length;
    for (const origin of ['http://evil.example', undefined, `http://localhost:${sg.port}`]) {
      const evil = await wsConnect(wsUrl, { headers: { Origin: origin, Cookie: jar.header(wsUrl) } });
      evil.close();
      assert.equal(evil.status, 403, `Origin ${origin}: ${evil.status}`);
      assert.equal(JSON.parse(evil.body).error, 'csrf');
    }
    const anon = await wsConnect(wsUrl, { headers: { Origin: sg.url } });
    anon.close();
    assert.equal(anon.status, 401, 'no session, no tunnel');
    assert.equal(up.requests.length, m, 'refused handshakes never reach the upstream');
  });

  test('the dev server\'s WebSocket (hot reload) opens from the SPA\'s origin only; sealgate\'s cookies stay home', async () => {
    const wsUrl = `${sg.url}/ws`;
    const n = dev.requests.length;
    for (const origin of ['http://evil.example', undefined]) {
      const evil = await wsConnect(wsUrl, { headers: { Origin: origin, Cookie: jar.header(wsUrl) } });
      evil.close();
      assert.equal(evil.status, 403, `Origin ${origin}: ${evil.status}`);
    }
    assert.equal(dev.requests.length, n, 'refused handshakes never reach the dev server');
    const ws = await wsConnect(`${wsUrl}?plant=1`, { headers: { Origin: sg.url, Cookie: `${jar.header(wsUrl)}; lang=de` } });
    try {
      assert.equal(ws.status, 101, `handshake answered ${ws.status}: ${ws.body}`);
      assert.deepEqual(ws.setCookie, ['theme=dark; Path=/'], 'the 101 cannot set sealgate\'s cookies');
      ws.send('hmr');
      assert.equal((await ws.receive()).text, 'hmr');
    } finally {
      ws.close();
    }
    const handshake = dev.requests.slice(n).find((r) => r.upgrade);
    assert.ok(cookieNames(handshake.headers.cookie).includes('lang'), handshake.headers.cookie);
    assert.deepEqual(cookieNames(handshake.headers.cookie).filter(isSealgateCookie), [], handshake.headers.cookie);
    assert.equal(handshake.headers.authorization, undefined);
  });

  test('/metrics counts proxied requests by route and upstream errors by kind', async () => {
    const text = await (await fetch(`${sg.url}/metrics`)).text();
    assert.ok(metric(text, 'sealgate_proxied_requests_total', { route: '/down/', code: '5xx' }) >= 1);
    assert.ok(metric(text, 'sealgate_proxied_requests_total', { route: '/slow/', code: '5xx' }) >= 1);
    assert.ok(metric(text, 'sealgate_proxied_requests_total', { route: '/api/', code: '2xx' }) >= 5);
    assert.ok(metric(text, 'sealgate_proxied_requests_total', { route: '/api/b/', code: '2xx' }) >= 1);
    assert.ok(metric(text, 'sealgate_upstream_errors_total', { kind: 'unavailable' }) >= 1);
    assert.ok(metric(text, 'sealgate_upstream_errors_total', { kind: 'timeout' }) >= 1);
    assert.equal(metric(text, 'sealgate_refreshes_total', { outcome: 'ok' }), 0, 'no refresh with 300 s tokens');
    assert.equal(findToken({}, sg.logs(), issuedTokens(op)), undefined, 'no token in sealgate\'s logs');
  });
});

// ---------------------------------------------------------------------------------------------

const TTL = 4; // seconds: access tokens of the refresh stack
const DUE_MS = (TTL - 1) * 1000 + 150; // refresh_skew 1s: due at most TTL-1 s after issuance

describe('proxy: access token refresh', { skip }, () => {
  let stack;
  let sg;
  let op;
  let up;
  let bobJar; // bob's jar after the first refresh
  let refreshedAt; // when that refresh happened (Date.now())

  before(async () => {
    up = await startUpstream();
    stack = await startStack({
      accessTokenTTL: TTL,
      config: { session: { refresh_skew: '1s' }, routes: [{ prefix: '/api/', upstream: up.url }] },
    });
    ({ sg, op } = stack);
  });

  after(async () => {
    await stack?.stop();
    await up?.close();
  });

  const refreshMetrics = async () => {
    const text = await (await fetch(`${sg.url}/metrics`)).text();
    return Object.fromEntries(['ok', 'shared', 'fatal', 'transient']
      .map((o) => [o, metric(text, 'sealgate_refreshes_total', { outcome: o })]));
  };

  test('50 concurrent calls after expiry share one refresh grant; the old cookie works within the grace window', { timeout: 20_000 }, async () => {
    const jar = await loginAs(sg, 'bob');
    const loggedInAt = Date.now();
    const oldToken = op.stats.issuedTokens.at(-1).access_token;
    const url = `${sg.url}/api/echo`;

    const fresh = await bffFetch(jar, url);
    assert.equal(fresh.status, 200);
    await fresh.arrayBuffer();
    assert.equal(up.requests.at(-1).headers.authorization, `Bearer ${oldToken}`);
    assert.equal(op.stats.refreshGrants, 0, 'no refresh while the token is fresh');

    await sleep(Math.max(0, loggedInAt + DUE_MS - Date.now()));
    const oldCookie = jar.header(url);
    const grants = op.stats.refreshGrants;
    const n = up.requests.length;
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => fetch(`${url}?i=${i}`, {
      headers: { 'x-csrf': '1', cookie: oldCookie },
    }).then(async (res) => ({ res, text: await res.text() }))));

    refreshedAt = Date.now();
    const statuses = answers.map((a) => a.res.status);
    assert.deepEqual(statuses, Array(50).fill(200), sg.logs().slice(-3000));
    assert.equal(op.stats.refreshGrants - grants, 1, 'exactly one refresh grant at the provider');
    assert.equal(op.stats.refreshFailures, 0, op.stats.lastError);
    const newToken = op.stats.issuedTokens.at(-1).access_token;
    assert.notEqual(newToken, oldToken);
    const seen = up.requests.slice(n);
    assert.equal(seen.length, 50);
    assert.deepEqual(seen.filter((r) => r.headers.authorization !== `Bearer ${newToken}`).map((r) => r.url), [],
      'every one of the 50 carried the new token');
    for (const { res, text } of answers) {
      const cookies = res.headers.getSetCookie();
      assert.ok(cookies.some((c) => /^sealgate\.0=[^;]+/.test(c) && !/max-age=0\b/i.test(c)),
        `the answer re-seals the session: ${cookies.join(' | ')}`);
      assert.match(res.headers.get('cache-control') ?? '', /no-store/);
      assert.equal(findToken(res.headers, text, issuedTokens(op)), undefined);
    }

    // The new cookie (from any of the answers) opens the session without another grant.
    const newJar = new CookieJar();
    for (const c of jar.all(sg.url)) newJar.set(sg.url, c.name, c.value, c.path);
    newJar.store(url, answers[17].res.headers.getSetCookie());
    assert.notEqual(newJar.header(url), oldCookie);
    const user = await bffFetch(newJar, `${sg.url}/bff/user`);
    assert.equal(user.status, 200);
    assert.equal((await user.json()).sub, 'bob');
    const next = await bffFetch(newJar, url);
    assert.equal(next.status, 200);
    await next.arrayBuffer();
    assert.equal(up.requests.at(-1).headers.authorization, `Bearer ${newToken}`);
    assert.equal(op.stats.refreshGrants - grants, 1, 'the new cookie needs no refresh');

    // A tab that still sends the old cookie, within the grace window: served, no new grant
    // (replaying the rotated refresh token would make the provider revoke the whole grant).
    const late = await fetch(url, { headers: { 'x-csrf': '1', cookie: oldCookie } });
    assert.equal(late.status, 200, await late.text());
    assert.equal(up.requests.at(-1).headers.authorization, `Bearer ${newToken}`);
    assert.equal(op.stats.refreshGrants - grants, 1, 'no second grant for the old cookie');
    assert.equal(op.stats.refreshFailures, 0);
    const after = await bffFetch(newJar, url);
    assert.equal(after.status, 200, 'the grant was not revoked by a replay');
    await after.arrayBuffer();
    bobJar = newJar;
  });

  test('/metrics counts the refreshes: one ok, the rest shared', async () => {
    const m = await refreshMetrics();
    assert.equal(m.ok, 1, JSON.stringify(m));
    assert.ok(m.shared >= 49, `shared ${m.shared}`);
    assert.equal(m.shared, 50, '49 concurrent followers + 1 late request with the old cookie');
    assert.equal(m.fatal, 0);
    assert.equal(m.transient, 0);
    assert.equal(findToken({}, sg.logs(), issuedTokens(op)), undefined, 'no token in sealgate\'s logs');
  });

  test('the rotated refresh token was kept: at the next expiry a new grant succeeds', { timeout: 20_000 }, async () => {
    assert.ok(bobJar, 'needs the first refresh test');
    await sleep(Math.max(0, refreshedAt + DUE_MS - Date.now()));
    const grants = op.stats.refreshGrants;
    const previous = op.stats.issuedTokens.at(-1).access_token;
    const res = await bffFetch(bobJar, `${sg.url}/api/echo`);
    assert.equal(res.status, 200, await res.text());
    assert.equal(op.stats.refreshGrants - grants, 1, 'one new grant, with the rotated refresh token');
    assert.equal(op.stats.refreshFailures, 0, op.stats.lastError);
    const third = op.stats.issuedTokens.at(-1).access_token;
    assert.notEqual(third, previous);
    assert.equal(up.requests.at(-1).headers.authorization, `Bearer ${third}`);
    const m = await refreshMetrics();
    assert.equal(m.ok, 2, JSON.stringify(m));
  });

  test('a refresh token revoked at the provider: 401 login_required and the session cookies cleared', { timeout: 20_000 }, async () => {
    const jar = await loginAs(sg, 'carol');
    const loggedInAt = Date.now();
    const revoked = await op.revokeRefreshTokens('carol');
    assert.ok(revoked >= 1, 'the provider held a refresh token for carol');
    await sleep(Math.max(0, loggedInAt + DUE_MS - Date.now()));

    const url = `${sg.url}/api/echo`;
    const carried = cookieNames(jar.header(url)).filter(isSealgateCookie);
    assert.ok(carried.length >= 1);
    const oldCookie = jar.header(url);
    const failures = op.stats.refreshFailures;
    const grants = op.stats.refreshGrants;
    const n = up.requests.length;
    const res = await bffFetch(jar, url);
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error: 'login_required' });
    assert.equal(op.stats.refreshFailures - failures, 1, 'sealgate tried the grant once and the provider refused it');
    assert.equal(op.stats.refreshGrants, grants);
    assert.equal(up.requests.length, n, 'the upstream saw nothing');
    const cleared = res.headers.getSetCookie().filter((c) => /max-age=0\b/i.test(c)).map((c) => c.split('=')[0]);
    for (const name of carried) assert.ok(cleared.includes(name), `${name} cleared: ${res.headers.getSetCookie().join(' | ')}`);
    assert.deepEqual(cookieNames(jar.header(url)).filter(isSealgateCookie), [], 'the jar holds no session any more');

    const user = await bffFetch(jar, `${sg.url}/bff/user`);
    assert.equal(user.status, 401);
    assert.deepEqual(await user.json(), { error: 'login_required' });

    // The dead refresh token is not replayed by a request that still carries it.
    const again = await fetch(url, { headers: { 'x-csrf': '1', cookie: oldCookie } });
    assert.equal(again.status, 401);
    await again.arrayBuffer();
    assert.equal(op.stats.refreshFailures - failures, 1, 'no second grant attempt within the window');
    assert.ok((await refreshMetrics()).fatal >= 1);
  });

  test('provider down at refresh time: 503 provider_unavailable and the session kept', { timeout: 20_000 }, async () => {
    const jar = await loginAs(sg, 'dave');
    const loggedInAt = Date.now();
    const url = `${sg.url}/api/echo`;
    const cookie = jar.header(url);
    await stack.closeOp();
    // Past expiry: inside refresh_skew the current token would still be used (outage.test.mjs).
    await sleep(Math.max(0, loggedInAt + TTL * 1000 + 300 - Date.now()));

    const n = up.requests.length;
    for (let attempt = 0; attempt < 2; attempt++) {
      const res = await fetch(url, { headers: { 'x-csrf': '1', cookie }, signal: AbortSignal.timeout(15_000) });
      const { text, json } = await readJson(res);
      assert.equal(res.status, 503, text);
      assert.deepEqual(json, { error: 'provider_unavailable' });
      assert.deepEqual(res.headers.getSetCookie().filter((c) => /max-age=0\b/i.test(c)), [], 'no cookie cleared');
    }
    assert.equal(up.requests.length, n, 'the upstream saw nothing');
    const m = await refreshMetrics();
    assert.ok(m.transient >= 2, `each call counts its transient outcome: ${JSON.stringify(m)}`);

    const user = await bffFetch(jar, `${sg.url}/bff/user`);
    assert.equal(user.status, 200, 'the same cookie still opens the session');
    assert.equal((await user.json()).sub, 'dave');
  });
});

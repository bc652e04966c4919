// sealgate in a real browser: Debian's Chromium driven by playwright-core, the demo SPA
// (demo/web) served by sealgate itself, the real provider's login, consent and logout pages.
//
// public_url is http://localhost:PORT: Chromium treats localhost as a secure context, so
// [cookies] secure = true works over plain http there and the __Host-Http- prefix is exercised by
// a real browser. The provider stays on http://127.0.0.1:PORT, another site: the return to
// the callback is a cross-site navigation, as in production.
//
// Needs /usr/bin/chromium (apt-get install chromium) or CHROMIUM=/path; skipped without it.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as http from 'node:http';

import { freePort } from './sealgate.mjs';
import { findLeaks, startStack, tokenNeedles } from './stack.mjs';
import { startUpstream } from './upstream.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`;
const SPA = new URL('../../demo/web', import.meta.url).pathname;
const SEALGATE_COOKIE = /^__(Host-Http|Secure)-sealgate(-user|-tx-[A-Za-z0-9_-]{8})?\.\d+$/;
// Claims big enough that the profile cookie (claims + the ID token that repeats them) needs
// three or more 4 KB chunks, yet fits the default cap of four.
const GROUPS = Array.from({ length: 64 }, (_, i) => `cn=group-${String(i).padStart(3, '0')},ou=teams,dc=example,dc=com`);

describe('sealgate in Chromium with the demo SPA', { skip }, () => {
  let chromium;
  let browser;
  let stack;
  let op;
  let lax; // [cookies] secure = true, same_site = "lax" (the default)
  let strict; // same_site = "strict"
  let upstream; // the API behind /api/, for the SPA's "Call API" button

  before(async () => {
    ({ chromium } = await import('playwright-core'));
    upstream = await startUpstream();
    const frontend = { static_dir: SPA };
    const routes = [{ prefix: '/api/', upstream: upstream.url }];
    [browser, stack] = await Promise.all([
      chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
          '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        timeout: 30_000,
      }),
      startStack({
        op: { accounts: { alice: {}, bertha: { groups: GROUPS } }, extraProfileClaims: ['groups'] },
        sealgates: [
          { host: 'localhost', config: { cookies: { secure: true }, frontend, routes } },
          { host: 'localhost', config: { cookies: { secure: true, same_site: 'strict' }, frontend } },
        ],
      }),
    ]);
    ({ op } = stack);
    [lax, strict] = stack.sgs;
  });
  after(async () => {
    await browser?.close();
    await stack?.stop();
    await upstream?.close();
  });

  /** A fresh browser context and page; records the Cookie header of every document request. */
  async function newPage() {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    const documents = [];
    page.on('request', (req) => {
      if (req.resourceType() === 'document') documents.push(req);
    });
    return { context, page, documents };
  }

  const statusText = async (page) => {
    await page.waitForFunction(() => !document.getElementById('status').textContent.startsWith('Checking'));
    return page.textContent('#status');
  };

  /** From the SPA: #login, the provider's login form and consent page, back on the SPA. */
  async function loginInPage(page, sg, username) {
    await page.goto(`${sg.publicUrl}/`);
    assert.equal(await statusText(page), 'Not logged in');
    assert.ok(await page.isVisible('#login'));
    assert.ok(!(await page.isVisible('#logout')));
    await page.click('#login');
    await page.waitForURL((u) => u.href.startsWith(`${op.issuer}/interaction/`));
    await page.fill('input[name=login]', username);
    await page.fill('input[name=password]', 'any password');
    await page.click('button[type=submit]');
    // The consent page (first login of this account in this browser), then the callback.
    await page.locator('input[name=prompt][value=consent], #status').first().waitFor({ state: 'attached' });
    if (page.url().startsWith(op.issuer)) await page.click('button[autofocus]');
    await page.waitForURL(`${sg.publicUrl}/`);
    await page.waitForFunction(() => /^(Logged in|Not logged in)/.test(document.getElementById('status').textContent));
  }

  // Every sealgate cookie the browser holds for the host of `sg` (all paths; cookies do not
  // depend on the port, and each test has its own context).
  // The Set-Cookie of the login transaction, as Chromium received it from /bff/login.
  async function txSetCookie(documents, sg) {
    const req = documents.find((r) => r.url().startsWith(`${sg.publicUrl}/bff/login`));
    const setCookie = (await (await req.response()).allHeaders())['set-cookie'] ?? '';
    return setCookie.split('\n').find((c) => c.includes('sealgate-tx-'));
  }
  const assertTxCookie = (raw) => {
    assert.match(raw, /^__Host-Http-sealgate-tx-[A-Za-z0-9_-]{8}\.0=/);
    for (const attr of ['Path=/', 'Secure', 'HttpOnly', 'SameSite=Lax', 'Max-Age=600']) assert.ok(raw.split(/;\s*/).includes(attr), `${attr} in ${raw}`);
  };

  const sealgateCookies = async (context, sg) => (await context.cookies())
    .filter((c) => c.domain === new URL(sg.publicUrl).hostname && SEALGATE_COOKIE.test(c.name));
  // Whether the given document request (navigation) carried a cookie of that name.
  const carried = async (req, name) => ((await req.allHeaders()).cookie ?? '').split(/;\s*/).some((p) => p.startsWith(`${name}=`));

  test('log in from the SPA through the provider\'s real forms: logged in, and no script sees a token or a sealgate cookie', async () => {
    const { context, page, documents } = await newPage();
    try {
      await loginInPage(page, lax, 'alice');
      assert.equal(await page.textContent('#status'), 'Logged in as Alice Example');
      assert.ok(await page.isVisible('#logout'));
      const shown = JSON.parse(await page.textContent('#user'));
      assert.equal(shown.sub, 'alice');
      assert.equal(shown.claims.email, 'alice@example.com');
      assert.match(shown.session.logout_url, /^\/bff\/logout\?sid=/);

      // HttpOnly: nothing of sealgate's in document.cookie (the SPA prints it, and we ask too).
      assert.equal(await page.textContent('#doc-cookie'), '""');
      assert.ok(!(await page.evaluate(() => document.cookie)).includes('sealgate'));

      // The cookies as Chromium stored them: __Host-Http- (Path=/) and __Secure- (Path=/bff/),
      // HttpOnly, Secure, SameSite=Lax; the transaction cookie is gone.
      const cookies = await sealgateCookies(context, lax);
      assert.deepEqual(cookies.map((c) => `${c.name} ${c.path}`).sort(), ['__Host-Http-sealgate.0 /', '__Secure-sealgate-user.0 /bff/']);
      for (const c of cookies) {
        assert.ok(c.httpOnly && c.secure, `${c.name} HttpOnly and Secure`);
        assert.equal(c.sameSite, 'Lax', c.name);
        assert.equal(c.domain, 'localhost', `${c.name}: host-only`);
      }

      assertTxCookie(await txSetCookie(documents, lax));

      // Nothing the page holds is a token.
      const html = await page.evaluate(() => document.documentElement.outerHTML);
      const needles = tokenNeedles(op.stats.issuedTokens);
      assert.ok(needles.length > 0);
      assert.deepEqual(findLeaks([{ method: 'DOM', url: page.url(), status: 200, headers: [], body: html }], needles), []);

      // SameSite=Lax evidence: the navigation back to the SPA (a redirect in a chain that the
      // provider's cross-site page started) already carried the session cookie.
      const landing = documents.filter((r) => r.url() === `${lax.publicUrl}/`).at(-1);
      assert.ok(await carried(landing, '__Host-Http-sealgate.0'), 'Lax: sent on the top-level navigation back');
    } finally {
      await context.close();
    }
  });

  test('"Call API" from the SPA: the API gets the bearer token through sealgate, the page never does', async () => {
    const { context, page } = await newPage();
    try {
      await loginInPage(page, lax, 'alice');
      assert.ok(await page.isVisible('#call-api'));
      const before = upstream.requests.length;
      await page.click('#call-api');
      await page.waitForFunction(() => /^\d{3}\n/.test(document.getElementById('api').textContent));
      const [status, ...body] = (await page.textContent('#api')).split('\n');
      assert.equal(status, '200');
      const echoed = JSON.parse(body.join('\n'));
      assert.equal(echoed.url, '/api/echo?from=spa');
      const seen = upstream.requests.slice(before).find((r) => r.url === '/api/echo?from=spa');
      assert.ok(seen, 'the upstream got the call');
      assert.match(seen.headers.authorization ?? '', /^Bearer \S+$/, 'with the access token');
      assert.ok(!(seen.headers.cookie ?? '').includes('sealgate'), 'without sealgate cookies');
      const token = seen.headers.authorization.slice('Bearer '.length);
      assert.ok(!(await page.content()).includes(token), 'the page never holds the token');
    } finally {
      await context.close();
    }
  });

  test('a large profile (several KB of claims) is split over 3+ cookie chunks and /bff/user still works in the page', async () => {
    const { context, page } = await newPage();
    try {
      await loginInPage(page, lax, 'bertha');
      assert.equal(await page.textContent('#status'), 'Logged in as Bertha Example');
      const names = (await sealgateCookies(context, lax)).map((c) => c.name);
      for (const chunk of ['__Secure-sealgate-user.0', '__Secure-sealgate-user.1', '__Secure-sealgate-user.2']) {
        assert.ok(names.includes(chunk), `${chunk} among ${names.join(', ')}`);
      }
      const answer = await page.evaluate(async () => {
        const res = await fetch('/bff/user', { headers: { 'X-CSRF': '1' } });
        return { status: res.status, body: await res.json() };
      });
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body.claims.groups, GROUPS);
      assert.deepEqual(JSON.parse(await page.textContent('#user')).claims.groups, GROUPS);
      // The ID token was kept (it fits), so logout can still hint it.
      const logout = await page.evaluate(async (url) => (await fetch(url, { method: 'POST', headers: { 'X-CSRF': '1' } })).json(), '/bff/logout');
      assert.match(logout.redirect, /[?&]id_token_hint=ey/);
    } finally {
      await context.close();
    }
  });

  test('logout from the SPA: the provider\'s confirmation, back on the SPA logged out, cookies gone', async () => {
    const { context, page } = await newPage();
    try {
      await loginInPage(page, lax, 'alice');
      assert.match(await page.textContent('#status'), /^Logged in/);
      const stats = { revocations: op.stats.revocations, endSessions: op.stats.endSessions };
      await page.click('#logout');
      await page.waitForURL((u) => u.href.startsWith(`${op.issuer}/session/end`));
      await page.click('button[name=logout]'); // "Yes, sign me out"
      // Back on the SPA's root, with the state sealgate sent to the end-session endpoint.
      await page.waitForURL((u) => `${u.origin}${u.pathname}` === `${lax.publicUrl}/` && u.searchParams.has('state'));
      assert.equal(await statusText(page), 'Not logged in');
      assert.ok(await page.isVisible('#login'));
      assert.deepEqual((await sealgateCookies(context, lax)).map((c) => c.name), []);
      assert.equal(op.stats.revocations, stats.revocations + 1, 'refresh token revoked');
      assert.equal(op.stats.endSessions, stats.endSessions + 1, 'provider session ended');
    } finally {
      await context.close();
    }
  });

  // SameSite=Strict, observed: the SPA DOES come back logged in. Why: (1) the login
  // transaction cookie is always Lax, so Chromium sends it on the cross-site top-level GET
  // from the provider to /bff/callback; (2) Chromium stores Strict cookies set by the answer to
  // a top-level navigation, even a cross-site one; (3) the document request that follows the
  // callback's redirect is still part of the cross-site chain, so the Strict session cookie
  // is NOT sent with it (a server-rendered page there would see no session on first load);
  // (4) the SPA's own fetch('/bff/user') is same-site, so the cookie is sent and it works.
  test('SameSite=Strict: the SPA still comes back logged in; the navigation back (and its reload) carry no session cookie', async () => {
    const { context, page, documents } = await newPage();
    try {
      await loginInPage(page, strict, 'alice');
      assert.equal(await page.textContent('#status'), 'Logged in as Alice Example');
      const cookies = await sealgateCookies(context, strict);
      assert.deepEqual(cookies.map((c) => `${c.name} ${c.sameSite}`).sort(), ['__Host-Http-sealgate.0 Strict', '__Secure-sealgate-user.0 Strict']);
      assertTxCookie(await txSetCookie(documents, strict)); // Lax even here: it must survive the cross-site return
      const landing = documents.filter((r) => r.url() === `${strict.publicUrl}/`).at(-1);
      assert.equal(await carried(landing, '__Host-Http-sealgate.0'), false, 'Strict: not sent on the cross-site redirect chain');
      // A reload keeps the cross-site initiator of the original navigation: still not sent.
      await page.reload();
      assert.equal(await statusText(page), 'Logged in as Alice Example');
      const reload = documents.filter((r) => r.url() === `${strict.publicUrl}/`).at(-1);
      assert.equal((await reload.allHeaders())['sec-fetch-site'], 'cross-site');
      assert.equal(await carried(reload, '__Host-Http-sealgate.0'), false, 'Strict: not sent on a reload of that page either');
      // A navigation that the SPA itself starts is same-site: now the document request carries it.
      await page.evaluate(() => location.assign('/?again'));
      await page.waitForURL(`${strict.publicUrl}/?again`);
      assert.equal(await statusText(page), 'Logged in as Alice Example');
      const own = documents.filter((r) => r.url() === `${strict.publicUrl}/?again`).at(-1);
      assert.ok(await carried(own, '__Host-Http-sealgate.0'), 'Strict: sent on a same-site navigation');
    } finally {
      await context.close();
    }
  });

  // Observed: this Chromium honours the __Http- / __Host-Http- prefixes: a page script cannot
  // set such a cookie (document.cookie silently ignores it), while a Set-Cookie from the
  // server (Secure, HttpOnly, Path=/) is kept. The control __Host- cookie from the same
  // script is kept, so the refusal is the prefix's doing.
  test('the __Host-Http- prefix: refused from page script, accepted from a Set-Cookie', async () => {
    const port = await freePort();
    const server = http.createServer((req, res) => {
      const headers = { 'content-type': 'text/html', 'cache-control': 'no-store' };
      if (req.url === '/set') headers['set-cookie'] = ['__Host-Http-server=1; Path=/; Secure; HttpOnly; SameSite=Lax'];
      res.writeHead(200, headers);
      res.end('<!doctype html><title>probe</title>');
    });
    await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
    const { context, page } = await newPage();
    try {
      const origin = `http://localhost:${port}`;
      await page.goto(`${origin}/set`);
      await page.evaluate(() => {
        document.cookie = '__Host-Http-script=1; Path=/; Secure';
        document.cookie = '__Http-script=1; Path=/; Secure';
        document.cookie = '__Host-Http-server=overwritten; Path=/; Secure';
        document.cookie = '__Host-script=1; Path=/; Secure'; // control
      });
      const jar = Object.fromEntries((await context.cookies(origin)).map((c) => [c.name, c.value]));
      assert.deepEqual(jar, { '__Host-Http-server': '1', '__Host-script': '1' });
      assert.equal(await page.evaluate(() => document.cookie), '__Host-script=1');
    } finally {
      await context.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

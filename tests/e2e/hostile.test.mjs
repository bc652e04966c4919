// sealgate against the HOSTILE provider (hostile.mjs): every scenario of SCENARIOS, one real
// sealgate per hostile server. A 'refuse' scenario must end in the expected error class with
// no session cookie and /bff/user 401 afterwards; an 'accept' scenario must log in.
//
// Two scenarios need time and get their own provider + sealgate, started at once and checked
// at the end, so that they overlap the rest instead of adding to it:
//   token_timeout: sealgate's outbound timeout is 10 s;
//   kid_rotated:   sealgate re-fetches the JWKS for an unknown kid at most every 10 s, and it
//                  fetched it at start-up.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { CookieJar, bffFetch, completeCallback, loginUntilCallback } from './browserless.mjs';
import { SCENARIOS, SCENARIO_NAMES, startHostile } from './hostile.mjs';
import { freePort, startSealgate } from './sealgate.mjs';
import {
  CLIENT_SECRET, assertNoSessionSet, jarCookies, metric, setCookies, waitUntil, within,
} from './stack.mjs';

// The answer of sealgate's callback for each scenario. 400: the login answer itself is wrong
// (a new login fixes it); 502: the provider's token answer is invalid; 503: unreachable.
const EXPECTED_STATUS = {
  ok: 302,
  kid_rotated: 302,
  iss_param_mismatch: 400,
  iss_param_missing: 400,
  wrong_state: 400,
  token_error: 400,
  token_timeout: 503,
  token_500: 502, // a 500 with a text body is an invalid token answer, not an outage
  huge_id_token: 302, // see the two huge_id_token tests below
};
const expectedStatus = (scenario) => EXPECTED_STATUS[scenario] ?? 502;
// Refused before the token endpoint is called: the code must never be spent.
const NO_TOKEN_REQUEST = new Set(['iss_param_mismatch', 'iss_param_missing', 'wrong_state']);
// Run on their own instances (see the top of the file).
const SLOW = new Set(['token_timeout', 'kid_rotated']);

/** A hostile provider and a sealgate that uses it. */
async function startHostileStack({ scenario = 'ok', discoveryIssuer, waitReady = true } = {}) {
  const port = await freePort();
  const h = await startHostile({
    clientId: 'bff', clientSecret: CLIENT_SECRET, redirectUri: `http://127.0.0.1:${port}/bff/callback`, scenario, discoveryIssuer,
  });
  let sg;
  try {
    sg = await startSealgate({ issuer: h.issuer, clientSecret: CLIENT_SECRET, port, waitReady });
  } catch (err) {
    await h.close();
    throw err;
  }
  return { h, sg, startedAt: Date.now(), stop: async () => { await sg.stop(); await h.close(); } };
}

/** One login attempt against the current scenario, up to and including the callback. */
async function attempt({ h, sg }) {
  const jar = new CookieJar();
  const half = await loginUntilCallback({ bffUrl: sg.url, jar });
  const tokenRequests = h.stats.tokenRequests;
  const t0 = Date.now();
  const { callbackResponse: res, finalLocation } = await within(20_000, completeCallback(half), 'the callback');
  const elapsed = Date.now() - t0;
  const body = await res.text();
  const user = await bffFetch(jar, `${sg.url}/bff/user`);
  return {
    jar, res, body, finalLocation, elapsed, half, user,
    userBody: await user.json(),
    tokenRequests: h.stats.tokenRequests - tokenRequests,
  };
}

function assertRefused(scenario, a, sg, status = expectedStatus(scenario)) {
  const logs = `\n--- sealgate logs (tail) ---\n${sg.logs().slice(-2000)}`;
  assert.equal(a.res.status, status, `${scenario}: callback answered ${a.res.status}${logs}`);
  assert.match(a.res.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(a.body, /Login (failed|unavailable)/);
  assert.equal(a.res.headers.get('location'), null, 'no redirect');
  assertNoSessionSet(a.res, sg.url, `in scenario ${scenario}`);
  assert.deepEqual([...jarCookies(a.jar, sg.url).session, ...jarCookies(a.jar, sg.url).profile], []);
  assert.equal(a.user.status, 401, `${scenario}: /bff/user afterwards`);
  assert.deepEqual(a.userBody, { error: 'login_required' });
  if (scenario !== 'wrong_state') {
    // The transaction is used up whatever happened (wrong_state names another transaction).
    assert.deepEqual(jarCookies(a.jar, sg.url).tx, [], `${scenario}: transaction cookie expired`);
  }
  if (NO_TOKEN_REQUEST.has(scenario)) assert.equal(a.tokenRequests, 0, `${scenario}: the code was sent to the token endpoint`);
}

function assertAccepted(scenario, a, sg) {
  assert.equal(a.res.status, 302, `${scenario}: callback answered ${a.res.status}: ${a.body}\n${sg.logs().slice(-2000)}`);
  assert.equal(a.finalLocation, `${sg.url}/`);
  assert.deepEqual(a.jar.rejected, [], 'no cookie a browser would refuse');
  assert.equal(a.user.status, 200);
  assert.equal(a.userBody.sub, 'hostile-user');
}

describe('sealgate against the hostile provider', () => {
  let main; // every scenario but the slow ones, one after the other
  let timeout; // token_timeout
  let rotation; // kid_rotated
  let timeoutAttempt; // started in before(), checked at the end

  before(async () => {
    [main, timeout, rotation] = await Promise.all([
      startHostileStack(),
      startHostileStack({ scenario: 'token_timeout' }),
      startHostileStack({ scenario: 'kid_rotated' }),
    ]);
    timeoutAttempt = attempt(timeout);
    timeoutAttempt.catch(() => {}); // reported by its test
  });
  after(async () => {
    await timeoutAttempt?.catch(() => {});
    await Promise.all([main, timeout, rotation].filter(Boolean).map((s) => s.stop()));
  });

  for (const scenario of SCENARIO_NAMES.filter((s) => !SLOW.has(s) && s !== 'huge_id_token')) {
    const { expect, what } = SCENARIOS[scenario];
    test(`${scenario}: ${expect === 'accept' ? 'accepted' : `refused with ${expectedStatus(scenario)}`} (${what})`, async () => {
      main.h.scenario = scenario;
      const a = await attempt(main);
      if (expect === 'accept') assertAccepted(scenario, a, main.sg);
      else assertRefused(scenario, a, main.sg);
    });
  }

  // huge_id_token is 'refuse' in SCENARIOS, whose text reads "must be refused or at least not
  // produce cookies beyond browser limits". sealgate takes the second branch by design, as
  // the login issue allows ("a session that keeps only what it needs"): the ID token is
  // validly signed, so the login succeeds, and the profile cookie sheds the ID token (logout
  // then names the client) and every claim but sub/sid. No cookie beyond browser limits.
  test('huge_id_token: a 20 KB ID token gives cookies within browser limits, the profile reduced to sub', async () => {
    main.h.scenario = 'huge_id_token';
    const a = await attempt(main);
    assertAccepted('huge_id_token', a, main.sg);
    for (const c of setCookies(a.res, main.sg.url)) {
      assert.equal(c.error, undefined, `${c.name}: ${c.error}`);
      assert.ok(Buffer.byteLength(c.raw) <= 4096, `${c.name} is ${Buffer.byteLength(c.raw)} bytes`);
    }
    const { profile, session } = jarCookies(a.jar, main.sg.url);
    assert.ok(profile.length <= 4 && session.length <= 4, 'at most max_chunks (4) chunks each');
    assert.equal(a.userBody.claims.groups, undefined, 'the 20 KB of claims are not kept');
    assert.deepEqual(Object.keys(a.userBody.claims).filter((k) => k !== 'sub' && k !== 'sid'), []);
    await main.sg.waitForLog(/profile still too large/, 2000);
  });

  test('discovery whose issuer differs from the configured one: never ready, /bff/login 503', async () => {
    const s = await startHostileStack({ discoveryIssuer: 'https://attacker.example', waitReady: false });
    try {
      // Retried with backoff (200 ms, 400 ms, ...): several refused documents, never ready.
      await waitUntil(() => s.h.stats.discoveryFetches >= 3, 5000, 'three discovery attempts');
      assert.equal((await fetch(`${s.sg.url}/readyz`)).status, 503);
      const t0 = Date.now();
      const res = await within(10_000, fetch(`${s.sg.url}/bff/login`, { redirect: 'manual' }), '/bff/login');
      assert.equal(res.status, 503);
      assert.ok(Date.now() - t0 < 6000, `answered in ${Date.now() - t0} ms`);
      assert.equal(res.headers.get('location'), null);
      assert.deepEqual(res.headers.getSetCookie(), []);
      assert.equal(s.h.stats.authorizations, 0);
      assert.equal((await fetch(`${s.sg.url}/readyz`)).status, 503);
      // Control: the same document with the right issuer makes it ready at the next retry.
      s.h.discoveryIssuer = undefined;
      await waitUntil(async () => (await fetch(`${s.sg.url}/readyz`)).status === 200, 10_000, 'ready once the issuer matches');
    } finally {
      await s.stop();
    }
  });

  test('kid_rotated: a key that appears in the JWKS after start-up is fetched and accepted', async () => {
    // The re-fetch is rate-limited to one per 10 s, counted from the start-up fetch.
    const wait = rotation.startedAt + 10_500 - Date.now();
    if (wait > 0) await sleep(wait);
    const fetches = rotation.h.stats.jwksFetches;
    const a = await attempt(rotation);
    assertAccepted('kid_rotated', a, rotation.sg);
    assert.equal(rotation.h.stats.jwksFetches, fetches + 1, 'exactly one JWKS re-fetch');
  });

  test('token_timeout: the token endpoint never answers: 503 after sealgate\'s 10 s timeout', async () => {
    const a = await timeoutAttempt;
    assertRefused('token_timeout', a, timeout.sg);
    assert.ok(a.elapsed >= 9000 && a.elapsed < 15_000, `answered after ${a.elapsed} ms`);
    assert.equal(a.tokenRequests, 1);
  });

  test('/metrics counted every refused login as failed', async () => {
    const refusedHere = SCENARIO_NAMES.filter((s) => !SLOW.has(s) && SCENARIOS[s].expect === 'refuse' && s !== 'huge_id_token').length;
    // (huge_id_token was accepted, twice: it counts as ok, not failed.)
    assert.equal(await metric(main.sg.url, 'sealgate_logins_total', { outcome: 'failed' }), refusedHere);
    assert.equal(await metric(timeout.sg.url, 'sealgate_logins_total', { outcome: 'failed' }), 1);
    assert.equal(await metric(rotation.sg.url, 'sealgate_logins_total', { outcome: 'ok' }), 1);
  });
});

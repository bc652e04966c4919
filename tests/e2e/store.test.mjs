// sealgate with the shared store (issue #13): three real sealgate processes called directly
// (round robin, no balancer), the real provider (op.mjs) delivering back-channel logouts to
// one of them, a real upstream, and a real redis-server (redis.mjs).
//
//  Standalone Redis with the append-only file:
//   1. A logout at the provider (RP-initiated, through its real confirmation form; and a
//      back-channel logout of one (sub, sid)) ends that session on all three within 2 s; the
//      same user's other session and other users stay signed in.
//   2. Forged and replayed logout tokens are refused with 400 and log nobody out.
//   3. 30 concurrent API calls of one expired session over three instances: one refresh grant.
//   4. `sealgate sessions revoke --sub` ends every session of that subject, on every instance.
//   5. Redis stopped mid-test: sessions keep working, /readyz 200, sealgate_store_up 0; a
//      back-channel logout meanwhile ends the session where it arrived, and everywhere once
//      Redis is back (same port, AOF); earlier revocations survive the Redis restart and the
//      restart of an instance. The append-only file holds no token and no sid.
//  A three-node Redis Cluster: scenarios 1 and 3.
//  Without [store]: the same 30 calls (informational), 501 and exit 2.
//
// Needs target/debug/sealgate (`cargo build`) and redis-server + redis-cli (`apt-get install -y
// redis-server`, or REDIS_SERVER / REDIS_CLI); skipped without them unless CI is set. Every
// process is bound to 127.0.0.1 and stopped by PID.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { SignJWT, generateKeyPair, importJWK } from 'jose';

import { completeEndSession, login } from './browserless.mjs';
import { sealgateCli } from './fleet-lib.mjs';
import { startProvider } from './op.mjs';
import { aofText, redisCliBin, redisServerBin, startCluster, startRedis } from './redis.mjs';
import { freePort, keygen, startSealgate } from './sealgate.mjs';
import { CLIENT_SECRET, SESSION_COOKIE, metric, setCookies, tokenNeedles, waitUntil } from './stack.mjs';
import { startUpstream } from './upstream.mjs';

const HAVE_REDIS = Boolean(redisServerBin() && redisCliBin());
const skip = HAVE_REDIS || process.env.CI ? false : 'redis-server/redis-cli not found (apt-get install -y redis-server)';
const csrf = { 'x-csrf': '1' };
const FLIGHT_TTL = 3; // seconds: access tokens of subjects named flight-*; everyone else 300 s
const BACKCHANNEL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const PROPAGATION_MS = 2000; // issue #13: revoked -> 401 on every instance within 2 s
const log = (...args) => console.log('[store]', ...args);
const nowS = () => Math.floor(Date.now() / 1000);
const tail = (sg) => `\n--- sealgate :${sg.port} logs (tail) ---\n${sg.logs().slice(-2500)}`;

// ---- the fleet -----------------------------------------------------------------------------------

/**
 * The real provider (back-channel logout to the first instance), a real upstream, and three
 * sealgates sharing one key folder, with `[store] url = storeUrl` (none when undefined).
 * Returns { op, up, sgs, config, restart(i), stop() }.
 */
async function startFleet({ tmp, name, store }) {
  const ports = await Promise.all([0, 1, 2].map(() => freePort()));
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const up = await startUpstream();
  const op = await startProvider({
    clientId: 'bff',
    clientSecret: CLIENT_SECRET,
    redirectUris: urls.map((u) => `${u}/bff/callback`),
    postLogoutRedirectUris: urls.map((u) => `${u}/`),
    backchannelLogoutUri: `${urls[0]}/bff/backchannel-logout`,
    accessTokenTTL: (ctx, token) => (String(token.accountId).startsWith('flight-') ? FLIGHT_TTL : 300),
  });
  const keys = path.join(tmp, `${name}-keys`);
  await keygen(keys);
  const config = {
    keys: { dir: keys },
    session: { refresh_skew: '1s' },
    routes: [{ prefix: '/api/', upstream: up.url }],
    store,
  };
  const start = (i) => startSealgate({ issuer: op.issuer, clientSecret: CLIENT_SECRET, port: ports[i], config });
  const started = await Promise.allSettled(ports.map((_, i) => start(i)));
  const sgs = started.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const stop = async () => {
    await Promise.all(sgs.map((sg) => sg.stop()));
    await op.close();
    await up.close();
  };
  const bad = started.find((r) => r.status === 'rejected');
  if (bad) {
    await stop();
    throw bad.reason;
  }
  async function restart(i) {
    await sgs[i].stop();
    sgs[i] = await start(i);
    return sgs[i];
  }
  return { op, up, sgs, config, restart, stop };
}

/** One request with a raw Cookie header (no jar: a copy of the cookies as they were). */
async function probe(sg, cookie, p = '/bff/user') {
  const res = await fetch(`${sg.url}${p}`, { headers: { cookie, ...csrf }, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body, text, setCookies: setCookies(res, `${sg.url}${p}`), sg };
}

/** /bff/user and /api/echo of `session` on every instance: ['200 200', '200 200', ...]. */
async function everywhere(fleet, session) {
  return Promise.all(fleet.sgs.map(async (sg) => {
    const [user, api] = await Promise.all([probe(sg, session.cookie), probe(sg, session.cookie, '/api/echo')]);
    return `${user.status} ${api.status}`;
  }));
}

async function assertSignedIn(fleet, ...sessions) {
  for (const s of sessions) {
    assert.deepEqual(await everywhere(fleet, s), ['200 200', '200 200', '200 200'], `${s.label} should still be signed in on every instance`);
  }
}

/** Every sample of metric `name` on `sg`: { 'outcome="ok"': 3, ... } ('' for no labels). */
async function samples(sg, name) {
  const text = await (await fetch(`${sg.url}/metrics`)).text();
  const out = {};
  for (const m of text.matchAll(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/gm)) {
    if (m[1] === name) out[m[2] ?? ''] = Number(m[3]);
  }
  return out;
}

/** Logs `username` in on `sg` through the provider's forms; the cookies as a header, the sid. */
async function signIn(sg, username, label = username) {
  const r = await login({ bffUrl: sg.url, username });
  assert.equal(r.callbackResponse.status, 302, `login of ${username} failed${tail(sg)}`);
  const cookie = r.jar.header(`${sg.url}/bff/user`);
  const user = await probe(sg, cookie);
  assert.equal(user.status, 200, user.text);
  assert.equal(user.body.sub, username);
  return { label, username, cookie, jar: r.jar, sid: user.body.session.sid, session: user.body.session, sg, at: Date.now() };
}

/**
 * Waits (at most `ms`) until `session` is refused on every instance, then checks the refusal:
 * 401 login_required on /bff/user and on the API, the session cookies cleared. Returns the ms
 * from the call to the last instance's first 401.
 */
async function assertEndedEverywhere(fleet, session, ms = PROPAGATION_MS, since = Date.now()) {
  const firstRefusal = new Map();
  try {
    await waitUntil(async () => {
      await Promise.all(fleet.sgs.map(async (sg) => {
        if (firstRefusal.has(sg.port)) return;
        if ((await probe(sg, session.cookie)).status === 401) firstRefusal.set(sg.port, Date.now() - since);
      }));
      return firstRefusal.size === fleet.sgs.length;
    }, ms, `${session.label} refused on every instance`);
  } catch (e) {
    const now = await everywhere(fleet, session);
    throw new Error(`${e.message}: /bff/user /api/echo per instance ${JSON.stringify(now)}${fleet.sgs.map(tail).join('')}`);
  }
  for (const sg of fleet.sgs) {
    for (const p of ['/bff/user', '/api/echo']) {
      const r = await probe(sg, session.cookie, p);
      assert.equal(r.status, 401, `${session.label} on :${sg.port}${p}: ${r.text}`);
      assert.deepEqual(r.body, { error: 'login_required' });
      const cleared = r.setCookies.filter((c) => SESSION_COOKIE.test(c.name) && c.maxAge <= 0);
      assert.ok(cleared.some((c) => c.name.endsWith('.0')), `the 401 on :${sg.port}${p} clears the session cookies: ${r.setCookies.map((c) => c.raw).join(' | ')}`);
    }
  }
  return Math.max(...firstRefusal.values());
}

// ---- the scenarios, run against standalone Redis and against the Cluster --------------------------

/** RP-initiated logout at the provider for A; B (same user) and another user stay. */
async function logoutAtProvider(fleet, t, { user, other }) {
  const { op, sgs } = fleet;
  const a = await signIn(sgs[0], user, `${user} A`);
  const b = await signIn(sgs[1], user, `${user} B`);
  const o = await signIn(sgs[2], other);
  assert.ok(a.sid && b.sid, `the ID tokens carry sid (backchannel_logout_session_required): ${a.sid} ${b.sid}`);
  assert.notEqual(a.sid, b.sid, 'two logins in two jars are two provider sessions');
  await assertSignedIn(fleet, a, b, o);

  // A logs out in its own jar: sealgate clears its cookies there and sends the browser to the
  // provider, whose confirmation ends the provider session and tells the client back-channel.
  // A copy of A's cookies taken before (another tab, a stolen copy) must now fail everywhere.
  const res = await a.jar.fetch(`${sgs[0].url}${a.session.logout_url}`);
  assert.equal(res.status, 302, await res.text());
  const n = op.stats.backchannelLogouts.length;
  await completeEndSession({ jar: a.jar, url: res.headers.get('location') });
  const delivery = op.stats.backchannelLogouts.slice(n).find((d) => d.sid === a.sid);
  assert.ok(delivery, `the provider sent a logout token for A: ${JSON.stringify(op.stats.backchannelLogouts.slice(n))}`);
  assert.equal(delivery.status, 200, `sealgate accepted the provider's logout token${tail(sgs[0])}`);
  const ms = await assertEndedEverywhere(fleet, a, PROPAGATION_MS, delivery.at);
  await assertSignedIn(fleet, b, o);
  t.diagnostic(`RP-initiated logout: A refused on all three ${ms} ms after the back-channel delivery`);
  log(`RP-initiated logout: A refused on all three ${ms} ms after the back-channel delivery`);
  return { a, b, o };
}

/** The provider's back-channel logout of one (sub, sid); the rest stay. */
async function backchannelOf(fleet, t, victim, ...bystanders) {
  await assertSignedIn(fleet, victim, ...bystanders);
  const delivery = await fleet.op.backchannelLogout(victim.username, victim.sid);
  assert.equal(delivery?.status, 200, `sealgate accepted the logout token: ${JSON.stringify(delivery)}${tail(fleet.sgs[0])}`);
  const ms = await assertEndedEverywhere(fleet, victim, PROPAGATION_MS, delivery.at);
  await assertSignedIn(fleet, ...bystanders);
  t.diagnostic(`back-channel logout of ${victim.label}: refused on all three after ${ms} ms`);
  log(`back-channel logout of ${victim.label}: refused on all three after ${ms} ms`);
}

/**
 * 30 concurrent API calls with one expired session's cookies, round robin over the three
 * instances: 30 x 200, one refresh grant at the provider, the same new token upstream.
 * With `strict` false (no store) only report what happened.
 */
async function thirtyAfterExpiry(fleet, t, username, { strict = true } = {}) {
  const { op, up, sgs } = fleet;
  const s = await signIn(sgs[0], username);
  const fresh = await probe(sgs[1], s.cookie, '/api/echo');
  assert.equal(fresh.status, 200, fresh.text);
  const oldBearer = up.requests.at(-1).headers.authorization;
  const grants = op.stats.refreshGrants;
  const failures = op.stats.refreshFailures;
  await sleep(Math.max(0, s.at + FLIGHT_TTL * 1000 + 300 - Date.now())); // expired, not just due
  const n = up.requests.length;
  const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => probe(sgs[i % 3], s.cookie, `/api/echo?i=${i}`)));
  const statuses = {};
  for (const a of answers) statuses[a.status] = (statuses[a.status] ?? 0) + 1;
  const bearers = new Set(up.requests.slice(n).map((r) => r.headers.authorization));
  const summary = `${JSON.stringify(statuses)}, ${op.stats.refreshGrants - grants} refresh grant(s) at the provider, `
    + `${op.stats.refreshFailures - failures} refused, ${bearers.size} distinct bearer token(s) upstream`;
  t.diagnostic(`30 calls after expiry over three instances: ${summary}`);
  log(`${strict ? 'with' : 'WITHOUT'} the store, 30 calls after expiry over three instances: ${summary}`);
  if (!strict) return;
  assert.deepEqual(statuses, { 200: 30 }, answers.find((a) => a.status !== 200)?.text);
  assert.equal(op.stats.refreshGrants - grants, 1, `exactly one refresh grant for the fleet (${op.stats.lastError ?? ''})`);
  assert.equal(op.stats.refreshFailures - failures, 0, op.stats.lastError);
  assert.deepEqual([...bearers], [`Bearer ${op.stats.issuedTokens.at(-1).access_token}`], 'every call carried the one new access token');
  assert.notEqual([...bearers][0], oldBearer);
}

// ---- forged logout tokens ------------------------------------------------------------------------

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** Every way a logout token must be refused, each aimed at `victim`'s session. */
async function forgeries(op, victim) {
  const key = await importJWK(op.signingKey, 'RS256');
  const { privateKey: attackerKey } = await generateKeyPair('RS256');
  const claims = (over = {}) => Object.fromEntries(Object.entries({
    iss: op.issuer,
    aud: 'bff',
    iat: nowS(),
    exp: nowS() + 120,
    jti: crypto.randomUUID(),
    events: { [BACKCHANNEL_EVENT]: {} },
    sub: victim.username,
    sid: victim.sid,
    ...over,
  }).filter(([, v]) => v !== undefined));
  const sign = (c, header = {}, k = key) => new SignJWT(c)
    .setProtectedHeader({ alg: 'RS256', kid: 'op-rs256', typ: 'logout+jwt', ...header }).sign(k);
  const idToken = op.stats.issuedTokens.filter((x) => x.id_token).at(-1).id_token;
  return [
    ['alg none', `${b64({ alg: 'none', typ: 'logout+jwt' })}.${b64(claims())}.`],
    ['alg none, signature kept', `${b64({ alg: 'none', kid: 'op-rs256', typ: 'logout+jwt' })}.${b64(claims())}.${(await sign(claims())).split('.')[2]}`],
    ['wrong aud (the provider\'s real key)', await sign(claims({ aud: 'another-client' }))],
    ['wrong iss', await sign(claims({ iss: 'http://127.0.0.1:1' }))],
    ['HS256 with the client secret', await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'logout+jwt' }).sign(new TextEncoder().encode(CLIENT_SECRET))],
    ['signed by another key under the provider\'s kid', await sign(claims(), {}, attackerKey)],
    ['signature of another token', `${(await sign(claims())).split('.').slice(0, 2).join('.')}.${(await sign(claims({ jti: 'x' }))).split('.')[2]}`],
    ['no events', await sign(claims({ events: undefined }))],
    ['events without the back-channel event', await sign(claims({ events: { 'http://schemas.openid.net/event/other': {} } }))],
    ['a nonce (an ID token in disguise)', await sign(claims({ nonce: 'n-0S6_WzA2Mj' }))],
    ['neither sid nor sub', await sign(claims({ sid: undefined, sub: undefined }))],
    ['no jti', await sign(claims({ jti: undefined }))],
    ['expired', await sign(claims({ iat: nowS() - 600, exp: nowS() - 300 }))],
    ['iat a day ago', await sign(claims({ iat: nowS() - 86400 }))],
    ['typ at+jwt', await sign(claims(), { typ: 'at+jwt' })],
    ['the ID token sealgate got at login', idToken],
    ['garbage', 'garbage'],
    ['three empty parts', '..'],
    ['empty', ''],
  ];
}

/** POST /bff/backchannel-logout on `sg` with `form` (URLSearchParams or a string body). */
async function postLogout(sg, form, headers = { 'content-type': 'application/x-www-form-urlencoded' }) {
  const res = await fetch(`${sg.url}/bff/backchannel-logout`, { method: 'POST', headers, body: form, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body, text, cacheControl: res.headers.get('cache-control') };
}

// ---- standalone Redis ----------------------------------------------------------------------------

describe('the shared store on standalone Redis (append-only file)', { skip }, () => {
  let tmp;
  let redis;
  let fleet;
  const cast = {}; // sessions shared by the tests below, in order

  before(async () => {
    if (!HAVE_REDIS) throw new Error('redis-server/redis-cli not found and CI is set: apt-get install -y redis-server');
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'sealgate-store-'));
    redis = await startRedis({ dir: path.join(tmp, 'redis'), aof: true });
    fleet = await startFleet({ tmp, name: 'standalone', store: { url: redis.url } });
  });
  after(async () => {
    await fleet?.stop();
    await redis?.stop();
    if (tmp && !process.env.KEEP_TMP) await fs.rm(tmp, { recursive: true, force: true });
  });

  test('every instance is up on the store', async () => {
    for (const sg of fleet.sgs) assert.equal(await metric(sg.url, 'sealgate_store_up'), 1, tail(sg));
  });

  test('a logout at the provider ends that session on all three within 2 s; the user\'s other session and another user stay', async (t) => {
    Object.assign(cast, await logoutAtProvider(fleet, t, { user: 'alice', other: 'bob' }));
  });

  test('a back-channel logout of (sub, sid) ends exactly that session everywhere within 2 s', async (t) => {
    cast.carol = await signIn(fleet.sgs[1], 'carol');
    await backchannelOf(fleet, t, cast.o, cast.b, cast.carol); // bob ends; alice B and carol stay
  });

  test('refuses forged and replayed logout tokens with 400 and logs nobody out', async (t) => {
    const { sgs, op } = fleet;
    const victim = cast.carol;
    const wrong = [];
    const cases = await forgeries(op, victim);
    for (const [i, [what, token]] of cases.entries()) {
      const r = await postLogout(sgs[i % 3], new URLSearchParams({ logout_token: token }));
      if (r.status !== 400 || r.body?.error !== 'invalid_request') wrong.push(`${what}: ${r.status} ${r.text.slice(0, 120)}`);
    }
    for (const [what, form, headers] of [
      ['no logout_token', new URLSearchParams({ token: 'x' }), undefined],
      ['two logout_tokens', `logout_token=a&logout_token=${cases[2][1]}`, undefined],
      ['JSON instead of a form', JSON.stringify({ logout_token: cases[2][1] }), { 'content-type': 'application/json' }],
    ]) {
      const r = await postLogout(sgs[0], form, headers);
      if (r.status !== 400) wrong.push(`${what}: ${r.status} ${r.text.slice(0, 120)}`);
    }

    // A valid token (for a session nobody has), then the same again on two instances: its
    // jti is remembered fleet-wide. Back-Channel Logout 1.0 §2.6 makes the jti check
    // optional; issue #13 requires it, since a replayed token could end a later session.
    const key = await importJWK(op.signingKey, 'RS256');
    const valid = await new SignJWT({
      iss: op.issuer, aud: 'bff', iat: nowS(), exp: nowS() + 120, jti: crypto.randomUUID(),
      events: { [BACKCHANNEL_EVENT]: {} }, sub: 'nobody', sid: 'no-such-sid',
    }).setProtectedHeader({ alg: 'RS256', kid: 'op-rs256', typ: 'logout+jwt' }).sign(key);
    const first = await postLogout(sgs[1], new URLSearchParams({ logout_token: valid }));
    assert.equal(first.status, 200, `a valid logout token is accepted: ${first.text}${tail(sgs[1])}`);
    assert.match(first.cacheControl ?? '', /no-store/);
    const replays = [await postLogout(sgs[2], new URLSearchParams({ logout_token: valid })), await postLogout(sgs[1], new URLSearchParams({ logout_token: valid }))];
    replays.forEach((r, i) => { if (r.status !== 400) wrong.push(`replayed jti (${i === 0 ? 'another' : 'the same'} instance): ${r.status} ${r.text.slice(0, 120)}`); });

    assert.deepEqual(wrong, [], `every forgery and replay must be 400 invalid_request${tail(sgs[0])}`);
    await assertSignedIn(fleet, victim, cast.b);
    const counted = await Promise.all(sgs.map((sg) => samples(sg, 'sealgate_backchannel_logouts_total')));
    t.diagnostic(`${cases.length + 5} refusals; sealgate_backchannel_logouts_total per instance: ${JSON.stringify(counted)}`);
  });

  test('30 concurrent calls of one expired session over three instances: one refresh grant, 30 x 200', async (t) => {
    await thirtyAfterExpiry(fleet, t, 'flight-erin');
  });

  test('sealgate sessions revoke --sub ends every session of that subject on every instance, and only those', async (t) => {
    const { sgs } = fleet;
    cast.a3 = await signIn(sgs[2], 'alice', 'alice C');
    cast.dave = await signIn(sgs[1], 'dave');
    await assertSignedIn(fleet, cast.b, cast.a3, cast.dave, cast.carol);
    const since = Date.now();
    const out = await sealgateCli(['sessions', 'revoke', '--sub', 'alice', '--config', sgs[0].configPath]);
    const msB = await assertEndedEverywhere(fleet, cast.b, PROPAGATION_MS, since);
    const msC = await assertEndedEverywhere(fleet, cast.a3, PROPAGATION_MS, since);
    await assertSignedIn(fleet, cast.dave, cast.carol);
    // By subject and time: a login after the revocation is a new session, not revoked.
    await sleep(Math.max(0, (nowS() + 1) * 1000 - Date.now() + 50));
    cast.a4 = await signIn(sgs[0], 'alice', 'alice D (after the revocation)');
    await assertSignedIn(fleet, cast.a4);
    const revs = await Promise.all(sgs.map((sg) => metric(sg.url, 'sealgate_revocations')));
    t.diagnostic(`revoke --sub alice: refused on all three after ${Math.max(msB, msC)} ms; sealgate_revocations ${revs}; said: ${out.trim()}`);
  });

  test('Redis stopped: sessions live on, /readyz 200, store_up 0; a logout meanwhile ends the session where it arrived, and everywhere once Redis is back', async (t) => {
    const { sgs, op } = fleet;
    await redis.stop();
    const tDown = Date.now();
    await waitUntil(async () => (await Promise.all(sgs.map((sg) => metric(sg.url, 'sealgate_store_up')))).every((v) => v === 0), 10_000, 'sealgate_store_up 0 on every instance');
    const msDown = Date.now() - tDown;

    await assertSignedIn(fleet, cast.dave, cast.a4, cast.carol);
    for (const sg of sgs) assert.equal((await fetch(`${sg.url}/readyz`)).status, 200, `/readyz on :${sg.port} during the outage`);
    for (const s of [cast.a, cast.o, cast.b]) { // revoked before the outage: still refused
      assert.deepEqual(await everywhere(fleet, s), ['401 401', '401 401', '401 401'], `${s.label} stays refused during the outage`);
    }

    // The provider logs carol out while the store is down; the logout token reaches sgs[0].
    const delivery = await op.backchannelLogout(cast.carol.username, cast.carol.sid);
    const where = await everywhere(fleet, cast.carol);
    t.diagnostic(`during the outage: the logout token was answered ${delivery?.status}; carol per instance ${JSON.stringify(where)}`);
    assert.equal(where[0], '401 401', `carol's session ends at once on the instance that got the logout token${tail(sgs[0])}`);
    await assertSignedIn(fleet, cast.dave, cast.a4);
    const errors = await samples(sgs[0], 'sealgate_store_errors_total');
    t.diagnostic(`store_up 0 on all three ${msDown} ms after Redis stopped; sealgate_store_errors_total on :${sgs[0].port} ${JSON.stringify(errors)}`);

    // Redis back on the same port, from its append-only file.
    await redis.start();
    const tUp = Date.now();
    await waitUntil(async () => (await Promise.all(sgs.map((sg) => metric(sg.url, 'sealgate_store_up')))).every((v) => v === 1), 15_000, 'sealgate_store_up 1 on every instance');
    const msUp = Date.now() - tUp;
    const msCarol = await assertEndedEverywhere(fleet, cast.carol, 10_000, tUp);
    for (const s of [cast.a, cast.o, cast.b, cast.a3]) assert.deepEqual(await everywhere(fleet, s), ['401 401', '401 401', '401 401'], s.label);
    await assertSignedIn(fleet, cast.dave, cast.a4);
    t.diagnostic(`Redis back: store_up 1 on all three after ${msUp} ms; carol refused on all three ${msCarol} ms after the restart`);
    log(`outage: store_up 0 after ${msDown} ms, 1 again ${msUp} ms after Redis restarted; the outage's logout everywhere after ${msCarol} ms`);
  });

  test('an instance restarted after the Redis restart refuses every earlier revocation from its first answer', async (t) => {
    const sg = await fleet.restart(2);
    const t0 = Date.now();
    const refused = [];
    for (const s of [cast.a, cast.o, cast.b, cast.a3, cast.carol]) {
      const r = await probe(sg, s.cookie);
      refused.push(`${s.label}: ${r.status}`);
    }
    assert.deepEqual(refused, [cast.a, cast.o, cast.b, cast.a3, cast.carol].map((s) => `${s.label}: 401`), `the restarted instance resyncs before it serves${tail(sg)}`);
    assert.deepEqual(await everywhere(fleet, cast.dave), ['200 200', '200 200', '200 200']);
    t.diagnostic(`restarted :${sg.port}: five revoked sessions refused, checked within ${Date.now() - t0} ms of /readyz 200`);
  });

  test('Redis holds no token, no sid and no subject in plaintext; every key under the prefix', async () => {
    const aof = await aofText(redis.dir);
    assert.ok(aof.length > 0, 'the append-only file was written');
    const needles = [
      ...tokenNeedles(fleet.op.stats.issuedTokens),
      ...Object.values(cast).map((s) => ({ label: `sid of ${s.label}`, needle: s.sid })),
      { label: 'a subject', needle: 'flight-erin' },
    ];
    assert.deepEqual(needles.filter(({ needle }) => aof.includes(needle)).map((x) => x.label), []);
    const keys = await redis.command('KEYS', '*');
    assert.ok(keys.length > 0, 'sealgate wrote keys');
    assert.deepEqual(keys.filter((k) => !k.startsWith('sealgate:')), [], 'every key under the default prefix "sealgate:"');
  });
});

// ---- Redis Cluster -------------------------------------------------------------------------------

describe('the shared store on a three-node Redis Cluster', { skip }, () => {
  let tmp;
  let cluster;
  let fleet;

  before(async () => {
    if (!HAVE_REDIS) throw new Error('redis-server/redis-cli not found and CI is set: apt-get install -y redis-server');
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'sealgate-cluster-'));
    cluster = await startCluster({ dir: path.join(tmp, 'cluster') });
    fleet = await startFleet({ tmp, name: 'cluster', store: { url: cluster.url, prefix: 'fleet-b:' } });
  });
  after(async () => {
    await fleet?.stop();
    await cluster?.stop();
    if (tmp && !process.env.KEEP_TMP) await fs.rm(tmp, { recursive: true, force: true });
  });

  let cast;
  test('a logout at the provider ends that session on all three within 2 s; the others stay', async (t) => {
    for (const sg of fleet.sgs) assert.equal(await metric(sg.url, 'sealgate_store_up'), 1, tail(sg));
    cast = await logoutAtProvider(fleet, t, { user: 'alice', other: 'bob' });
  });

  test('a back-channel logout of (sub, sid) ends exactly that session everywhere within 2 s', async (t) => {
    await backchannelOf(fleet, t, cast.b, cast.o);
  });

  test('30 concurrent calls of one expired session over three instances: one refresh grant, 30 x 200', async (t) => {
    await thirtyAfterExpiry(fleet, t, 'flight-frank');
  });

  test('every key on every node is under the configured prefix', async () => {
    const keys = (await Promise.all(cluster.nodes.map((n) => n.command('KEYS', '*')))).flat();
    assert.ok(keys.length > 0, 'sealgate wrote keys to the cluster');
    assert.deepEqual(keys.filter((k) => !k.startsWith('fleet-b:')), []);
  });
});

// ---- without [store] -----------------------------------------------------------------------------

describe('without [store]', () => {
  let tmp;
  let fleet;

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'sealgate-nostore-'));
    fleet = await startFleet({ tmp, name: 'nostore', store: undefined });
  });
  after(async () => {
    await fleet?.stop();
    if (tmp && !process.env.KEEP_TMP) await fs.rm(tmp, { recursive: true, force: true });
  });

  test('POST /bff/backchannel-logout is 501 and logs nobody out', async () => {
    const s = await signIn(fleet.sgs[0], 'grace');
    const delivery = await fleet.op.backchannelLogout(s.username, s.sid);
    assert.equal(delivery?.status, 501, JSON.stringify(delivery));
    await assertSignedIn(fleet, { ...s, label: 'grace' });
  });

  test('sealgate sessions revoke exits 2 naming store.url', async () => {
    const r = await sealgateCli(['sessions', 'revoke', '--sub', 'grace', '--config', fleet.sgs[0].configPath]).then(() => 'exit 0', (e) => e.message);
    assert.match(r, /failed \(2\)/);
    assert.match(r, /store\.url/);
  });

  test('informational: 30 concurrent calls of one expired session over three instances', async (t) => {
    await thirtyAfterExpiry(fleet, t, 'flight-gus', { strict: false });
  });
});

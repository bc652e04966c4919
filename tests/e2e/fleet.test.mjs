// sealgate as a fleet: three real sealgate processes behind a real load balancer (Debian's
// haproxy, started here with a generated configuration, see fleet-lib.mjs), all with the
// load balancer's URL as public_url and the real provider (op.mjs).
//
//  1. One key folder shared by three instances: any instance opens any session; under load,
//     `kill -9` of one instance costs at most the requests in flight to it, and SIGTERM of
//     another costs nothing (graceful drain + haproxy's retry on connection failure).
//  2. Two-phase key rotation (add, promote, retire) under load with one key folder per
//     instance, so that instances see each change at different moments: zero 401s, zero 5xx;
//     a session sealed under the old key lives until its absolute limit and is refused as
//     "unknown key" only after the retirement.
//  3. A broken key file on reload is refused, logged and counted; the old ring is kept.
//
// Needs target/debug/sealgate (`cargo build`) and haproxy (`apt-get install -y haproxy`, or
// HAPROXY=/path); skipped without haproxy. Every process is bound to 127.0.0.1 and stopped by PID.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { login } from './browserless.mjs';
import { startProvider } from './op.mjs';
import { startUpstream } from './upstream.mjs';
import { freePort, keygen, startSealgate } from './sealgate.mjs';
import { CLIENT_SECRET, metric, waitUntil, within } from './stack.mjs';
import {
  copyRing, failed, haproxyBin, installFile, kidInCookieHeader, kidInSetCookie, parseReload,
  sealgateCli, startHaproxy, startLoad, summarize, waitForLogAfter,
} from './fleet-lib.mjs';

const HAPROXY = haproxyBin();
const CONCURRENCY = 8;
const ABSOLUTE_S = 25; // [session] absolute (and idle) of the rotation fleet
const csrf = { 'x-csrf': '1' };

const tail = (sg) => `\n--- sealgate :${sg.port} logs (tail) ---\n${sg.logs().slice(-2500)}`;
const lbTail = (lb) => `\n--- haproxy output (tail) ---\n${lb.logs().slice(-2500)}`;
const exitOf = (proc) => (proc.exitCode !== null || proc.signalCode !== null
  ? Promise.resolve({ code: proc.exitCode, signal: proc.signalCode })
  : new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal }))));

/** /bff/user on `base` with a raw Cookie header (no jar: the header stays exactly as given). */
async function userWith(base, cookie) {
  const res = await fetch(`${base}/bff/user`, { headers: { cookie, ...csrf }, signal: AbortSignal.timeout(5000) });
  const body = await res.json().catch(() => undefined);
  return { status: res.status, body, setCookies: res.headers.getSetCookie(), server: res.headers.get('x-fleet-server') };
}

/** `cookieHeader` with the cookies of `setCookies` applied (Max-Age=0 deletes). */
function applySetCookies(cookieHeader, setCookies) {
  const map = new Map(cookieHeader.split(';').map((p) => p.trim()).filter(Boolean).map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
  for (const h of setCookies) {
    const [pair, ...attrs] = h.split(';');
    const name = pair.slice(0, pair.indexOf('=')).trim();
    if (attrs.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a))) map.delete(name);
    else map.set(name, pair.slice(pair.indexOf('=') + 1).trim());
  }
  return [...map].map(([k, v]) => `${k}=${v}`).join('; ');
}

/** Starts one sealgate per entry of `configs` on free ports; all or none. */
async function startFleet(issuer, configs) {
  const ports = await Promise.all(configs.map(() => freePort()));
  const started = await Promise.allSettled(configs.map((config, i) => startSealgate({
    issuer, clientSecret: CLIENT_SECRET, port: ports[i], config,
  })));
  const sgs = started.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const bad = started.find((r) => r.status === 'rejected');
  if (bad) {
    await Promise.all(sgs.map((sg) => sg.stop()));
    throw bad.reason;
  }
  return sgs;
}

describe('a fleet of three sealgates behind haproxy', { skip: HAPROXY ? false : 'haproxy not found (apt-get install -y haproxy, or HAPROXY=/path)' }, () => {
  let tmp;
  let op;
  let lbPorts;
  const lbUrl = (i) => `http://127.0.0.1:${lbPorts[i]}`;

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'sealgate-fleet-'));
    lbPorts = [await freePort(), await freePort()];
    op = await startProvider({
      clientId: 'bff',
      clientSecret: CLIENT_SECRET,
      redirectUris: lbPorts.map((_, i) => `${lbUrl(i)}/bff/callback`),
      postLogoutRedirectUris: lbPorts.map((_, i) => `${lbUrl(i)}/`),
    });
  });
  after(async () => {
    await op?.close();
    if (tmp && !process.env.KEEP_TMP) await fs.rm(tmp, { recursive: true, force: true });
  });

  // ---- 1. one key folder, three instances ---------------------------------------------------

  describe('one key folder shared by three instances', () => {
    let sgs = [];
    let lb;
    let up; // an API upstream, for a slow request in flight during the drain
    let cookie; // the Cookie header of one session, logged in through the load balancer
    const names = ['s1', 's2', 's3'];

    before(async () => {
      const shared = path.join(tmp, 'shared-keys');
      await keygen(shared);
      up = await startUpstream();
      sgs = await startFleet(op.issuer, names.map(() => ({
        public_url: lbUrl(0),
        keys: { dir: shared },
        server: { drain_timeout: '5s' },
        routes: [{ prefix: '/api/', upstream: up.url }],
      })));
      lb = await startHaproxy({
        port: lbPorts[0],
        servers: sgs.map((sg, i) => ({ name: names[i], port: sg.port })),
        dir: path.join(tmp, 'haproxy-1'),
      });
    });
    after(async () => {
      await Promise.all(sgs.map((sg) => sg.stop()));
      await lb?.stop();
      await up?.close();
    });

    test('any instance opens any session: login through the load balancer, /bff/user 200 on each instance directly', async (t) => {
      const r = await login({ bffUrl: lb.url, username: 'fleet-alice' });
      assert.equal(r.callbackResponse.status, 302, `login through the load balancer failed${lbTail(lb)}`);
      assert.equal(new URL(r.authorizeUrl).searchParams.get('redirect_uri'), `${lb.url}/bff/callback`);
      cookie = r.jar.header(`${lb.url}/bff/user`);
      assert.match(cookie, /(^|; )sealgate\.0=/);
      assert.match(cookie, /(^|; )sealgate-user\.0=/);

      for (const sg of sgs) {
        const withCookie = await userWith(sg.url, cookie);
        assert.equal(withCookie.status, 200, `instance :${sg.port} refused a session of the fleet${tail(sg)}`);
        assert.equal(withCookie.body.sub, 'fleet-alice');
        const without = await fetch(`${sg.url}/bff/user`, { headers: csrf });
        assert.equal(without.status, 401, 'and without the cookie: no session');
      }

      // Round robin through the load balancer: every instance answers in six requests.
      const seen = {};
      for (let i = 0; i < 6; i++) {
        const res = await userWith(lb.url, cookie);
        assert.equal(res.status, 200);
        seen[res.server] = (seen[res.server] ?? 0) + 1;
      }
      assert.deepEqual(Object.keys(seen).sort(), names, `round robin: ${JSON.stringify(seen)}`);
      t.diagnostic(`six requests through haproxy: ${JSON.stringify(seen)}`);
    });

    test('kill -9 of one instance under load: at most the requests in flight fail, every later one succeeds', async (t) => {
      assert.ok(cookie, 'needs the session of the first test');
      const victim = sgs[0]; // haproxy's s1
      const load = startLoad({
        url: `${lb.url}/bff/user`, headers: () => ({ cookie, ...csrf }), concurrency: CONCURRENCY, maxMs: 12_000, maxRequests: 20_000,
      });
      await sleep(1500);
      const tKill = Date.now();
      victim.proc.kill('SIGKILL');
      const exit = await within(5000, exitOf(victim.proc), 'the exit of the killed instance');
      const down = await lb.waitStatus((s) => s.s1?.startsWith('DOWN'), 6000, 's1 DOWN');
      const tDown = Date.now();
      await sleep(1500);
      const results = await load.stop();

      const sum = summarize(results);
      const failures = results.filter(failed);
      const afterKill = results.filter((r) => r.start >= tKill);
      const inFlight = results.filter((r) => r.start < tKill && r.end >= tKill);
      t.diagnostic(`kill -9: ${sum.total} requests (${JSON.stringify(sum.byStatus)}, errors ${JSON.stringify(sum.errors)}), `
        + `${failures.length} failed, ${inFlight.length} in flight at the kill, ${sum.retried} retried by haproxy, `
        + `${afterKill.length} sent after the kill; s1 DOWN after ${tDown - tKill} ms (${JSON.stringify(down)}); by server ${JSON.stringify(sum.byServer)}`);
      const show = (rs) => JSON.stringify(rs.slice(0, 10).map((r) => ({ ...r, setCookies: undefined, start: r.start - tKill, end: r.end - tKill })));

      assert.deepEqual(exit, { code: null, signal: 'SIGKILL' });
      assert.ok(results.some((r) => r.server === 's1' && r.end < tKill), 'the victim served requests before the kill');
      assert.ok(sum.total >= 200, `enough load to mean something (${sum.total} requests)`);
      assert.ok(afterKill.length >= 100, `enough requests after the kill (${afterKill.length})`);
      assert.deepEqual(afterKill.filter(failed).length, 0, `requests sent after the kill failed: ${show(afterKill.filter(failed))}${lbTail(lb)}`);
      assert.ok(failures.every((r) => r.start < tKill && r.end >= tKill), `only requests in flight at the kill may fail: ${show(failures)}`);
      assert.ok(failures.length <= CONCURRENCY, `${failures.length} failures > ${CONCURRENCY} (the concurrency)`);
      assert.equal(results.filter((r) => r.server === 's1' && r.start > tKill + 200).length, 0, 'nothing is answered by the dead instance');
      assert.ok(afterKill.some((r) => r.server === 's2') && afterKill.some((r) => r.server === 's3'), 'the other two carry the load');
    });

    test('SIGTERM of another instance under load: no request fails, it drains and exits 0', async (t) => {
      assert.ok(cookie, 'needs the session of the first test');
      const victim = sgs[1]; // haproxy's s2
      const logOffset = victim.logs().length;
      const load = startLoad({
        url: `${lb.url}/bff/user`, headers: () => ({ cookie, ...csrf }), concurrency: CONCURRENCY, maxMs: 20_000, maxRequests: 20_000,
      });
      await sleep(1500);
      // One slow request (the upstream answers after 1.5 s), sent to the victim directly so
      // that no retry by haproxy can hide its loss: it must be finished by the drain.
      const slowPath = `/api/slow?ms=1500&fleet=${Date.now()}`;
      const slow = fetch(`${victim.url}${slowPath}`, { headers: { cookie, ...csrf }, signal: AbortSignal.timeout(8000) })
        .then(async (res) => ({ status: res.status, body: await res.text(), end: Date.now() }), (e) => ({ status: 0, error: e.cause?.code ?? e.name, end: Date.now() }));
      await waitUntil(() => up.requests.some((r) => r.url === slowPath), 3000, 'the slow request at the upstream');
      const tTerm = Date.now();
      victim.proc.kill('SIGTERM');
      const exit = await within(12_000, exitOf(victim.proc), 'the exit of the SIGTERMed instance (drain_timeout 5s)');
      const tExit = Date.now();
      const slowResult = await slow;
      await lb.waitStatus((s) => s.s2?.startsWith('DOWN'), 6000, 's2 DOWN');
      await sleep(1500);
      const results = await load.stop();

      const sum = summarize(results);
      const failures = results.filter(failed);
      const logs = victim.logs().slice(logOffset);
      t.diagnostic(`SIGTERM: ${sum.total} requests (${JSON.stringify(sum.byStatus)}, errors ${JSON.stringify(sum.errors)}), `
        + `${failures.length} failed, ${sum.retried} retried by haproxy; the slow request in flight: ${slowResult.status} `
        + `${slowResult.end - tTerm} ms after SIGTERM; exit ${JSON.stringify(exit)} ${tExit - tTerm} ms after SIGTERM; `
        + `by server ${JSON.stringify(sum.byServer)}; sealgate: ${logs.split('\n').filter((l) => /shutting down|connections closed|drain time/.test(l)).map((l) => l.replace(/^\S+\s+/, '')).join(' | ')}`);
      const show = (rs) => JSON.stringify(rs.slice(0, 10).map((r) => ({ ...r, setCookies: undefined, start: r.start - tTerm, end: r.end - tTerm })));

      assert.ok(results.some((r) => r.server === 's2' && r.end < tTerm), 'the victim served requests before SIGTERM');
      assert.ok(results.filter((r) => r.start > tExit).length >= 100, 'enough requests after its exit');
      assert.equal(failures.length, 0, `requests failed around SIGTERM: ${show(failures)}${tail(victim)}${lbTail(lb)}`);
      assert.deepEqual(exit, { code: 0, signal: null }, `exit status after SIGTERM${tail(victim)}`);
      assert.equal(slowResult.status, 200, `the request in flight at SIGTERM was not drained: ${JSON.stringify(slowResult)}${tail(victim)}`);
      assert.deepEqual(JSON.parse(slowResult.body), { slept: 1500 });
      assert.ok(tExit >= slowResult.end - 50, 'the process exited only after its last request was answered');
      assert.match(logs, /shutting down: draining connections/);
      assert.equal(results.filter((r) => r.server === 's2' && r.start > tExit).length, 0, 'nothing is answered by the stopped instance');
    });
  });

  // ---- 2. and 3. rotation, three key folders ----------------------------------------------

  describe('key rotation under load: three instances, one key folder each', () => {
    let sgs = [];
    let lb;
    let dirs;
    let OLD;
    let NEW;
    const names = ['A', 'B', 'C'];

    before(async () => {
      const ring0 = path.join(tmp, 'ring0');
      OLD = await keygen(ring0);
      dirs = names.map((n) => path.join(tmp, `keys-${n}`));
      for (const d of dirs) await copyRing(ring0, d);
      sgs = await startFleet(op.issuer, dirs.map((dir) => ({
        public_url: lbUrl(1),
        keys: { dir },
        // idle = absolute: a session cookie that is never re-written lives exactly until its
        // absolute limit; the touch step (idle / 10 = 2 s) re-seals sessions under load.
        session: { absolute: `${ABSOLUTE_S}s`, idle: `${ABSOLUTE_S}s` },
      })));
      lb = await startHaproxy({
        port: lbPorts[1],
        servers: sgs.map((sg, i) => ({ name: names[i], port: sg.port })),
        dir: path.join(tmp, 'haproxy-2'),
      });
    });
    after(async () => {
      await Promise.all(sgs.map((sg) => sg.stop()));
      await lb?.stop();
    });

    test('two-phase rotation (add, promote, retire) under load: zero 401s, zero 5xx; the old key ends only after the absolute limit', async (t) => {
      const [A, B] = sgs;
      const lbUser = `${lb.url}/bff/user`;
      const sum = (name, labels) => Promise.all(sgs.map((sg) => metric(sg.url, name, labels).then((v) => v ?? 0)));

      // The old-key session: sealed under OLD at login, its Cookie header frozen from now on
      // (whatever re-sealed cookies the instances answer with are not kept).
      const oldLogin = await login({ bffUrl: lb.url, username: 'old-key-olga' });
      assert.equal(oldLogin.callbackResponse.status, 302);
      const oldCookie = oldLogin.jar.header(lbUser);
      assert.equal(kidInCookieHeader(oldCookie), OLD);
      assert.equal(kidInCookieHeader(oldCookie, 'sealgate-user.0'), OLD);
      const first = await userWith(A.url, oldCookie);
      assert.equal(first.status, 200);
      const oldLimitMs = first.body.session.absolute_expires_at * 1000;
      assert.equal(first.body.session.absolute_expires_at, first.body.session.created_at + ABSOLUTE_S);

      // ... used only now and then: every 500 ms through the load balancer (bounded).
      const oldProbes = [];
      let probing = true;
      const prober = (async () => {
        for (let i = 0; probing && i < 200; i++) {
          const p = { start: Date.now() };
          try {
            const r = await userWith(lb.url, oldCookie);
            Object.assign(p, { status: r.status, server: r.server });
          } catch (e) {
            Object.assign(p, { status: 0, error: e.cause?.code ?? e.name });
          }
          p.end = Date.now();
          oldProbes.push(p);
          await sleep(500);
        }
      })();

      try {
        // The load: a session created just before, its cookies kept up to date (the jar stores
        // every Set-Cookie: re-sealed under whichever key the answering instance seals with).
        const loadLogin = await login({ bffUrl: lb.url, username: 'load-lena' });
        assert.equal(loadLogin.callbackResponse.status, 302);
        const { jar } = loadLogin;
        const loadMaxMs = (ABSOLUTE_S - 3) * 1000; // ends before the load session's own absolute limit
        const load = startLoad({
          send: (signal) => jar.fetch(lbUser, { headers: csrf, signal }), concurrency: CONCURRENCY, maxMs: loadMaxMs, maxRequests: 40_000,
        });
        await sleep(1000);

        // Phase 1, add: one new key, generated once, copied into every folder (0600, atomically).
        const staging = path.join(tmp, 'staging');
        await copyRing(path.join(tmp, 'ring0'), staging);
        NEW = await keygen(staging);
        assert.notEqual(NEW, OLD);
        assert.equal((await sealgateCli(['keys', 'list', '--dir', staging])).trim().split('\n').sort().join('\n'),
          [`${OLD}\tprimary`, NEW].sort().join('\n'), 'keygen in a non-empty folder only adds the key');
        const newKey = await fs.readFile(path.join(staging, `${NEW}.key`));
        const offsets = sgs.map((sg) => sg.logs().length);
        for (const d of dirs) {
          await installFile(d, `${NEW}.key`, newKey);
          await sleep(300); // the instances see it at different moments
        }
        const added = await Promise.all(sgs.map((sg, i) => waitForLogAfter(sg, offsets[i], /key ring reloaded/, 6000)));
        for (const line of added) assert.deepEqual(parseReload(line), { primary: OLD, kids: [OLD, NEW] }, line);

        // Phase 2, promote: A first, then B, then C, each waiting for that instance's reload.
        const promote = async (i) => {
          const offset = sgs[i].logs().length;
          const tCli = Date.now();
          await sealgateCli(['keys', 'promote', '--dir', dirs[i], NEW]);
          const line = await waitForLogAfter(sgs[i], offset, /key ring reloaded/, 6000);
          assert.deepEqual(parseReload(line), { primary: NEW, kids: [NEW, OLD] }, line);
          return tCli;
        };
        const tPromoteA = await promote(0);

        // A seals under NEW now: an OLD-sealed session it answers is re-sealed under NEW ...
        const viaA = await userWith(A.url, oldCookie);
        assert.equal(viaA.status, 200);
        assert.equal(kidInSetCookie(viaA.setCookies), NEW, 'A (promoted) re-seals an OLD-sealed session under NEW');
        // ... and B, which still seals under OLD, opens it (it holds NEW since phase 1).
        const viaB = await userWith(B.url, applySetCookies(oldCookie, viaA.setCookies));
        assert.equal(viaB.status, 200, `B (not promoted yet) refused a session A sealed under NEW${tail(B)}`);
        assert.ok([undefined, OLD].includes(kidInSetCookie(viaB.setCookies)), 'B seals only under its primary, OLD');

        await promote(1);
        await promote(2);
        const tPromoted = Date.now(); // every instance seals under NEW from here on
        await sleep(2500);
        assert.ok(Date.now() - load.t0 < loadMaxMs, 'the rotation took longer than the load may run');
        const results = await load.stop();

        const s = summarize(results);
        const n401 = s.byStatus[401] ?? 0;
        const n5xx = Object.entries(s.byStatus).filter(([k]) => k >= 500).reduce((a, [, v]) => a + v, 0);
        const kids = {};
        for (const r of results) {
          const kid = kidInSetCookie(r.setCookies);
          if (kid) kids[kid] = (kids[kid] ?? 0) + 1;
        }
        const lateOld = results.filter((r) => r.start > tPromoted && kidInSetCookie(r.setCookies) === OLD);
        const earlyNew = results.filter((r) => r.end < tPromoteA && kidInSetCookie(r.setCookies) === NEW);
        t.diagnostic(`rotation load: ${s.total} requests over ${((Date.now() - load.t0) / 1000).toFixed(1)} s: ${JSON.stringify(s.byStatus)}, `
          + `errors ${JSON.stringify(s.errors)}, 401s ${n401}, 5xx ${n5xx}, retried ${s.retried}; by server ${JSON.stringify(s.byServer)}; `
          + `session re-sealed under ${JSON.stringify(kids)} (${OLD} = old, ${NEW} = new)`);
        assert.ok(s.total >= 300, `enough load (${s.total})`);
        assert.equal(n401, 0, '401s during the rotation');
        assert.equal(n5xx, 0, '5xx during the rotation');
        assert.deepEqual(s.errors, {}, 'requests without an answer during the rotation');
        assert.equal(s.ok, s.total);
        assert.ok((kids[NEW] ?? 0) > 0 && (kids[OLD] ?? 0) > 0, 'the load session was re-sealed under both keys along the way');
        assert.equal(earlyNew.length, 0, 'nothing sealed under NEW before the first promotion');
        assert.equal(lateOld.length, 0, 'nothing sealed under OLD once every instance was promoted');

        // Phase 3, retire. A session written after the promotion (logged in late enough to be
        // alive at the retirement, and sealed under NEW everywhere).
        const retireAt = Math.max(tPromoted + ABSOLUTE_S * 1000, oldLimitMs) + 1000;
        await sleep(Math.max(0, retireAt - 8000 - Date.now()));
        const newLogin = await login({ bffUrl: lb.url, username: 'new-key-nina' });
        assert.equal(newLogin.callbackResponse.status, 302);
        const newCookie = newLogin.jar.header(lbUser);
        assert.equal(kidInCookieHeader(newCookie), NEW);
        assert.equal(kidInCookieHeader(newCookie, 'sealgate-user.0'), NEW);
        assert.equal((await userWith(lb.url, newCookie)).status, 200);

        await sleep(Math.max(0, retireAt - Date.now()));
        probing = false; // the old-key session's history is complete: up to its limit and beyond
        await prober;
        const expiredBefore = await sum('sealgate_session_rejected_total', { reason: 'expired' });
        const unknownBefore = await sum('sealgate_session_rejected_total', { reason: 'unknown_key' });
        const retireOffsets = sgs.map((sg) => sg.logs().length);
        for (const d of dirs) await sealgateCli(['keys', 'retire', '--dir', d, OLD]);
        const retired = await Promise.all(sgs.map((sg, i) => waitForLogAfter(sg, retireOffsets[i], /key ring reloaded/, 6000)));
        for (const line of retired) assert.deepEqual(parseReload(line), { primary: NEW, kids: [NEW] }, line);

        // The old-key session is now refused as an unknown key by every instance ...
        for (const sg of sgs) {
          const r = await userWith(sg.url, oldCookie);
          assert.equal(r.status, 401);
          assert.deepEqual(r.body, { error: 'login_required' });
        }
        const unknownAfter = await sum('sealgate_session_rejected_total', { reason: 'unknown_key' });
        assert.deepEqual(unknownAfter.map((v, i) => v - unknownBefore[i]), [1, 1, 1], 'refused as "unknown key" once per instance');
        // ... and the session written after the promotion goes on, on every instance.
        for (const sg of sgs) assert.equal((await userWith(sg.url, newCookie)).status, 200, `new-key session on :${sg.port}${tail(sg)}`);
        for (let i = 0; i < 3; i++) assert.equal((await userWith(lb.url, newCookie)).status, 200);

        const rel = (ms) => `${((ms - oldLimitMs) / 1000).toFixed(1)} s`;
        const before = oldProbes.filter((p) => p.end < oldLimitMs);
        const afterLimit = oldProbes.filter((p) => p.start >= oldLimitMs);
        const lastOk = before.filter((p) => p.status === 200).at(-1);
        const first401 = oldProbes.find((p) => p.status === 401);
        t.diagnostic(`old-key session: ${oldProbes.length} probes, ${before.length} before its absolute limit `
          + `(statuses ${JSON.stringify(summarize(before).byStatus)}), last 200 at ${lastOk && rel(lastOk.end)}, first 401 at `
          + `${first401 && rel(first401.end)} (relative to the limit); limit ${rel(oldLimitMs)} = promotion + `
          + `${((oldLimitMs - tPromoted) / 1000).toFixed(1)} s; retired at limit + ${rel(retireAt)}; `
          + `refusals before the retirement ("expired"): ${JSON.stringify(expiredBefore)}`);
        assert.ok(before.length >= 10, `the old-key session was used along the way (${before.length} probes)`);
        assert.deepEqual(before.filter((p) => p.status !== 200), [], 'the old-key session failed before its absolute limit');
        assert.ok(lastOk && lastOk.start >= oldLimitMs - 2000, 'the old-key session worked until (nearly) its absolute limit');
        assert.ok(first401 && first401.end >= oldLimitMs, 'no 401 for the old-key session before its absolute limit');
        assert.ok(afterLimit.length >= 1 && afterLimit.every((p) => p.status === 401), 'after its absolute limit it is refused');
        assert.ok(expiredBefore.reduce((a, b) => a + b, 0) >= 1, 'before the retirement it was refused as expired, not as an unknown key');
      } finally {
        probing = false;
        await prober;
      }
    });

    test('a broken key file on reload is refused and logged; the instance keeps its ring and serves the session', async () => {
      const [A] = sgs;
      const r = await login({ bffUrl: lb.url, username: 'broken-ring-bea' });
      assert.equal(r.callbackResponse.status, 302);
      const cookie = r.jar.header(`${lb.url}/bff/user`);
      const failedBefore = (await metric(A.url, 'sealgate_key_reloads_total', { outcome: 'failed' })) ?? 0;
      const listed = (await sealgateCli(['keys', 'list', '--dir', dirs[0]])).trim().split('\n');
      const ring = { primary: listed.find((l) => l.endsWith('\tprimary')).split('\t')[0], kids: listed.map((l) => l.split('\t')[0]).sort() };

      const offset = A.logs().length;
      await fs.writeFile(path.join(dirs[0], 'broken.key'), 'this is not a key\n', { mode: 0o600 });
      const line = await waitForLogAfter(A, offset, /key ring reload refused/, 6000);
      assert.match(line, /broken\.key/, 'the refusal names the file');
      assert.doesNotMatch(A.logs().slice(offset), /key ring reloaded/);

      const res = await userWith(A.url, cookie);
      assert.equal(res.status, 200, `A dropped the session after a refused reload${tail(A)}`);
      assert.equal(res.body.sub, 'broken-ring-bea');
      assert.equal((await fetch(`${A.url}/readyz`)).status, 200);
      assert.ok((await metric(A.url, 'sealgate_key_reloads_total', { outcome: 'failed' })) >= Math.max(1, failedBefore + 1));
      for (let i = 0; i < 3; i++) assert.equal((await userWith(lb.url, cookie)).status, 200);
      // A new login sealed by the kept ring opens everywhere.
      const again = await login({ bffUrl: lb.url, username: 'broken-ring-ben' });
      const cookie2 = again.jar.header(`${lb.url}/bff/user`);
      for (const sg of sgs) assert.equal((await userWith(sg.url, cookie2)).status, 200);

      // Repaired: the next reload succeeds.
      const offset2 = A.logs().length;
      await fs.rm(path.join(dirs[0], 'broken.key'));
      const ok = await waitForLogAfter(A, offset2, /key ring reloaded/, 6000);
      const reloaded = parseReload(ok);
      assert.deepEqual({ primary: reloaded.primary, kids: reloaded.kids.sort() }, ring, `the same ring as before: ${ok}`);
      assert.equal((await userWith(A.url, cookie)).status, 200);
    });
  });
});

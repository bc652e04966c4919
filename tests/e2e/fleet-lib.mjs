// Helpers for fleet.test.mjs: a real load balancer (Debian's haproxy) in front of several
// sealgate processes, a bounded load generator, key-folder chores and the sealed-cookie header.
//
//   const lb = await startHaproxy({ servers: [{ name: 's1', port }], dir });
//   const load = startLoad({ url: `${lb.url}/bff/user`, headers: () => ({ cookie, 'x-csrf': '1' }) });
//   ...; const results = await load.stop();
//   await lb.stop();
//
// Every process started here is stopped by its PID (`stop()`, and a last-resort SIGKILL on
// exit of the test process); every wait is bounded in time.

import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

import { sealgateBin } from './sealgate.mjs';

export function haproxyBin() {
  if (process.env.HAPROXY) return process.env.HAPROXY;
  for (const p of ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy', '/usr/bin/haproxy', '/usr/local/bin/haproxy']) {
    if (existsSync(p)) return p;
  }
  return undefined;
}

// Children still running when the test process exits are killed by PID, whatever happened.
const children = new Set();
process.once('exit', () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try { child.kill('SIGKILL'); } catch { /* already gone */ }
    }
  }
});

// ---- haproxy ---------------------------------------------------------------------------------

/** The haproxy configuration used by the fleet tests (see fleet.test.mjs for why each line). */
export function haproxyConfig({ port, servers, dir }) {
  return `global
    log stdout format raw local0 info
    stats socket ${path.join(dir, 'admin.sock')} mode 600 level admin
    maxconn 1024

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # A new backend connection for every request: each request is routed on its own, so a
    # dead or draining instance is seen at once (keep-alive towards the client stays).
    option http-server-close
    # Retries go to another server (every retry, not only the last one).
    option redispatch 1
    retries 3
    retry-on conn-failure empty-response response-timeout
    timeout connect 1s
    timeout client 15s
    timeout server 5s
    timeout http-request 5s
    timeout http-keep-alive 5s
    timeout check 1s

frontend fleet
    bind 127.0.0.1:${port}
    default_backend sealgates

backend sealgates
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # Which instance answered, and after how many retries: for the test's bookkeeping only.
    http-response set-header X-Fleet-Server %s
    http-response set-header X-Fleet-Retries %rc
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
${servers.map((s) => `    server ${s.name} 127.0.0.1:${s.port} check`).join('\n')}
`;
}

/** One command on haproxy's admin socket (e.g. 'show stat'); bounded to 3 s. */
export function haproxyCommand(sock, command) {
  return new Promise((resolve, reject) => {
    const c = net.connect({ path: sock });
    let out = '';
    const timer = setTimeout(() => { c.destroy(); reject(new Error(`haproxy socket: no answer to ${command}`)); }, 3000);
    c.on('connect', () => c.end(`${command}\n`));
    c.on('data', (d) => { out += d; });
    c.on('error', (e) => { clearTimeout(timer); reject(e); });
    c.on('close', () => { clearTimeout(timer); resolve(out); });
  });
}

/**
 * Start `haproxy -f cfg -db` with the configuration above, on `port`, in `dir`. Waits until
 * every server is UP. Returns { url, port, proc, config, logs(), serverStatus(), waitStatus(), stop() }.
 */
export async function startHaproxy({ port, servers, dir, timeoutMs = 10_000 }) {
  const bin = haproxyBin();
  if (!bin) throw new Error('haproxy not found (apt-get install -y haproxy, or HAPROXY=/path)');
  await fs.mkdir(dir, { recursive: true });
  const cfgPath = path.join(dir, 'haproxy.cfg');
  const config = haproxyConfig({ port, servers, dir });
  await fs.writeFile(cfgPath, config);
  const check = await promisify(execFile)(bin, ['-c', '-f', cfgPath], { timeout: 10_000 }).catch((e) => e);
  if (check.code) throw new Error(`haproxy refused its configuration:\n${check.stderr}\n${config}`);

  const proc = spawn(bin, ['-f', cfgPath, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let buffer = '';
  const capture = (chunk) => {
    buffer += chunk.toString();
    if (buffer.length > 16 * 1024 * 1024) buffer = buffer.slice(-16 * 1024 * 1024);
    if (process.env.DEBUG) process.stderr.write(`[haproxy] ${chunk}`);
  };
  proc.stdout.on('data', capture);
  proc.stderr.on('data', capture);
  let exit;
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => { exit = { code, signal }; children.delete(proc); resolve(exit); });
    proc.once('error', (err) => { exit = { code: null, signal: null, error: err.message }; children.delete(proc); resolve(exit); });
  });
  const sock = path.join(dir, 'admin.sock');

  /** { s1: 'UP', s2: 'DOWN', ... } from `show stat`. */
  async function serverStatus() {
    const csv = await haproxyCommand(sock, 'show stat');
    const lines = csv.split('\n').filter(Boolean);
    const head = lines[0].replace(/^# /, '').split(',');
    const iSv = head.indexOf('svname');
    const iStatus = head.indexOf('status');
    const out = {};
    for (const line of lines.slice(1)) {
      const f = line.split(',');
      if (f[0] === 'sealgates' && f[iSv] !== 'BACKEND') out[f[iSv]] = f[iStatus];
    }
    return out;
  }

  /** Waits (bounded) until `pred(status)` holds; returns the status. */
  async function waitStatus(pred, ms, what) {
    const deadline = Date.now() + ms;
    let last;
    while (Date.now() < deadline) {
      if (exit) throw new Error(`haproxy exited (${JSON.stringify(exit)}) while waiting for ${what}\n${buffer.slice(-3000)}`);
      try {
        last = await serverStatus();
        if (pred(last)) return last;
      } catch (e) {
        last = e.message;
      }
      await sleep(100);
    }
    throw new Error(`haproxy: ${what} not reached in ${ms} ms (last: ${JSON.stringify(last)})`);
  }

  async function stop() {
    if (!exit) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => { if (!exit) proc.kill('SIGKILL'); }, 3000);
      await exited;
      clearTimeout(timer);
    }
    return exit;
  }

  try {
    await waitStatus((s) => servers.every((x) => s[x.name] === 'UP'), timeoutMs, 'every server UP');
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n--- haproxy output ---\n${buffer.slice(-4000)}`);
  }
  return { url: `http://127.0.0.1:${port}`, port, proc, config, logs: () => buffer, serverStatus, waitStatus, stop };
}

// ---- load --------------------------------------------------------------------------------------

/**
 * `concurrency` workers, each sending one request after the other until stop(), `maxMs` or
 * `maxRequests` (whichever comes first). Each request has its own timeout. Every request is
 * recorded: { worker, start, end, status (0 = no answer), error, server, retries, setCookies }.
 * `send(signal)` does the request and returns the Response (default: fetch(url, {headers})).
 */
export function startLoad({
  url, headers = () => ({}), send, concurrency = 8, maxMs = 20_000, maxRequests = 20_000, timeoutMs = 5000,
}) {
  const results = [];
  let started = 0;
  let stopping = false;
  const t0 = Date.now();
  const doSend = send ?? ((signal) => fetch(url, { headers: headers(), signal }));
  async function worker(w) {
    while (!stopping && Date.now() - t0 < maxMs && started < maxRequests) {
      started++;
      const r = { worker: w, start: Date.now(), end: 0, status: 0, error: undefined, server: undefined, retries: undefined, setCookies: [] };
      try {
        const res = await doSend(AbortSignal.timeout(timeoutMs));
        await res.arrayBuffer();
        r.status = res.status;
        r.server = res.headers.get('x-fleet-server') ?? undefined;
        r.retries = res.headers.get('x-fleet-retries') ?? undefined;
        r.setCookies = res.headers.getSetCookie();
      } catch (e) {
        r.error = e.cause?.code ?? e.cause?.message ?? e.name ?? String(e);
      }
      r.end = Date.now();
      results.push(r);
    }
  }
  const done = Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  return {
    results,
    t0,
    async stop() {
      stopping = true;
      await done;
      return results;
    },
    done,
  };
}

/** Counts of a list of load results: { total, ok, byStatus: {200: n, ...}, errors: {code: n}, byServer }. */
export function summarize(results) {
  const byStatus = {};
  const errors = {};
  const byServer = {};
  for (const r of results) {
    if (r.error) errors[r.error] = (errors[r.error] ?? 0) + 1;
    else byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    if (r.server) byServer[r.server] = (byServer[r.server] ?? 0) + 1;
  }
  const retried = results.filter((r) => r.retries && r.retries !== '0').length;
  return { total: results.length, ok: byStatus[200] ?? 0, byStatus, errors, byServer, retried };
}

export const failed = (r) => r.error !== undefined || r.status !== 200;

// ---- sealed cookies ------------------------------------------------------------------------------

/**
 * The key id a sealed cookie value was sealed under. Chunk 0 of a sealed cookie is
 * "<count>.<base64url>", and the envelope starts version[1] | kid_len[1] | kid (src/seal.rs).
 */
export function sealedKid(chunk0Value) {
  const part = chunk0Value.includes('.') ? chunk0Value.slice(chunk0Value.indexOf('.') + 1) : chunk0Value;
  const head = Buffer.from(part.slice(0, 24), 'base64url');
  if (head[0] !== 1) throw new Error(`not a version-1 envelope: ${chunk0Value.slice(0, 30)}`);
  return head.subarray(2, 2 + head[1]).toString('latin1');
}

/** From Set-Cookie header values: the kid of the cookie `name` (e.g. 'sealgate.0'), if set with a value. */
export function kidInSetCookie(setCookies, name = 'sealgate.0') {
  for (const h of setCookies) {
    const pair = h.split(';')[0];
    const eq = pair.indexOf('=');
    if (pair.slice(0, eq).trim() === name && pair.slice(eq + 1).trim()) return sealedKid(pair.slice(eq + 1).trim());
  }
  return undefined;
}

/** From a Cookie request header: the kid of the cookie `name`. */
export function kidInCookieHeader(cookieHeader, name = 'sealgate.0') {
  for (const part of cookieHeader.split(';')) {
    const eq = part.indexOf('=');
    if (part.slice(0, eq).trim() === name) return sealedKid(part.slice(eq + 1).trim());
  }
  return undefined;
}

// ---- key folders and logs --------------------------------------------------------------------------

/** `sealgate <args>` (keys promote/retire/list ...); resolves with stdout, rejects with stderr. */
export async function sealgateCli(args, bin = sealgateBin()) {
  try {
    const { stdout } = await promisify(execFile)(bin, args, { timeout: 10_000 });
    return stdout;
  } catch (e) {
    throw new Error(`sealgate ${args.join(' ')} failed (${e.code}): ${e.stderr || e.message}`);
  }
}

/** Copies every non-dot file of `from` into a new folder `to` (0700), files 0600. */
export async function copyRing(from, to) {
  await fs.mkdir(to, { recursive: true, mode: 0o700 });
  for (const name of await fs.readdir(from)) {
    if (name.startsWith('.')) continue;
    await fs.writeFile(path.join(to, name), await fs.readFile(path.join(from, name)), { mode: 0o600 });
    await fs.chmod(path.join(to, name), 0o600);
  }
}

/** Puts `bytes` into `dir/name` atomically (a dot-file, 0600, renamed into place). */
export async function installFile(dir, name, bytes) {
  const tmp = path.join(dir, `.${name}.tmp`);
  await fs.writeFile(tmp, bytes, { mode: 0o600 });
  await fs.chmod(tmp, 0o600);
  await fs.rename(tmp, path.join(dir, name));
}

/** Waits (bounded) until sealgate's logs after `offset` match `re`; returns the matching line. */
export async function waitForLogAfter(sg, offset, re, ms, what = String(re)) {
  const deadline = Date.now() + ms;
  for (;;) {
    const text = sg.logs().slice(offset);
    const line = text.split('\n').find((l) => re.test(l));
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`sealgate :${sg.port} did not log ${what} within ${ms} ms\n--- its logs since ---\n${text.slice(-3000)}`);
    await sleep(100);
  }
}

/** Parses a "key ring reloaded" line: { primary, kids }. */
export function parseReload(line) {
  const primary = /primary=(\S+)/.exec(line)?.[1];
  const kids = JSON.parse(/kids=(\[[^\]]*\])/.exec(line)?.[1] ?? '[]');
  return { primary, kids };
}

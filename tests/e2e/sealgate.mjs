// Start and stop a real sealgate process for the end-to-end tests.
//
//   const sg = await startSealgate({ issuer: op.issuer, clientId: 'bff', clientSecret: 's' });
//   ... fetch(sg.url + '/bff/user') ...; assert.match(sg.logs(), /login/);
//   await sg.stop();
//
// Each instance gets its own temporary folder (key ring + config file) and a free port on
// 127.0.0.1. The binary is <repo>/target/debug/sealgate unless SEALGATE_BIN (or `bin`) says
// otherwise.

import { spawn, execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const REPO_ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));

export function sealgateBin() {
  return process.env.SEALGATE_BIN || path.join(REPO_ROOT, 'target', 'debug', 'sealgate');
}

// A port that was free a moment ago (listen on 0, read it, close). Another process could take
// it in between; on a test machine that is rare enough.
export async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

// ---- a tiny TOML writer (strings, numbers, booleans, arrays, tables, arrays of tables) ----

const tomlKey = (k) => (/^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k));
const isTable = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isTableArray = (v) => Array.isArray(v) && v.length > 0 && v.every(isTable);

function tomlValue(v) {
  if (typeof v === 'string') return JSON.stringify(v); // JSON string escapes are valid TOML
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  throw new Error(`cannot write ${typeof v} as TOML`);
}

export function toToml(obj, prefix = '') {
  const lines = [];
  const nested = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null) continue;
    if (isTable(v) || isTableArray(v)) nested.push([k, v]);
    else lines.push(`${tomlKey(k)} = ${tomlValue(v)}`);
  }
  for (const [k, v] of nested) {
    const name = prefix ? `${prefix}.${tomlKey(k)}` : tomlKey(k);
    if (isTable(v)) lines.push('', `[${name}]`, toToml(v, name));
    else for (const item of v) lines.push('', `[[${name}]]`, toToml(item, name));
  }
  return lines.join('\n').replace(/^\n+/, '');
}

function merge(base, over) {
  const out = { ...base };
  for (const [k, v] of Object.entries(over ?? {})) out[k] = isTable(v) && isTable(base[k]) ? merge(base[k], v) : v;
  return out;
}

// ---- the process ----------------------------------------------------------------------------

// `sealgate keygen --dir DIR`; returns the printed key id.
export async function keygen(dir, bin = sealgateBin()) {
  const { stdout } = await promisify(execFile)(bin, ['keygen', '--dir', dir], { timeout: 10_000 });
  return stdout.trim();
}

// `sealgate client-key --out FILE` (issue #14): creates the P-256 client key for
// private_key_jwt; returns the public JWK it printed (one JSON line).
export async function clientKeygen(file, bin = sealgateBin()) {
  const { stdout } = await promisify(execFile)(bin, ['client-key', '--out', file], { timeout: 10_000 });
  const lines = stdout.trim().split('\n');
  if (lines.length !== 1) throw new Error(`sealgate client-key printed ${lines.length} lines, not one: ${stdout}`);
  return JSON.parse(lines[0]);
}

async function waitFor200(url, deadline, exited) {
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (exited()) return `the process exited (${exited()})`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return undefined;
      last = `status ${res.status}`;
    } catch (err) {
      last = err.cause?.code ?? err.message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return `no 200 from ${url} in time (last: ${last})`;
}

/**
 * Start `sealgate serve` against `issuer`.
 *
 * config: merged over the default configuration (e.g. { session: { idle: '5s' }, routes: [...] },
 *         or { store: { url: 'redis://127.0.0.1:PORT', prefix: 'x:' } } for the shared store).
 * extraToml: raw TOML appended after everything else (only whole tables make sense there).
 * env: extra environment (SEALGATE_* variables of the parent environment are NOT inherited, so
 *      a developer's shell cannot change what the test runs).
 * waitReady: also wait for /readyz 200 (default true); /healthz 200 is always awaited.
 * port: where sealgate listens (listen and public_url follow); default a free port.
 * clientAuth, clientKey, par, dpop: [oidc] client_auth, client_key (a PEM file, see
 *      clientKeygen), par ("auto" | "required" | "off"), dpop (boolean); unset ones are not
 *      written (sealgate's defaults). With clientAuth "private_key_jwt" no client_secret is
 *      written unless clientSecret is given explicitly.
 *
 * @returns {Promise<{ url: string, port: number, proc: import('node:child_process').ChildProcess,
 *   dir: string, configPath: string, keysDir: string, kid: string, logs(): string,
 *   waitForLog(re: RegExp, timeoutMs?: number): Promise<string>,
 *   stop(): Promise<{ code: number|null, signal: string|null }> }>}
 */
export async function startSealgate({
  issuer,
  clientId = 'bff',
  clientSecret,
  config = {},
  extraToml = '',
  env = {},
  waitReady = true,
  timeoutMs = 10_000,
  bin = sealgateBin(),
  port, // default: a free port; pass one when the provider must know the redirect URI first
  clientAuth,
  clientKey,
  par,
  dpop,
} = {}) {
  port ??= await freePort();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sealgate-e2e-'));
  const keysDir = path.join(dir, 'keys');
  const configPath = path.join(dir, 'sealgate.toml');
  const url = `http://127.0.0.1:${port}`;

  let kid;
  try {
    kid = await keygen(keysDir, bin);
  } catch (err) {
    await fs.rm(dir, { recursive: true, force: true });
    throw new Error(`sealgate keygen failed (${bin}): ${err.stderr || err.message}`);
  }

  const settings = merge({
    listen: `127.0.0.1:${port}`,
    public_url: url,
    oidc: {
      issuer,
      client_id: clientId,
      client_secret: clientSecret ?? (clientAuth === 'private_key_jwt' ? undefined : 'bff-secret-for-tests-only'),
      client_auth: clientAuth,
      client_key: clientKey,
      par,
      dpop,
      allow_insecure_http: true,
    },
    cookies: { secure: false },
    keys: { dir: keysDir },
    session: { absolute: '12h', idle: '1h' },
  }, config);
  await fs.writeFile(configPath, `${toToml(settings)}\n${extraToml ? `\n${extraToml}\n` : ''}`);

  const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SEALGATE_')));
  const proc = spawn(bin, ['serve', '--config', configPath], {
    env: { ...childEnv, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  // stdout and stderr, interleaved in arrival order, capped at the last 8 MB.
  let buffer = '';
  const listeners = new Set();
  const capture = (chunk) => {
    buffer += chunk.toString();
    if (buffer.length > 8 * 1024 * 1024) buffer = buffer.slice(-8 * 1024 * 1024);
    for (const l of listeners) l();
    if (process.env.DEBUG) process.stderr.write(`[sealgate:${port}] ${chunk}`);
  };
  proc.stdout.on('data', capture);
  proc.stderr.on('data', capture);

  let exit; // set once the process has exited
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exit = { code, signal };
      for (const l of listeners) l();
      resolve(exit);
    });
    proc.once('error', (err) => { // e.g. ENOENT: no binary
      exit = { code: null, signal: null, error: err.message };
      resolve(exit);
    });
  });

  async function stop() {
    if (!exit) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => { if (!exit) proc.kill('SIGKILL'); }, 5000);
      await exited;
      clearTimeout(timer);
    }
    if (!process.env.KEEP_TMP) await fs.rm(dir, { recursive: true, force: true });
    return exit;
  }

  function waitForLog(re, waitMs = 5000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = re.exec(buffer);
        if (m) { done(); resolve(m[0]); } else if (exit) { done(); reject(new Error(`sealgate exited before logging ${re}`)); }
      };
      const timer = setTimeout(() => { done(); reject(new Error(`sealgate did not log ${re} within ${waitMs} ms`)); }, waitMs);
      const done = () => { clearTimeout(timer); listeners.delete(check); };
      listeners.add(check);
      check();
    });
  }

  const deadline = Date.now() + timeoutMs;
  const describeExit = () => exit && (exit.error ?? `code ${exit.code}, signal ${exit.signal}`);
  let problem = await waitFor200(`${url}/healthz`, deadline, describeExit);
  if (!problem && waitReady) problem = await waitFor200(`${url}/readyz`, deadline, describeExit);
  if (problem) {
    const written = await fs.readFile(configPath, 'utf8');
    await stop();
    throw new Error(`sealgate did not start: ${problem}\n--- config ---\n${written}\n--- logs ---\n${buffer}`);
  }

  return { url, port, proc, dir, configPath, keysDir, kid, logs: () => buffer, waitForLog, stop };
}

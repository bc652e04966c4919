// Real Redis for the shared-store tests: Debian's redis-server, started here on 127.0.0.1
// with its own folder, as a standalone server (optionally with the append-only file) or as a
// three-node Cluster (`redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`).
//
//   const r = await startRedis({ dir, aof: true });   // r.url = redis://127.0.0.1:PORT
//   await r.stop(); await r.start();                  // the same port and folder again
//   const c = await startCluster({ dir });            // c.url = redis+cluster://h:p1,h:p2,h:p3
//   await c.stop();
//
// Commands go over a tiny RESP2 client written here (`redisCommand`), so no npm module is
// needed. Every process started here is stopped by its PID (`stop()`, and a last-resort
// SIGKILL when the test process exits); every wait is bounded in time.

import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

function findBin(envName, names) {
  if (process.env[envName]) return process.env[envName];
  for (const dir of ['/usr/bin', '/usr/local/bin', '/usr/sbin']) {
    for (const name of names) if (existsSync(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
}

/** redis-server (REDIS_SERVER=/path overrides), or undefined. */
export const redisServerBin = () => findBin('REDIS_SERVER', ['redis-server']);
/** redis-cli (REDIS_CLI=/path overrides), or undefined. */
export const redisCliBin = () => findBin('REDIS_CLI', ['redis-cli']);

// Children still running when the test process exits are killed by PID, whatever happened.
const children = new Set();
process.once('exit', () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try { child.kill('SIGKILL'); } catch { /* already gone */ }
    }
  }
});

// ---- RESP2 (https://redis.io/docs/latest/develop/reference/protocol-spec/) --------------------

const encode = (args) => Buffer.concat([
  Buffer.from(`*${args.length}\r\n`),
  ...args.map((a) => {
    const b = Buffer.from(String(a));
    return Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n')]);
  }),
]);

// One reply from buf at off: { value, end } or undefined when incomplete. Errors are returned
// as Error values (not thrown), so that a caller can tell -LOADING from an answer.
function parseReply(buf, off = 0) {
  const eol = buf.indexOf('\r\n', off);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[off]);
  const line = buf.toString('utf8', off + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+': return { value: line, end: next };
    case '-': return { value: new Error(line), end: next };
    case ':': return { value: Number(line), end: next };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, end: next };
      if (buf.length < next + len + 2) return undefined;
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      const items = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, at);
        if (!r) return undefined;
        items.push(r.value);
        at = r.end;
      }
      return { value: items, end: at };
    }
    default: throw new Error(`unexpected RESP reply type ${JSON.stringify(type)}`);
  }
}

/**
 * Sends one command to 127.0.0.1:port on a connection of its own; resolves with the reply
 * (an Error value for an error reply), rejects when there is no answer within `timeoutMs`.
 */
export function redisCommand(port, args, { timeoutMs = 2000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`redis :${port}: no answer to ${args[0]} in ${timeoutMs} ms`)); }, timeoutMs);
    const finish = (fn, v) => { clearTimeout(timer); socket.destroy(); fn(v); };
    socket.on('connect', () => socket.write(encode(args)));
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      try {
        const r = parseReply(buf);
        if (r) finish(resolve, r.value);
      } catch (e) {
        finish(reject, e);
      }
    });
    socket.on('error', (e) => finish(reject, e));
    socket.on('close', () => finish(reject, new Error(`redis :${port}: connection closed before the reply`)));
  });
}

/** Resolves once PING answers PONG (not -LOADING), at most `ms`. */
async function waitPong(port, ms, exited) {
  const deadline = Date.now() + ms;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (exited()) throw new Error(`redis-server :${port} exited (${exited()})`);
    try {
      const r = await redisCommand(port, ['PING'], { timeoutMs: 500 });
      if (r === 'PONG') return;
      last = r instanceof Error ? r.message : String(r);
    } catch (e) {
      last = e.code ?? e.message;
    }
    await sleep(50);
  }
  throw new Error(`redis-server :${port} did not answer PING in ${ms} ms (last: ${last})`);
}

// ---- ports -------------------------------------------------------------------------------------

const canBind = (port) => new Promise((resolve) => {
  const srv = net.createServer();
  srv.once('error', () => resolve(false));
  srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
});

/**
 * A port that was free a moment ago and whose cluster bus port (port + 10000, the Redis
 * Cluster rule) was too; below the ephemeral range so that neither is handed out meanwhile.
 */
export async function freeRedisPort({ bus = false } = {}) {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await canBind(port) && (!bus || await canBind(port + 10000))) return port;
  }
  throw new Error('no free port pair for redis-server');
}

// ---- one server --------------------------------------------------------------------------------

/**
 * Starts `redis-server` on 127.0.0.1:port (default: a free port) with `dir` as its folder
 * (created). `aof`: appendonly with appendfsync always (every acknowledged write is on disk,
 * so a restart keeps it); without it nothing is persisted. `cluster`: cluster-enabled.
 * Returns { port, url, dir, proc, logs(), start(), stop(), kill(), command(...args) }; after
 * stop() (SIGTERM) or kill() (SIGKILL), start() runs it again on the same port and folder.
 */
export async function startRedis({ dir, port, aof = false, cluster = false, timeoutMs = 10_000 }) {
  const bin = redisServerBin();
  if (!bin) throw new Error('redis-server not found (apt-get install -y redis-server, or REDIS_SERVER=/path)');
  port ??= await freeRedisPort({ bus: cluster });
  await fs.mkdir(dir, { recursive: true });
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--daemonize', 'no',
    '--save', '',
    '--appendonly', aof ? 'yes' : 'no',
    '--appendfsync', 'always',
    '--logfile', '',
    ...(cluster ? ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'] : []),
  ];

  const r = {
    port, url: `redis://127.0.0.1:${port}`, dir, proc: undefined, exit: undefined,
    logs: () => buffer,
    command: (...a) => redisCommand(port, a),
    start, stop, kill,
  };
  let buffer = '';
  let exited;

  async function start() {
    if (r.proc && !r.exit) throw new Error(`redis-server :${port} is already running`);
    r.exit = undefined;
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    r.proc = proc;
    children.add(proc);
    const capture = (chunk) => {
      buffer += chunk.toString();
      if (buffer.length > 1024 * 1024) buffer = buffer.slice(-1024 * 1024);
      if (process.env.DEBUG) process.stderr.write(`[redis:${port}] ${chunk}`);
    };
    proc.stdout.on('data', capture);
    proc.stderr.on('data', capture);
    exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => { r.exit = { code, signal }; children.delete(proc); resolve(r.exit); });
      proc.once('error', (err) => { r.exit = { code: null, signal: null, error: err.message }; children.delete(proc); resolve(r.exit); });
    });
    try {
      await waitPong(port, timeoutMs, () => r.exit && JSON.stringify(r.exit));
    } catch (e) {
      await kill();
      throw new Error(`${e.message}\n--- redis-server output ---\n${buffer.slice(-3000)}`);
    }
  }

  async function end(signal) {
    if (r.proc && !r.exit) {
      r.proc.kill(signal);
      const timer = setTimeout(() => { if (!r.exit) r.proc.kill('SIGKILL'); }, 5000);
      await exited;
      clearTimeout(timer);
    }
    return r.exit;
  }
  /** SIGTERM: redis-server flushes the append-only file and exits. */
  function stop() { return end('SIGTERM'); }
  /** SIGKILL: a crash (with aof, acknowledged writes are on disk all the same). */
  function kill() { return end('SIGKILL'); }

  await start();
  return r;
}

/** The contents of the append-only files (Redis 7: appendonlydir/*), '' when there are none. */
export async function aofText(dir) {
  const aofDir = path.join(dir, 'appendonlydir');
  const names = await fs.readdir(aofDir).catch(() => []);
  const parts = await Promise.all(names.map((n) => fs.readFile(path.join(aofDir, n), 'latin1')));
  return parts.join('\n');
}

// ---- a cluster -----------------------------------------------------------------------------------

/**
 * Three cluster-enabled redis-servers (each its own folder under `dir`, with aof), joined by
 * `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`; resolves once every node
 * reports cluster_state:ok. Returns { nodes, url (redis+cluster://...), stop() }.
 */
export async function startCluster({ dir, timeoutMs = 20_000 }) {
  const cli = redisCliBin();
  if (!cli) throw new Error('redis-cli not found (apt-get install -y redis-tools, or REDIS_CLI=/path)');
  const nodes = [];
  try {
    for (let i = 0; i < 3; i++) nodes.push(await startRedis({ dir: path.join(dir, `node-${i}`), aof: true, cluster: true }));
    const addrs = nodes.map((n) => `127.0.0.1:${n.port}`);
    await promisify(execFile)(cli, ['--cluster', 'create', ...addrs, '--cluster-replicas', '0', '--cluster-yes'], { timeout: 15_000 })
      .catch((e) => { throw new Error(`redis-cli --cluster create failed: ${e.stderr || e.stdout || e.message}`); });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const infos = await Promise.all(nodes.map((n) => n.command('CLUSTER', 'INFO').catch((e) => e.message)));
      if (infos.every((s) => typeof s === 'string' && /cluster_state:ok/.test(s))) break;
      if (Date.now() > deadline) throw new Error(`the cluster never reached cluster_state:ok: ${JSON.stringify(infos)}`);
      await sleep(100);
    }
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  }
  return {
    nodes,
    url: `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
    stop: () => Promise.all(nodes.map((n) => n.stop())),
  };
}

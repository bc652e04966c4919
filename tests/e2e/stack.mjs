// Small helpers shared by the sealgate test files (bff, hostile, browser): start the real
// provider with one or more real sealgates, record what sealgate sent to the "browser", look
// for tokens in it, read cookies and metrics.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { CookieJar, parseSetCookie } from './browserless.mjs';
import { startProvider } from './op.mjs';
import { freePort, startSealgate } from './sealgate.mjs';

export const CLIENT_SECRET = 'e2e-client-secret-for-tests-only';

const isTable = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
export function merge(base, over) {
  const out = { ...base };
  for (const [k, v] of Object.entries(over ?? {})) out[k] = isTable(v) && isTable(base[k]) ? merge(base[k], v) : v;
  return out;
}

/**
 * The real provider plus one sealgate per entry of `sealgates` ({ config, host, waitReady }).
 * Ports are chosen first so that the provider knows every redirect URI. `host` is the host of
 * public_url (default 127.0.0.1; the browser tests use localhost); sealgate always listens on
 * 127.0.0.1. Returns { op, sgs, sg (= sgs[0]), stop() }; each sg also has `publicUrl`.
 */
export async function startStack({ op: opOptions = {}, sealgates = [{}] } = {}) {
  const ports = await Promise.all(sealgates.map(() => freePort()));
  const publicUrls = sealgates.map((s, i) => `http://${s.host ?? '127.0.0.1'}:${ports[i]}`);
  const op = await startProvider({
    clientId: 'bff',
    clientSecret: CLIENT_SECRET,
    redirectUris: publicUrls.map((u) => `${u}/bff/callback`),
    postLogoutRedirectUris: publicUrls.map((u) => `${u}/`),
    ...opOptions,
  });
  const started = await Promise.allSettled(sealgates.map((s, i) => startSealgate({
    issuer: op.issuer,
    clientSecret: CLIENT_SECRET,
    port: ports[i],
    config: merge({ public_url: publicUrls[i] }, s.config),
    env: s.env ?? {},
    waitReady: s.waitReady ?? true,
  })));
  const sgs = started.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const stop = async () => {
    await Promise.all(sgs.map((sg) => sg.stop()));
    await op.close();
  };
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }
  sgs.forEach((sg, i) => { sg.publicUrl = publicUrls[i]; });
  return { op, sgs, sg: sgs[0], stop };
}

// ---- recording what the browser sees ---------------------------------------------------------

/** Records every answer of the watched origins: { method, url, status, headers: [[k, v]], body }. */
export class Recorder {
  constructor(...origins) {
    this.origins = new Set(origins.map((o) => new URL(o).origin));
    this.entries = [];
    this.pending = [];
  }

  watch(url) { this.origins.add(new URL(url).origin); }

  record(method, url, res) {
    if (!this.origins.has(new URL(url).origin)) return;
    const entry = { method, url: String(url), status: res.status, headers: [...res.headers], body: '' };
    this.entries.push(entry);
    // getSetCookie keeps the Set-Cookie headers apart ([...headers] does too in undici, but
    // be explicit: every cookie value must be looked at on its own).
    entry.headers = entry.headers.filter(([k]) => k !== 'set-cookie')
      .concat(res.headers.getSetCookie().map((v) => ['set-cookie', v]));
    this.pending.push(res.clone().text().then((b) => { entry.body = b; }, () => {}));
  }

  /** fetch without a jar, recorded. */
  async fetch(url, init = {}) {
    const res = await fetch(url, { redirect: 'manual', ...init });
    this.record(init.method ?? 'GET', url, res);
    return res;
  }

  jar() { return new RecordingJar(this); }

  async settled() {
    await Promise.all(this.pending);
    return this.entries;
  }
}

/** A cookie jar whose every answer from a watched origin is recorded. */
export class RecordingJar extends CookieJar {
  constructor(recorder) {
    super();
    this.recorder = recorder;
  }

  async fetch(url, init = {}) {
    const res = await super.fetch(url, init);
    this.recorder?.record(init.method ?? 'GET', url, res);
    return res;
  }
}

// Strings that betray a token: the token itself, each part of a JWT, and the token as it would
// look inside a base64/base64url stream (three alignments, the unstable last characters cut).
export function tokenNeedles(issued) {
  const needles = [];
  const add = (label, s) => { if (s && s.length >= 16) needles.push({ label, needle: s }); };
  issued.forEach((set, i) => {
    for (const kind of ['access_token', 'refresh_token', 'id_token']) {
      const t = set[kind];
      if (!t) continue;
      const label = `${kind} #${i}`;
      add(label, t);
      if (kind === 'id_token') {
        const [, payload, signature] = t.split('.');
        add(`${label} (payload)`, payload);
        add(`${label} (signature)`, signature);
      }
      for (let k = 0; k < 3; k++) {
        const bytes = Buffer.from(t.slice(k));
        add(`${label} (base64url)`, bytes.toString('base64url').slice(0, -4));
        add(`${label} (base64)`, bytes.toString('base64').replace(/=+$/, '').slice(0, -4));
      }
    }
  });
  return needles;
}

/**
 * Where any needle occurs in the recorded answers: [{ where, label }]. `allow(entry, label, part)`
 * may exempt an answer from a needle (e.g. the id_token_hint of the logout redirect).
 */
export function findLeaks(entries, needles, allow = () => false) {
  const leaks = [];
  for (const e of entries) {
    const parts = [...e.headers.map(([k, v]) => [`header ${k}`, v]), ['body', e.body]];
    for (const [part, text] of parts) {
      for (const { label, needle } of needles) {
        if (text.includes(needle) && !allow(e, label, part)) leaks.push({ where: `${e.method} ${e.url} -> ${e.status} ${part}`, label });
      }
    }
  }
  return leaks;
}

// ---- cookies -----------------------------------------------------------------------------------

export const SESSION_COOKIE = /^(__Host-Http-)?sealgate\.\d+$/;
export const PROFILE_COOKIE = /^(__Secure-)?sealgate-user\.\d+$/;
export const TX_COOKIE = /^(__Host-Http-)?sealgate-tx-[A-Za-z0-9_-]{8}\.0$/;
export const isSessionOrProfile = (name) => SESSION_COOKIE.test(name) || PROFILE_COOKIE.test(name);

/** The Set-Cookie headers of a response, parsed: [{ name, value, maxAge, path, ... }]. */
export function setCookies(res, url) {
  return res.headers.getSetCookie().map((h) => {
    const { cookie, error } = parseSetCookie(h, url);
    return { ...cookie, error };
  });
}

/** Asserts that `res` sets no session or profile cookie that a browser would keep. */
export function assertNoSessionSet(res, url, context = '') {
  const kept = setCookies(res, url).filter((c) => isSessionOrProfile(c.name) && !(c.maxAge <= 0));
  assert.deepEqual(kept.map((c) => c.raw), [], `a session cookie was set ${context}`);
}

/** The jar's sealgate cookies for the origin of `url`, by kind. */
export function jarCookies(jar, url) {
  const all = jar.all(url);
  return {
    session: all.filter((c) => SESSION_COOKIE.test(c.name)),
    profile: all.filter((c) => PROFILE_COOKIE.test(c.name)),
    tx: all.filter((c) => TX_COOKIE.test(c.name)),
  };
}

// ---- misc ----------------------------------------------------------------------------------------

/** The value of one Prometheus sample (labels must match exactly as given), or undefined. */
export async function metric(baseUrl, name, labels = {}) {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === String(v))) return Number(m[3]);
  }
  return undefined;
}

/** Rejects when `promise` takes longer than `ms`. */
export async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms); });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `fn` until it returns a truthy value, at most `ms`. */
export async function waitUntil(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

export const stateOf = (authorizeUrl) => new URL(authorizeUrl).searchParams.get('state');

// Helpers for proxy.test.mjs: a minimal WebSocket client (RFC 6455, by hand), a sampler of a
// process's resident memory, a raw node:http request, and a scan for tokens in answers.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';

import { FrameParser, encodeFrame, wsAccept } from './upstream.mjs';

/**
 * Open a WebSocket handshake to `url` (ws:// or http://) with extra `headers` (Origin,
 * Cookie, ...). Resolves once the answer head (and, for a non-101, its body) has arrived:
 * { status, headers, body, accepted, send(text), receive(): Promise<{ opcode, text }>, close() }.
 */
export function wsConnect(url, { headers = {}, timeoutMs = 5000 } = {}) {
  const u = new URL(url);
  const key = crypto.randomBytes(16).toString('base64');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no WebSocket handshake answer from ${url} within ${timeoutMs} ms`));
    }, timeoutMs);
    let buf = Buffer.alloc(0);
    let head;
    const messages = [];
    const waiters = [];
    let closed = false;
    const parser = new FrameParser((f) => {
      const m = { opcode: f.opcode, text: f.payload.toString('utf8'), masked: f.masked };
      const w = waiters.shift();
      if (w) w.resolve(m);
      else messages.push(m);
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      for (const w of waiters.splice(0)) w.reject(err);
      reject(err);
    });
    socket.on('close', () => {
      closed = true;
      for (const w of waiters.splice(0)) w.reject(new Error('WebSocket closed'));
      if (head && head.status !== 101) finish(); // body ended with the connection
      if (!head) {
        clearTimeout(timer);
        reject(new Error('connection closed before the handshake answer'));
      }
    });

    const api = {
      send(text) { socket.write(encodeFrame(0x1, Buffer.from(text), true)); },
      receive(waitMs = 5000) {
        if (messages.length) return Promise.resolve(messages.shift());
        if (closed) return Promise.reject(new Error('WebSocket closed'));
        return new Promise((res, rej) => {
          const t = setTimeout(() => rej(new Error(`no WebSocket message within ${waitMs} ms`)), waitMs);
          waiters.push({ resolve: (m) => { clearTimeout(t); res(m); }, reject: (e) => { clearTimeout(t); rej(e); } });
        });
      },
      close() {
        if (!closed) socket.end(encodeFrame(0x8, Buffer.from([0x03, 0xe8]), true));
        socket.destroy();
      },
    };

    let finished = false;
    function finish() {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve({ ...head, ...api });
    }

    socket.on('data', (chunk) => {
      if (head?.status === 101) { parser.push(chunk); return; }
      buf = Buffer.concat([buf, chunk]);
      if (!head) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        const status = Number(lines[0].split(' ')[1]);
        const hdrs = {};
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          const k = l.slice(0, i).trim().toLowerCase();
          const v = l.slice(i + 1).trim();
          hdrs[k] = hdrs[k] === undefined ? v : `${hdrs[k]}, ${v}`;
        }
        const setCookie = lines.slice(1).filter((l) => /^set-cookie:/i.test(l)).map((l) => l.slice(l.indexOf(':') + 1).trim());
        head = { status, headers: hdrs, setCookie, accepted: hdrs['sec-websocket-accept'] === wsAccept(key), body: '' };
        buf = buf.subarray(end + 4);
        if (status === 101) {
          if (buf.length) parser.push(buf);
          buf = Buffer.alloc(0);
          finish();
          return;
        }
      }
      head.body = buf.toString('utf8');
      const len = Number(head.headers['content-length']);
      if (Number.isFinite(len) && buf.length >= len) {
        head.body = buf.subarray(0, len).toString('utf8');
        finish();
        socket.destroy();
      }
    });

    const lines = [
      `GET ${u.pathname}${u.search} HTTP/1.1`,
      `Host: ${u.host}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${key}`,
      'Sec-WebSocket-Version: 13',
      ...Object.entries(headers).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}: ${v}`),
      '', '',
    ];
    socket.write(lines.join('\r\n'));
  });
}

/** Resident memory of `pid` in bytes (VmRSS), or undefined when it is gone. */
export function rssBytes(pid) {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Samples the RSS of `pid` every `intervalMs` until stop(), which returns { peak, samples }. */
export function sampleRss(pid, intervalMs = 20) {
  let peak = rssBytes(pid) ?? 0;
  let samples = 1;
  const t = setInterval(() => {
    const v = rssBytes(pid);
    if (v !== undefined) {
      samples++;
      if (v > peak) peak = v;
    }
  }, intervalMs);
  return {
    stop() {
      clearInterval(t);
      const v = rssBytes(pid);
      if (v !== undefined && v > peak) peak = v;
      return { peak, samples };
    },
  };
}

/**
 * A request with node:http (which, unlike fetch, lets a test send Connection and friends and
 * stream a body). `body` may be a Buffer/string or an async function (req) => {} that writes
 * and ends. `onResponse(res)` may consume the body itself (then `body` in the result is '').
 */
export function rawRequest(url, { method = 'GET', headers = {}, body, onResponse, timeoutMs = 30_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false });
    const timer = setTimeout(() => req.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => { clearTimeout(timer); reject(err); });
    req.on('response', async (res) => {
      try {
        let text = '';
        if (onResponse) await onResponse(res);
        else {
          const chunks = [];
          for await (const c of res) chunks.push(c);
          text = Buffer.concat(chunks).toString('utf8');
        }
        clearTimeout(timer);
        resolve({ status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, body: text });
      } catch (err) {
        clearTimeout(timer);
        reject(err);
      }
    });
    if (typeof body === 'function') {
      Promise.resolve(body(req)).catch((err) => req.destroy(err));
    } else {
      req.end(body);
    }
  });
}

/**
 * Writes `totalBytes` in `chunkBytes` pieces honouring backpressure; returns the SHA-256.
 * `progress.bytes` follows what was handed to the socket so far.
 */
export async function writeStream(req, totalBytes, chunkBytes = 64 * 1024, progress = {}) {
  const hash = crypto.createHash('sha256');
  const chunk = crypto.randomBytes(chunkBytes);
  let sent = 0;
  let k = 0;
  while (sent < totalBytes) {
    // Vary each chunk a little so the hash checks order and completeness.
    chunk.writeUInt32BE(k++ >>> 0, 0);
    const piece = chunk.subarray(0, Math.min(chunkBytes, totalBytes - sent));
    hash.update(piece);
    sent += piece.length;
    progress.bytes = sent;
    if (!req.write(Buffer.from(piece))) {
      await new Promise((resolve, reject) => {
        req.once('drain', resolve);
        req.once('error', reject);
      });
    }
  }
  req.end();
  return hash.digest('hex');
}

/** Every token value the provider ever issued (access, refresh, ID). */
export function issuedTokens(op) {
  return op.stats.issuedTokens.flatMap((t) => [t.access_token, t.refresh_token, t.id_token]).filter(Boolean);
}

/**
 * Fails when a header value or the body of an answer seen by the browser contains one of
 * `tokens` (or its base64url/percent-encoded form).
 */
export function findToken(headers, body, tokens) {
  const entries = headers instanceof Headers
    ? [...headers].concat(headers.getSetCookie().map((v) => ['set-cookie', v]))
    : Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]]));
  for (const tok of tokens) {
    const forms = [tok, encodeURIComponent(tok), Buffer.from(tok).toString('base64url')];
    for (const [k, v] of entries) {
      if (forms.some((f) => String(v).includes(f))) return `header ${k} contains a token`;
    }
    if (forms.some((f) => String(body).includes(f))) return 'the body contains a token';
  }
  return undefined;
}

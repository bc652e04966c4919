// A real API upstream for sealgate's proxy tests: node:http on 127.0.0.1 plus a hand-written
// RFC 6455 WebSocket echo (no `ws` package). Every request is recorded, so a test can see
// exactly what sealgate forwarded (headers, path, token) and what it did not.
//
//   const up = await startUpstream();
//   ... route "/api/" -> up.url ...; up.requests.at(-1).headers.authorization; await up.close();
//
// Endpoints (anything else: 404 JSON):
//   /api/echo            JSON of what arrived: method, url, headers (WITHOUT authorization:
//                        only `authorization: { present, scheme }`), bodyLength. The token never
//                        goes back to the caller, so a test can check that sealgate adds none.
//   /api/set-cookie      sets sealgate.0 and sealgate-user.0 (must be dropped) and theme
//   /api/status/:code    answers that status with JSON { error: 'upstream_<code>' }; a 401 also
//                        carries WWW-Authenticate: Bearer error="invalid_token".
//   /api/slow?ms=N       waits N ms before sending the answer head.
//   /api/sse             text/event-stream: 5 events 200 ms apart, each flushed on its own.
//   /api/upload          streams the request body: { bytes, sha256 }. With ?pauseAfterMb=M&pauseMs=P
//                        it stops reading for P ms once M MiB arrived (a slow consumer).
//   /api/download?mb=N   N MiB generated on the fly (chunked, honouring backpressure); the bytes
//                        are those of downloadChunks() so a test can hash what it should get.
//   /api/ws, /ws         WebSocket echo (text and binary frames; ping -> pong; close -> close);
//                        /ws is a dev server's hot-reload socket. With ?plant=1 the 101 also tries
//                        to set sealgate.0 (must be dropped) and theme, and carries hop-by-hop
//                        headers (Keep-Alive, X-Hop named in Connection) that must not pass.
//
// `up.progress` holds live byte counts: { uploadRead, downloadWritten } of the latest transfer.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC11B85';
export const CHUNK = 64 * 1024;

// ---- the download's bytes -------------------------------------------------------------------

// A fixed pseudo-random 64 KiB block; chunk k is the block with k written in its first 4 bytes,
// so a reordered, repeated or lost chunk changes the hash.
const BASE_BLOCK = (() => {
  const b = Buffer.alloc(CHUNK);
  let x = 0x12345678;
  for (let i = 0; i < CHUNK; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
})();

function downloadChunk(k) {
  const b = Buffer.from(BASE_BLOCK);
  b.writeUInt32BE(k >>> 0, 0);
  return b;
}

/** The SHA-256 (hex) of what /api/download?mb=N sends. */
export function downloadSha256(mb) {
  const h = crypto.createHash('sha256');
  const n = (mb * 1024 * 1024) / CHUNK;
  for (let k = 0; k < n; k++) h.update(downloadChunk(k));
  return h.digest('hex');
}

// ---- WebSocket frames (RFC 6455 §5) ------------------------------------------------------

export function wsAccept(key) {
  return crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
}

/** One final frame. Clients must mask (mask = true), servers must not. */
export function encodeFrame(opcode, payload, mask = false) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload ?? '');
  const len = data.length;
  const head = [0x80 | opcode];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 255);
  else {
    head.push(m | 127);
    const big = Buffer.alloc(8);
    big.writeBigUInt64BE(BigInt(len));
    head.push(...big);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), data]);
  const key = crypto.randomBytes(4);
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([Buffer.from(head), key, masked]);
}

/** Feeds bytes in, calls onFrame({ fin, opcode, payload }) per complete frame. */
export class FrameParser {
  constructor(onFrame) {
    this.buf = Buffer.alloc(0);
    this.onFrame = onFrame;
  }

  push(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) return;
      const fin = (this.buf[0] & 0x80) !== 0;
      const opcode = this.buf[0] & 0x0f;
      const masked = (this.buf[1] & 0x80) !== 0;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      const keyLen = masked ? 4 : 0;
      if (this.buf.length < off + keyLen + len) return;
      const key = masked ? this.buf.subarray(off, off + 4) : undefined;
      const payload = Buffer.from(this.buf.subarray(off + keyLen, off + keyLen + len));
      if (key) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
      this.buf = this.buf.subarray(off + keyLen + len);
      this.onFrame({ fin, opcode, masked, payload });
    }
  }
}

// ---- the server -----------------------------------------------------------------------------

const json = (res, status, body, headers = {}) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
};

function recordOf(req, extra = {}) {
  return {
    method: req.method,
    url: req.url,
    headers: { ...req.headers },
    rawHeaders: [...req.rawHeaders],
    time: Date.now(),
    ...extra,
  };
}

/**
 * @returns {Promise<{ url: string, port: number, requests: object[], progress: object,
 *   close(): Promise<void> }>}
 */
export async function startUpstream({ port = 0 } = {}) {
  const requests = [];
  const progress = { uploadRead: 0, downloadWritten: 0 };
  const sockets = new Set();
  const timers = new Set();
  const later = (ms, fn) => {
    const t = setTimeout(() => { timers.delete(t); fn(); }, ms);
    timers.add(t);
    return t;
  };
  const cancel = (t) => { clearTimeout(t); timers.delete(t); };

  const server = http.createServer(async (req, res) => {
    requests.push(recordOf(req));
    const u = new URL(req.url, 'http://upstream.invalid');
    const path = u.pathname;
    try {
      if (path === '/api/echo') {
        let bodyLength = 0;
        for await (const c of req) bodyLength += c.length;
        const { authorization, ...headers } = req.headers;
        json(res, 200, {
          method: req.method,
          url: req.url,
          headers,
          authorization: { present: authorization !== undefined, scheme: authorization?.split(' ')[0] },
          bodyLength,
        });
        return;
      }
      const status = /^\/api\/status\/(\d{3})$/.exec(path);
      if (status) {
        req.resume();
        const code = Number(status[1]);
        const extra = code === 401 ? { 'www-authenticate': 'Bearer error="invalid_token"' } : {};
        json(res, code, { error: `upstream_${code}` }, { 'x-upstream': 'status', ...extra });
        return;
      }
      if (path === '/api/set-cookie') {
        // Tries to plant sealgate's own cookies beside an ordinary one of its own.
        req.resume();
        json(res, 200, { ok: true }, {
          'set-cookie': ['sealgate.0=1.planted; Path=/', 'sealgate-user.0=; Path=/bff/; Max-Age=0', 'theme=dark; Path=/'],
        });
        return;
      }
      if (path === '/api/slow') {
        req.resume();
        const ms = Number(u.searchParams.get('ms') ?? 1000);
        const t = later(ms, () => { if (!res.destroyed) json(res, 200, { slept: ms }); });
        res.once('close', () => cancel(t));
        return;
      }
      if (path === '/api/sse') {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.flushHeaders();
        let n = 0;
        let t;
        const tick = () => {
          if (res.destroyed) return;
          res.write(`id: ${n}\ndata: ${JSON.stringify({ n, sent: Date.now() })}\n\n`);
          n++;
          if (n < 5) t = later(200, tick);
          else res.end();
        };
        res.once('close', () => cancel(t));
        tick();
        return;
      }
      if (path === '/api/upload') {
        const pauseAfter = Number(u.searchParams.get('pauseAfterMb') ?? 0) * 1024 * 1024;
        const pauseMs = Number(u.searchParams.get('pauseMs') ?? 0);
        const hash = crypto.createHash('sha256');
        let bytes = 0;
        let paused = false;
        progress.uploadRead = 0;
        await new Promise((resolve, reject) => {
          req.on('data', (c) => {
            hash.update(c);
            bytes += c.length;
            progress.uploadRead = bytes;
            if (pauseAfter && !paused && bytes >= pauseAfter) {
              paused = true;
              req.pause();
              later(pauseMs, () => req.resume());
            }
          });
          req.once('end', resolve);
          req.once('error', reject);
        });
        json(res, 200, { bytes, sha256: hash.digest('hex') });
        return;
      }
      if (path === '/api/download') {
        req.resume();
        const mb = Number(u.searchParams.get('mb') ?? 1);
        const total = (mb * 1024 * 1024) / CHUNK;
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        progress.downloadWritten = 0;
        for (let k = 0; k < total; k++) {
          if (res.destroyed) return;
          const chunk = downloadChunk(k);
          progress.downloadWritten += chunk.length;
          if (!res.write(chunk)) {
            await new Promise((resolve) => {
              res.once('drain', resolve);
              res.once('close', resolve);
            });
          }
        }
        res.end();
        return;
      }
      req.resume();
      json(res, 404, { error: 'no_such_endpoint', path });
    } catch (err) {
      if (!res.headersSent) json(res, 500, { error: String(err?.message ?? err) });
      else res.destroy();
    }
  });

  // WebSocket: only /api/ws, version 13, with a key.
  server.on('upgrade', (req, socket, head) => {
    requests.push(recordOf(req, { upgrade: true }));
    const key = req.headers['sec-websocket-key'];
    const isWs = (req.headers.upgrade ?? '').toLowerCase() === 'websocket';
    const wsUrl = new URL(req.url, 'http://x');
    if (!['/api/ws', '/ws'].includes(wsUrl.pathname) || !isWs || !key || req.headers['sec-websocket-version'] !== '13') {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const plant = wsUrl.searchParams.get('plant') === '1'
      ? ['Set-Cookie: sealgate.0=1.planted; Path=/', 'Set-Cookie: theme=dark; Path=/', 'Keep-Alive: timeout=5', 'X-Hop: for-sealgate-only']
      : [];
    socket.write([
      'HTTP/1.1 101 Switching Protocols',
      'Upgrade: websocket',
      plant.length ? 'Connection: Upgrade, X-Hop' : 'Connection: Upgrade',
      `Sec-WebSocket-Accept: ${wsAccept(key)}`,
      ...plant,
      '', '',
    ].join('\r\n'));
    const parser = new FrameParser(({ opcode, payload, masked }) => {
      if (!masked) { // RFC 6455 §5.1: an unmasked client frame is a protocol error
        socket.end(encodeFrame(0x8, Buffer.from([0x03, 0xea])));
        return;
      }
      if (opcode === 0x1 || opcode === 0x2) socket.write(encodeFrame(opcode, payload));
      else if (opcode === 0x9) socket.write(encodeFrame(0xa, payload));
      else if (opcode === 0x8) socket.end(encodeFrame(0x8, payload.subarray(0, 2)));
    });
    socket.on('data', (c) => parser.push(c));
    socket.on('error', () => {});
    if (head?.length) parser.push(head);
  });

  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('clientError', (err, socket) => socket.destroy());

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const actual = server.address().port;

  async function close() {
    for (const t of timers) clearTimeout(t);
    timers.clear();
    for (const s of sockets) s.destroy(); // includes upgraded (WebSocket) sockets
    await new Promise((resolve) => server.close(() => resolve()));
  }

  return { url: `http://127.0.0.1:${actual}`, port: actual, requests, progress, close };
}

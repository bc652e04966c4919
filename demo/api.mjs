// The demo's sample API: answers every request with what it received (method, path,
// whether a bearer token came, and which cookies), so you can see what sealgate forwards.
// Usage: node demo/api.mjs [port]   (127.0.0.1 only)
import * as http from 'node:http';

const port = Number(process.argv[2] ?? 9100);
http.createServer((req, res) => {
  const auth = req.headers.authorization ?? '';
  const body = {
    method: req.method,
    url: req.url,
    bearer: auth.startsWith('Bearer ') ? `${auth.slice(7, 15)}… (${auth.length - 7} chars)` : null,
    cookies: req.headers.cookie ?? null,
    forwardedFor: req.headers['x-forwarded-for'] ?? null,
  };
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body, null, 2));
}).listen(port, '127.0.0.1', () => console.log(`sample API on http://127.0.0.1:${port}`));

// Faults injected at the real provider's token endpoint, for the refresh outage tests: an
// oidc-provider (Koa) middleware, passed as startProvider({ middleware: [f.middleware] }).
//
//   const f = tokenFaults();          // or tokenFaults({ path: '/token/introspection' })
//   f.mode = 'temporarily_unavailable';  // read at each request; undefined = the provider answers
//   ... f.attempts counts every POST to its path that reached the provider, faulted or not ...
//
// Each mode is one way a token endpoint fails, named after the class sealgate counts it as
// (sealgate_refresh_failures_total{class}) where that differs.

const json = (status, error, headers = {}) => (ctx) => {
  ctx.status = status;
  ctx.set({ 'cache-control': 'no-store', ...headers });
  ctx.body = { error, error_description: `injected by faulty.mjs (${error})` };
};

// mode -> { class: the class sealgate must count, answer(ctx, next) }
export const FAULTS = {
  temporarily_unavailable: { class: 'temporarily_unavailable', answer: json(503, 'temporarily_unavailable', { 'retry-after': '1' }) },
  server_error: { class: 'server_error', answer: json(500, 'server_error') },
  invalid_client: { class: 'invalid_client', answer: json(401, 'invalid_client', { 'www-authenticate': 'Basic realm="op"' }) },
  unauthorized_client: { class: 'unauthorized_client', answer: json(400, 'unauthorized_client') },
  invalid_request: { class: 'other_error', answer: json(400, 'invalid_request') },
  // A gateway's error page in front of the provider.
  http_5xx: {
    class: 'http_5xx',
    answer: (ctx) => { ctx.status = 502; ctx.type = 'text/html'; ctx.body = '<html><body>502 Bad Gateway</body></html>'; },
  },
  // The connection is cut before any answer.
  network: {
    class: 'network',
    answer: (ctx) => { ctx.respond = false; ctx.req.socket.destroy(); },
  },
  // A 200 that is no token answer (a captive portal, a misrouted page); the grant never ran.
  unparsable: {
    class: 'unparsable',
    answer: (ctx) => { ctx.status = 200; ctx.type = 'text/html'; ctx.body = '<html><body>Welcome!</body></html>'; },
  },
  // The grant ran (the refresh token is rotated away) but the answer lacks its access_token.
  spent: {
    class: 'unparsable',
    answer: async (ctx, next) => {
      await next();
      if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
        const { access_token: _dropped, ...rest } = ctx.body;
        ctx.body = rest;
      }
    },
  },
  // The grant ran, but its access token is too large for the session cookies (20 KB).
  huge: {
    class: 'unusable_tokens',
    answer: async (ctx, next) => {
      await next();
      if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
        ctx.body = { ...ctx.body, access_token: `${ctx.body.access_token}${'x'.repeat(20 * 1024)}` };
      }
    },
  },
  // The refresh token is dead: the only answer that ends a session.
  invalid_grant: { class: 'invalid_grant', answer: json(400, 'invalid_grant') },
  // A 400 with an empty body, as Glewlwyd answers a dead refresh token and a refused client
  // alike: transient unless the introspection endpoint says the token is inactive.
  empty_400: { class: 'http_other', answer: (ctx) => { ctx.status = 400; ctx.body = ''; } },
  // No answer at all, ever: the socket stays open (the caller's timeout is the only way out).
  hang: {
    class: 'timeout',
    answer: (ctx) => {
      ctx.respond = false;
      hanging.add(ctx.req.socket);
    },
  },
};

// Sockets held open by `hang`, destroyed by `release()` so the provider can close.
const hanging = new Set();
export const release = () => { for (const s of hanging) s.destroy(); hanging.clear(); };

// Faults at `path` (default the token endpoint; e.g. '/token/introspection').
export function tokenFaults({ path = '/token' } = {}) {
  const f = {
    mode: undefined,
    attempts: 0,
    async middleware(ctx, next) {
      if (ctx.method !== 'POST' || ctx.path !== path) return next();
      f.attempts++;
      if (f.mode === undefined) return next();
      const fault = FAULTS[f.mode];
      if (!fault) throw new Error(`unknown fault ${f.mode}`);
      return fault.answer(ctx, next);
    },
  };
  return f;
}

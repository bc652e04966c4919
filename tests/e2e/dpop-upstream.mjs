// A resource server that accepts ONLY DPoP-bound access tokens with valid proofs (RFC 9449),
// for the FAPI 2.0 end-to-end tests (issue #14). node:http on 127.0.0.1.
//
//   const rs = await startDpopUpstream({ introspect: async (token) => ({ active, sub, jkt }) });
//   ... route "/api/" -> rs.url ...; rs.calls.at(-1).jkt; rs.refusals; await rs.close();
//
// Every path answers (an echo): 200 JSON { ok, method, path, sub, jkt, bodyLength } when the
// request passes every check below, else 401 with `WWW-Authenticate: DPoP error="..."`
// (RFC 9449 §7.1) and JSON { error, reason }. The checks, in order (RFC 9449 §4.3 and §7):
//   1. `Authorization: DPoP <token>` (a Bearer token, or none, is refused: reason `scheme`);
//   2. exactly one `DPoP` header (`proof_count`);
//   3. the proof is a JWS with typ dpop+jwt, an asymmetric alg of `algorithms`, a public `jwk`
//      in its header (no private part) and a valid signature by that jwk (`signature`);
//   4. htm = the request method (`htm`); htu = this server's URL of the request, query and
//      fragment ignored (`htu`); iat a number within `iatWindow` seconds of now (`iat`); jti a
//      string never seen before by this server (`jti`, replay); ath = base64url(SHA-256(token))
//      (`ath`);
//   5. with `rs.requireNonce`: the proof's nonce is `rs.nonce`, else 401 error="use_dpop_nonce"
//      with a `DPoP-Nonce: <rs.nonce>` header (RFC 9449 §9; `nonce`);
//   6. the token is active at the provider (`introspect`) and bound to the proof's key: its
//      cnf.jkt (oidc-provider: AccessToken.jkt) equals the RFC 7638 thumbprint of the proof's
//      jwk (`inactive`, `cnf`).
// The jti of a proof that passed 3-4 is remembered even when 5 or 6 refuse it: a retry must
// carry a fresh proof.
//
// rs.calls: every accepted call { method, path, sub, jkt, jti, htu, nonce, ath, bodyLength }.
// rs.refusals: every refused one { method, path, reason, authorization (the scheme only) }.
// rs.nonceChallenges: how many use_dpop_nonce answers were sent; rs.rotateNonce() starts a new
// nonce (a proof with the old one is then challenged again); rs.requireNonce = 'always' rotates
// it before every check, so every request is challenged (a client must not retry forever).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import { EmbeddedJWK, calculateJwkThumbprint, jwtVerify } from 'jose';

/** base64url(SHA-256(token)): a proof's `ath` (RFC 9449 §4.2). */
export const athOf = (token) => crypto.createHash('sha256').update(token).digest('base64url');

class Refusal extends Error {
  constructor(reason, error, description) {
    super(description);
    this.reason = reason;
    this.error = error;
  }
}

/**
 * @param {{ introspect(token: string): Promise<{ active: boolean, sub?: string, jkt?: string }>,
 *   iatWindow?: number, algorithms?: string[], port?: number }} options
 */
export async function startDpopUpstream({
  introspect,
  iatWindow = 60,
  algorithms = ['EdDSA', 'Ed25519', 'ES256'],
  port = 0,
} = {}) {
  const server = http.createServer();
  const seenJtis = new Set();
  const rs = {
    url: undefined,
    calls: [],
    refusals: [],
    requireNonce: false,
    nonce: crypto.randomBytes(16).toString('base64url'),
    nonceChallenges: 0,
    rotateNonce() { rs.nonce = crypto.randomBytes(16).toString('base64url'); return rs.nonce; },
    close: undefined,
  };

  async function check(req, origin) {
    const [scheme, token, ...rest] = (req.headers.authorization ?? '').split(' ');
    if (scheme?.toLowerCase() !== 'dpop' || !token || rest.length) {
      throw new Refusal('scheme', 'invalid_token', 'a DPoP-bound access token is required');
    }
    const proofHeader = req.headers.dpop;
    // Node joins repeated unknown headers with ", "; a compact JWS has no comma.
    if (typeof proofHeader !== 'string' || proofHeader.includes(',')) {
      throw new Refusal('proof_count', 'invalid_dpop_proof', 'exactly one DPoP proof is required');
    }

    let proof;
    try {
      // EmbeddedJWK refuses a header jwk that is a private or a symmetric key.
      proof = await jwtVerify(proofHeader, EmbeddedJWK, { typ: 'dpop+jwt', algorithms });
    } catch (err) {
      throw new Refusal('signature', 'invalid_dpop_proof', `proof refused: ${err.code ?? err.message}`);
    }
    const { payload, protectedHeader } = proof;

    if (payload.htm !== req.method) throw new Refusal('htm', 'invalid_dpop_proof', 'htm mismatch');
    const expected = new URL(req.url, origin);
    expected.search = '';
    expected.hash = '';
    const actual = typeof payload.htu === 'string' ? URL.parse(payload.htu) : null;
    if (actual) {
      actual.search = '';
      actual.hash = '';
    }
    if (actual?.href !== expected.href) throw new Refusal('htu', 'invalid_dpop_proof', 'htu mismatch');
    const now = Math.floor(Date.now() / 1000);
    if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > iatWindow) {
      throw new Refusal('iat', 'invalid_dpop_proof', 'iat not recent');
    }
    if (typeof payload.jti !== 'string' || !payload.jti || seenJtis.has(payload.jti)) {
      throw new Refusal('jti', 'invalid_dpop_proof', 'jti missing or replayed');
    }
    seenJtis.add(payload.jti);
    if (payload.ath !== athOf(token)) throw new Refusal('ath', 'invalid_dpop_proof', 'ath mismatch');

    if (rs.requireNonce === 'always') rs.rotateNonce(); // a server that is never satisfied
    if (rs.requireNonce && payload.nonce !== rs.nonce) {
      throw new Refusal('nonce', 'use_dpop_nonce', 'Resource server requires nonce in DPoP proof');
    }

    const jkt = await calculateJwkThumbprint(protectedHeader.jwk, 'sha256');
    const info = await introspect(token);
    if (!info?.active) throw new Refusal('inactive', 'invalid_token', 'the access token is not active');
    if (info.jkt !== jkt) throw new Refusal('cnf', 'invalid_token', 'the access token is not bound to the proof key');
    return { sub: info.sub, jkt, jti: payload.jti, htu: payload.htu, nonce: payload.nonce, ath: payload.ath };
  }

  server.on('request', async (req, res) => {
    const origin = `http://127.0.0.1:${server.address().port}`;
    const path = new URL(req.url, origin).pathname;
    let bodyLength = 0;
    try {
      for await (const chunk of req) bodyLength += chunk.length;
      const ok = await check(req, origin);
      rs.calls.push({ method: req.method, path, ...ok, bodyLength });
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ ok: true, method: req.method, path, sub: ok.sub, jkt: ok.jkt, bodyLength }));
    } catch (err) {
      if (!(err instanceof Refusal)) {
        res.writeHead(500).end();
        return;
      }
      rs.refusals.push({ method: req.method, path, reason: err.reason, authorization: (req.headers.authorization ?? '').split(' ')[0] });
      const headers = {
        'content-type': 'application/json',
        'www-authenticate': `DPoP error="${err.error}", error_description="${err.message}", algs="${algorithms.join(' ')}"`,
      };
      if (err.error === 'use_dpop_nonce') {
        rs.nonceChallenges++;
        headers['dpop-nonce'] = rs.nonce;
      }
      res.writeHead(401, headers);
      res.end(JSON.stringify({ error: err.error, reason: err.reason }));
    }
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  rs.url = `http://127.0.0.1:${server.address().port}`;
  rs.close = async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(() => resolve()));
  };
  return rs;
}

/**
 * `introspect` for startDpopUpstream backed by the in-process provider (op.mjs): the stored
 * AccessToken (undefined once expired or revoked) and its DPoP binding `jkt`.
 */
export function providerIntrospection(provider) {
  return async (token) => {
    const at = await provider.AccessToken.find(token);
    return at ? { active: true, sub: at.accountId, jkt: at.jkt } : { active: false };
  };
}

// A minimal FAPI 2.0 client in Node (jose + fetch), independent of sealgate: PAR (RFC 9126),
// private_key_jwt (RFC 7523), DPoP (RFC 9449) with server nonces. fapi.test.mjs uses it to
// prove that the FAPI provider (op.mjs `fapi`) and the DPoP resource server (dpop-upstream.mjs)
// accept a correct client and refuse a wrong one, so that sealgate's results against them mean
// something.
//
//   const client = await FapiClient.create({ issuer, clientId, redirectUri });  // startProvider({ fapi: { jwks: [client.publicJwk] } })
//   const dpop = await client.newDpopKey();
//   const tokens = await client.login({ jar, dpop, username: 'alice' });
//   const res = await client.callResource(`${rs.url}/api/echo`, tokens.access_token, dpop);

import * as crypto from 'node:crypto';

import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';

import { driveProvider } from './browserless.mjs';
import { athOf } from './dpop-upstream.mjs';

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

export class FapiClient {
  /** A client with a fresh ES256 key; `publicJwk` is what the provider registers. */
  static async create({ issuer, clientId = 'bff', redirectUri }) {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(publicKey);
    const publicJwk = { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: 'ES256', use: 'sig' };
    return new FapiClient({ issuer, clientId, redirectUri, privateKey, publicJwk });
  }

  constructor({ issuer, clientId, redirectUri, privateKey, publicJwk }) {
    Object.assign(this, { issuer, clientId, redirectUri, privateKey, publicJwk });
    this.nonces = new Map(); // origin -> the latest DPoP-Nonce it sent (RFC 9449 §8.2)
    this.metadata = undefined;
  }

  async discover() {
    this.metadata ??= await (await fetch(`${this.issuer}/.well-known/openid-configuration`)).json();
    return this.metadata;
  }

  /** An RFC 7523 client assertion: iss = sub = client_id, aud = the issuer identifier (FAPI 2.0). */
  assertion({ aud = this.issuer, exp = 60, kid = this.publicJwk.kid } = {}) {
    return new SignJWT({ jti: b64url(crypto.randomBytes(16)) })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid })
      .setIssuer(this.clientId).setSubject(this.clientId).setAudience(aud)
      .setIssuedAt().setExpirationTime(now() + exp)
      .sign(this.privateKey);
  }

  /** A fresh Ed25519 DPoP key: { privateKey, jwk, jkt }. */
  async newDpopKey() {
    const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const jwk = await exportJWK(publicKey);
    return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
  }

  /** A DPoP proof (RFC 9449 §4.2); `overrides` replace claims, for negative tests. */
  static proof(dpop, { htm, htu, accessToken, nonce, overrides = {}, header = {} }) {
    const u = new URL(htu);
    u.search = '';
    u.hash = '';
    const claims = {
      htm, htu: u.href, iat: now(), jti: b64url(crypto.randomBytes(16)),
      ...(nonce ? { nonce } : {}), ...(accessToken ? { ath: athOf(accessToken) } : {}), ...overrides,
    };
    return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'dpop+jwt', jwk: dpop.jwk, ...header }).sign(dpop.privateKey);
  }

  // A request carrying a DPoP proof, retried once when the server demands a nonce
  // (use_dpop_nonce as a 400 JSON error at the provider, RFC 9449 §8, or a 401
  // WWW-Authenticate at a resource server, §9). `build(proof)` returns fetch's init.
  async #withProof(url, dpop, htm, accessToken, build) {
    const origin = new URL(url).origin;
    let res;
    for (let attempt = 0; attempt < 2; attempt++) {
      const proof = await FapiClient.proof(dpop, { htm, htu: url, accessToken, nonce: this.nonces.get(origin) });
      res = await fetch(url, build(proof));
      if (res.headers.has('dpop-nonce')) this.nonces.set(origin, res.headers.get('dpop-nonce'));
      const challenged = /error="use_dpop_nonce"/.test(res.headers.get('www-authenticate') ?? '')
        || (res.status === 400 && (await res.clone().json().catch(() => ({}))).error === 'use_dpop_nonce');
      if (!challenged) break;
    }
    return res;
  }

  /** POST a form with client authentication (and a proof with `dpop`); the fetch Response. */
  async postForm(url, params, dpop) {
    const form = new URLSearchParams({
      client_id: this.clientId,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      ...params,
    });
    const init = async (proof) => {
      form.set('client_assertion', await this.assertion()); // a fresh jti on each attempt
      return { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...(proof ? { dpop: proof } : {}) }, body: form.toString() };
    };
    if (!dpop) return fetch(url, await init());
    const origin = new URL(url).origin;
    let res;
    for (let attempt = 0; attempt < 2; attempt++) {
      const proof = await FapiClient.proof(dpop, { htm: 'POST', htu: url, nonce: this.nonces.get(origin) });
      res = await fetch(url, await init(proof));
      if (res.headers.has('dpop-nonce')) this.nonces.set(origin, res.headers.get('dpop-nonce'));
      if (res.status !== 400 || (await res.clone().json().catch(() => ({}))).error !== 'use_dpop_nonce') break;
    }
    return res;
  }

  /** The PAR request (RFC 9126 §2.1): { res, body, authorizeUrl, state, nonce, verifier }. */
  async pushAuthorizationRequest({ dpop, sendProof = false, extra = {} } = {}) {
    const md = await this.discover();
    const state = b64url(crypto.randomBytes(16));
    const nonce = b64url(crypto.randomBytes(16));
    const verifier = b64url(crypto.randomBytes(32));
    const params = {
      response_type: 'code',
      redirect_uri: this.redirectUri,
      scope: 'openid profile email offline_access',
      state,
      nonce,
      code_challenge: b64url(crypto.createHash('sha256').update(verifier).digest()),
      code_challenge_method: 'S256',
      ...(dpop ? { dpop_jkt: dpop.jkt } : {}),
      ...extra,
    };
    const res = await this.postForm(md.pushed_authorization_request_endpoint, params, sendProof ? dpop : undefined);
    const body = await res.json();
    const authorizeUrl = new URL(md.authorization_endpoint);
    if (body.request_uri) {
      authorizeUrl.searchParams.set('client_id', this.clientId);
      authorizeUrl.searchParams.set('request_uri', body.request_uri);
    }
    return { res, body, authorizeUrl: authorizeUrl.href, state, nonce, verifier };
  }

  /** Through the provider's forms up to the redirect to redirect_uri: its query parameters. */
  async authorize({ jar, authorizeUrl, username = 'alice' }) {
    const { callbackUrl } = await driveProvider({ jar, url: authorizeUrl, username, stopAt: (u) => u.startsWith(this.redirectUri) });
    return Object.fromEntries(new URL(callbackUrl).searchParams);
  }

  /** The code exchange (with a proof by `dpop` when given): the fetch Response. */
  async exchangeCode({ code, verifier, dpop }) {
    const md = await this.discover();
    return this.postForm(md.token_endpoint, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: this.redirectUri }, dpop);
  }

  async refresh({ refreshToken, dpop }) {
    const md = await this.discover();
    return this.postForm(md.token_endpoint, { grant_type: 'refresh_token', refresh_token: refreshToken }, dpop);
  }

  /** PAR, the forms, the iss and state checks, the code exchange: the token answer's JSON. */
  async login({ jar, dpop, username = 'alice' }) {
    const par = await this.pushAuthorizationRequest({ dpop });
    if (par.res.status !== 201) throw new Error(`PAR answered ${par.res.status}: ${JSON.stringify(par.body)}`);
    const cb = await this.authorize({ jar, authorizeUrl: par.authorizeUrl, username });
    if (cb.iss !== this.issuer || cb.state !== par.state || !cb.code) throw new Error(`bad authorization response ${JSON.stringify(cb)}`);
    const res = await this.exchangeCode({ code: cb.code, verifier: par.verifier, dpop });
    const body = await res.json();
    if (res.status !== 200) throw new Error(`token endpoint answered ${res.status}: ${JSON.stringify(body)}`);
    return body;
  }

  /** A resource call with `Authorization: DPoP` and a proof, one nonce retry. */
  callResource(url, accessToken, dpop, { method = 'GET', body } = {}) {
    return this.#withProof(url, dpop, method, accessToken, (proof) => ({
      method,
      headers: { authorization: `DPoP ${accessToken}`, dpop: proof },
      body,
    }));
  }
}

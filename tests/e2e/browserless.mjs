// A browser without a browser: a small cookie jar plus a login driver built on Node's fetch
// with `redirect: 'manual'`, so every hop (BFF -> provider -> login form -> consent form ->
// BFF callback) is visible to the tests and each can be stopped halfway.
//
// The jar follows RFC 6265 where it matters for a BFF: cookies are identified by
// (name, path), Path is matched per request, Max-Age wins over Expires, Max-Age<=0 or an
// Expires in the past deletes, the __Host-/__Secure- prefixes are enforced, and a cookie whose
// name+value exceeds 4096 bytes is dropped (as Chromium and Firefox do) and recorded in
// `jar.rejected` so tests can see a BFF that emits oversize cookies.
//
// One deliberate difference from browsers: cookies are kept per origin host:port, not per
// host. The provider and the BFF both live on 127.0.0.1 (different ports); a real browser
// would share cookies between them. The real-browser (Playwright) tests cover that case.

const MAX_COOKIE_BYTES = 4096;

function isLocalHost(hostname) {
  return hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]';
}

// RFC 6265 5.1.4: the default path is the request path up to, not including, its last '/'.
function defaultPath(pathname) {
  if (!pathname.startsWith('/')) return '/';
  const i = pathname.lastIndexOf('/');
  return i <= 0 ? '/' : pathname.slice(0, i);
}

// RFC 6265 5.1.4 path-match.
function pathMatches(requestPath, cookiePath) {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

// Parse one Set-Cookie header value into a cookie record, or { error } when a browser would
// refuse it. `url` is the URL of the response that carried the header.
export function parseSetCookie(header, url) {
  const u = new URL(url);
  const [pair, ...attrs] = header.split(';');
  const eq = pair.indexOf('=');
  if (eq < 0) return { error: 'no "=" in name=value' };
  const name = pair.slice(0, eq).trim();
  const value = pair.slice(eq + 1).trim();
  if (!name) return { error: 'empty cookie name' };
  const cookie = {
    name,
    value,
    path: defaultPath(u.pathname),
    pathAttr: undefined, // Path as sent (undefined when absent), for attribute assertions
    domain: undefined,
    secure: false,
    httpOnly: false,
    sameSite: undefined,
    expires: undefined, // ms since epoch; undefined = session cookie
    maxAge: undefined,
    raw: header,
  };
  let expiresAttr;
  for (const attr of attrs) {
    const i = attr.indexOf('=');
    const key = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
    const val = i < 0 ? '' : attr.slice(i + 1).trim();
    switch (key) {
      case 'path':
        if (val.startsWith('/')) cookie.path = val;
        cookie.pathAttr = val;
        break;
      case 'domain': cookie.domain = val.replace(/^\./, '').toLowerCase(); break;
      case 'secure': cookie.secure = true; break;
      case 'httponly': cookie.httpOnly = true; break;
      case 'samesite': cookie.sameSite = val.toLowerCase(); break;
      case 'max-age':
        if (/^-?\d+$/.test(val)) cookie.maxAge = Number(val);
        break;
      case 'expires': {
        const t = Date.parse(val);
        if (!Number.isNaN(t)) expiresAttr = t;
        break;
      }
      default: break; // Partitioned, Priority, ...: irrelevant here
    }
  }
  // Max-Age takes precedence over Expires (RFC 6265 5.3 step 3).
  if (cookie.maxAge !== undefined) cookie.expires = Date.now() + cookie.maxAge * 1000;
  else if (expiresAttr !== undefined) cookie.expires = expiresAttr;

  if (Buffer.byteLength(name) + Buffer.byteLength(value) > MAX_COOKIE_BYTES) {
    return { error: `name+value is ${Buffer.byteLength(name) + Buffer.byteLength(value)} bytes (> ${MAX_COOKIE_BYTES})`, cookie };
  }
  if (cookie.domain && cookie.domain !== u.hostname) {
    // We only talk to IP literals and localhost, where Domain must equal the host.
    return { error: `Domain=${cookie.domain} does not match host ${u.hostname}`, cookie };
  }
  // Browsers accept Secure cookies from https or from localhost/127.0.0.1 only.
  if (cookie.secure && u.protocol !== 'https:' && !isLocalHost(u.hostname)) {
    return { error: 'Secure cookie from an insecure origin', cookie };
  }
  if (name.startsWith('__Secure-') && !cookie.secure) {
    return { error: '__Secure- prefix without Secure', cookie };
  }
  if (name.startsWith('__Host-') && (!cookie.secure || cookie.domain || cookie.pathAttr !== '/')) {
    return { error: '__Host- prefix needs Secure, Path=/ and no Domain', cookie };
  }
  return { cookie };
}

export class CookieJar {
  constructor() {
    this.origins = new Map(); // 'host:port' -> Map('name;path' -> cookie)
    this.rejected = []; // { url, header, error } for Set-Cookie headers a browser would refuse
  }

  #bucket(url) {
    const { host } = new URL(url); // host includes the port when it is not the default
    if (!this.origins.has(host)) this.origins.set(host, new Map());
    return this.origins.get(host);
  }

  // Store the Set-Cookie headers of `response` (a fetch Response or an array of strings).
  store(url, response) {
    const headers = Array.isArray(response) ? response : response.headers.getSetCookie();
    const bucket = this.#bucket(url);
    for (const header of headers) {
      const { cookie, error } = parseSetCookie(header, url);
      if (error) {
        this.rejected.push({ url: String(url), header, error });
        continue;
      }
      const key = `${cookie.name};${cookie.path}`;
      if (cookie.expires !== undefined && cookie.expires <= Date.now()) bucket.delete(key);
      else bucket.set(key, { ...cookie, created: bucket.get(key)?.created ?? Date.now() });
    }
  }

  // Cookies a browser would send to `url`, longest path first (RFC 6265 5.4).
  list(url) {
    const u = new URL(url);
    const bucket = this.#bucket(url);
    const now = Date.now();
    const out = [];
    for (const [key, c] of bucket) {
      if (c.expires !== undefined && c.expires <= now) { bucket.delete(key); continue; }
      if (c.secure && u.protocol !== 'https:' && !isLocalHost(u.hostname)) continue;
      if (pathMatches(u.pathname, c.path)) out.push(c);
    }
    return out.sort((a, b) => b.path.length - a.path.length || a.created - b.created);
  }

  // Every stored cookie of the origin of `url`, whatever its path.
  all(url) {
    return [...this.#bucket(url).values()];
  }

  get(url, name) {
    return this.list(url).find((c) => c.name === name)?.value;
  }

  // The Cookie request header for `url` ('' when there is none).
  header(url) {
    return this.list(url).map((c) => `${c.name}=${c.value}`).join('; ');
  }

  set(url, name, value, path = '/') {
    this.store(url, [`${name}=${value}; Path=${path}`]);
  }

  clear(url) {
    if (url) this.#bucket(url).clear();
    else this.origins.clear();
  }

  // fetch with this jar: sends the matching cookies, stores the answer's Set-Cookie, never
  // follows redirects by itself.
  async fetch(url, init = {}) {
    const headers = new Headers(init.headers);
    const cookie = this.header(url);
    if (cookie && !headers.has('cookie')) headers.set('cookie', cookie);
    const res = await fetch(url, { redirect: 'manual', ...init, headers });
    this.store(url, res);
    return res;
  }
}

// ---- HTML forms --------------------------------------------------------------------------

function decodeEntities(s) {
  return s
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

function attributes(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

// Parse the forms of an HTML page: [{ id, action (absolute), method, fields: {name: value},
// inputs: [{name, type, value}] }]. Inputs outside a <form> that name it with form="id" (the
// provider's logout page does this) are attached to that form. Submit buttons are listed in
// `buttons` but not put in `fields`, because only the clicked one is sent.
export function parseForms(html, baseUrl) {
  const forms = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const a = attributes(m[1]);
    forms.push({
      id: a.id,
      action: new URL(a.action || baseUrl, baseUrl).href,
      method: (a.method || 'get').toUpperCase(),
      body: m[2],
      fields: {},
      inputs: [],
      buttons: [],
    });
  }
  const byId = new Map(forms.filter((f) => f.id).map((f) => [f.id, f]));
  for (const form of forms) {
    for (const m of form.body.matchAll(/<(input|button)\b([^>]*)>/gi)) addControl(form, m[1], attributes(m[2]));
  }
  // Controls outside forms that point at a form by id.
  const outside = html.replace(/<form\b[\s\S]*?<\/form>/gi, '');
  for (const m of outside.matchAll(/<(input|button)\b([^>]*)>/gi)) {
    const a = attributes(m[2]);
    if (a.form && byId.has(a.form)) addControl(byId.get(a.form), m[1], a);
  }
  return forms.map(({ body, ...f }) => f);
}

function addControl(form, tag, a) {
  if (!a.name) return;
  const type = (a.type || (tag.toLowerCase() === 'button' ? 'submit' : 'text')).toLowerCase();
  const control = { name: a.name, type, value: a.value ?? '' };
  if (type === 'submit' || type === 'image') {
    form.buttons.push(control);
    return;
  }
  if ((type === 'checkbox' || type === 'radio') && !('checked' in a)) return;
  form.inputs.push(control);
  form.fields[a.name] = control.value;
}

// Submit `form` with its own fields overridden by `values`, through the jar.
export async function submitForm(jar, form, values = {}) {
  const body = new URLSearchParams({ ...form.fields, ...values });
  if (form.method === 'GET') {
    const url = new URL(form.action);
    url.search = body.toString();
    return jar.fetch(url.href);
  }
  return jar.fetch(form.action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body,
  });
}

// ---- driving the provider ----------------------------------------------------------------

const isRedirect = (res) => res.status >= 300 && res.status < 400 && res.headers.has('location');

// Starting at `url` (usually the provider's authorization URL), follow redirects and fill in
// the provider's login and consent forms, until a redirect points at a URL for which
// `stopAt(url)` is true (the relying party's redirect_uri); that URL is returned, unvisited.
// Login forms are recognised by a `login` input (oidc-provider's devInteractions: fields
// prompt=login, login, password), consent forms by prompt=consent: both are read from the HTML.
export async function driveProvider({ jar, url, username = 'alice', password = 'secret', stopAt, maxSteps = 20 }) {
  let res = await jar.fetch(url);
  let current = url;
  const trail = [url];
  for (let step = 0; step < maxSteps; step++) {
    if (isRedirect(res)) {
      const next = new URL(res.headers.get('location'), current).href;
      trail.push(next);
      if (stopAt(next)) return { callbackUrl: next, trail };
      current = next;
      res = await jar.fetch(next);
      continue;
    }
    const html = await res.text();
    if (res.status !== 200) {
      throw new Error(`provider answered ${res.status} at ${current}: ${html.slice(0, 500)}`);
    }
    const forms = parseForms(html, current);
    const login = forms.find((f) => 'login' in f.fields);
    const consent = forms.find((f) => f.fields.prompt === 'consent');
    const logout = forms.find((f) => f.buttons.some((b) => b.name === 'logout'));
    if (login) {
      if (trail.slice(-2).includes('(login form)')) throw new Error(`the provider refused the login of ${username}: ${trail.join(' -> ')}`);
      trail.push('(login form)');
      res = await submitForm(jar, login, { login: username, password });
    } else if (consent) {
      trail.push('(consent form)');
      res = await submitForm(jar, consent);
    } else if (logout) {
      trail.push('(logout form)');
      res = await submitForm(jar, logout, { logout: 'yes' });
    } else {
      // A page without a form we know: the end of the road (e.g. the logout success page).
      return { callbackUrl: undefined, page: html, status: res.status, trail };
    }
    current = login?.action ?? consent?.action ?? logout.action;
  }
  throw new Error(`no redirect to the relying party after ${maxSteps} steps: ${trail.join(' -> ')}`);
}

// Start a login at the BFF and drive it up to (not including) the callback.
// Returns { jar, loginResponse, authorizeUrl, callbackUrl, trail }.
export async function loginUntilCallback({ bffUrl, username = 'alice', password = 'secret', returnTo = '/', jar = new CookieJar() }) {
  const loginUrl = new URL('/bff/login', bffUrl);
  if (returnTo !== undefined) loginUrl.searchParams.set('returnTo', returnTo);
  const loginResponse = await jar.fetch(loginUrl.href);
  if (!isRedirect(loginResponse)) {
    throw new Error(`GET ${loginUrl} answered ${loginResponse.status}, not a redirect: ${(await loginResponse.text()).slice(0, 300)}`);
  }
  const authorizeUrl = new URL(loginResponse.headers.get('location'), loginUrl).href;
  const callbackPrefix = new URL('/bff/callback', bffUrl).href;
  const { callbackUrl, trail } = await driveProvider({
    jar,
    url: authorizeUrl,
    username,
    password,
    stopAt: (u) => u.split('?')[0] === callbackPrefix,
  });
  if (!callbackUrl) throw new Error(`the provider never redirected to ${callbackPrefix}: ${trail.join(' -> ')}`);
  return { jar, loginResponse, authorizeUrl, callbackUrl, trail };
}

// GET the callback URL with the BFF's cookies. Returns { callbackResponse, finalLocation }.
export async function completeCallback({ jar, callbackUrl }) {
  const callbackResponse = await jar.fetch(callbackUrl);
  const loc = callbackResponse.headers.get('location');
  return { callbackResponse, finalLocation: loc === null ? undefined : new URL(loc, callbackUrl).href };
}

// The whole login. Returns { jar, callbackResponse, finalLocation, callbackUrl, authorizeUrl }.
export async function login(opts) {
  const half = await loginUntilCallback(opts);
  const done = await completeCallback(half);
  return { ...half, ...done };
}

// Follow a redirect to the provider's end-session endpoint (e.g. the Location of the BFF's
// logout answer), confirm the provider's "sign out?" form, and stop at the first redirect for
// which stopAt is true (default: any URL outside the provider). Returns driveProvider's result.
export async function completeEndSession({ jar, url, stopAt }) {
  const origin = new URL(url).origin;
  return driveProvider({ jar, url, stopAt: stopAt ?? ((u) => new URL(u).origin !== origin) });
}

// Convenience for the BFF's JSON endpoints: fetch with the jar and X-CSRF: 1.
export async function bffFetch(jar, url, init = {}) {
  const headers = new Headers(init.headers);
  if (!headers.has('x-csrf')) headers.set('x-csrf', '1');
  return jar.fetch(url, { ...init, headers });
}

// The demo SPA: it never sees a token. It asks sealgate who the user is (/bff/user), calls
// the API through sealgate (/api/*), and sends every such call with `X-CSRF: 1`, the header
// a cross-site page cannot add without a CORS preflight that sealgate never grants.

const $ = (id) => document.getElementById(id);
const csrf = { 'X-CSRF': '1' };
let user = null;

async function refresh() {
  $('doc-cookie').textContent = JSON.stringify(document.cookie);
  const res = await fetch('/bff/user', { headers: csrf });
  user = res.ok ? await res.json() : null;
  $('status').textContent = user ? `Logged in as ${user.claims.name ?? user.sub}` : 'Not logged in';
  $('user').textContent = user ? JSON.stringify(user, null, 2) : '(not logged in)';
  $('login').hidden = Boolean(user);
  $('logout').hidden = !user;
  $('call-api').hidden = !user;
}

$('login').addEventListener('click', () => {
  const here = location.pathname + location.search;
  location.assign(`/bff/login?returnTo=${encodeURIComponent(here)}`);
});

$('logout').addEventListener('click', () => {
  // A top-level navigation carrying the session's own id: not forgeable cross-site.
  location.assign(user.session.logout_url);
});

$('call-api').addEventListener('click', async () => {
  const res = await fetch('/api/echo?from=spa', { headers: csrf });
  const text = await res.text();
  $('api').textContent = `${res.status}\n${text}`;
});

refresh();

// The first real end-to-end check: sealgate + the real provider + the browserless login.
// Opt-in while the server is being written: SEALGATE_E2E=1 node --test (needs `cargo build`).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

import { startProvider } from './op.mjs';
import { bffFetch, login } from './browserless.mjs';
import { freePort, sealgateBin, startSealgate } from './sealgate.mjs';

function serveMissing() {
  if (process.env.SEALGATE_E2E !== '1') return 'set SEALGATE_E2E=1 to run sealgate itself';
  const bin = sealgateBin();
  if (!existsSync(bin)) return `no sealgate binary at ${bin}`;
  try {
    const help = execFileSync(bin, ['--help'], { encoding: 'utf8', timeout: 5000 });
    return /^\s+serve\b/m.test(help) ? false : `${bin} has no serve command yet`;
  } catch (err) {
    return `${bin} --help failed: ${err.message}`;
  }
}

const skip = serveMissing();

describe('sealgate smoke: login against the real provider', { skip }, () => {
  const secret = 'smoke-secret';
  let op;
  let sg;
  before(async () => {
    // The provider must know the BFF's redirect URI before the BFF starts, so the port is
    // chosen first.
    const port = await freePort();
    const bff = `http://127.0.0.1:${port}`;
    op = await startProvider({
      clientId: 'bff',
      clientSecret: secret,
      redirectUris: [`${bff}/bff/callback`],
      postLogoutRedirectUris: [`${bff}/`],
    });
    sg = await startSealgate({
      issuer: op.issuer,
      clientSecret: secret,
      port,
    });
  });
  after(async () => {
    await sg?.stop();
    await op?.close();
  });

  test('login, then /bff/user answers with the claims', async () => {
    const anonymous = await fetch(`${sg.url}/bff/user`, { headers: { 'x-csrf': '1' } });
    assert.equal(anonymous.status, 401);
    assert.deepEqual(await anonymous.json(), { error: 'login_required' });

    const { jar, callbackResponse, finalLocation } = await login({ bffUrl: sg.url, username: 'alice', returnTo: '/after' });
    assert.equal(callbackResponse.status, 302, sg.logs());
    assert.equal(finalLocation, `${sg.url}/after`);
    assert.deepEqual(jar.rejected, [], 'no cookie a browser would refuse');

    const user = await bffFetch(jar, `${sg.url}/bff/user`);
    assert.equal(user.status, 200, sg.logs());
    const body = await user.json();
    assert.equal(body.sub ?? body.claims?.sub, 'alice');
    assert.ok(!JSON.stringify(body).includes('eyJ'), 'no token in /bff/user');

    const noCsrf = await jar.fetch(`${sg.url}/bff/user`);
    assert.ok([401, 403].includes(noCsrf.status), `without X-CSRF: ${noCsrf.status}`);
    assert.equal(op.stats.tokenRequests.at(-1).clientAuth, 'client_secret_basic');
  });
});

// Keys under stress, against the REAL provider: a promotion followed by an emergency retirement
// of the old key (without waiting for sessions to end). The session cookie (Path=/) is
// re-sealed under the new primary on its next use; the profile cookie (Path=/bff/) only reaches
// /bff/user. A user whose SPA asked /bff/user in between, and one whose SPA only called its API,
// both still get 200 from /bff/user after the retirement.
//
// Needs target/debug/sealgate (`cargo build`), or SEALGATE_BIN.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { bffFetch, login } from './browserless.mjs';
import { kidInCookieHeader, sealgateCli, waitForLogAfter, parseReload } from './fleet-lib.mjs';
import { startStack } from './stack.mjs';
import { startUpstream } from './upstream.mjs';

const tail = (sg) => `\n--- sealgate logs (tail) ---\n${sg.logs().slice(-3000)}`;

describe('keys under stress', () => {
  let stack;
  let sg;
  let up;

  before(async () => {
    up = await startUpstream();
    stack = await startStack({ sealgates: [{ config: { routes: [{ prefix: '/api/', upstream: up.url }] } }] });
    ({ sg } = stack);
  });
  after(async () => {
    await stack?.stop();
    await up?.close();
  });

  // Runs a key command and waits for this instance to reload the folder.
  async function keys(args) {
    const offset = sg.logs().length;
    const out = await sealgateCli([...args, '--dir', sg.keysDir]);
    return { out: out.trim(), ring: parseReload(await waitForLogAfter(sg, offset, /key ring reloaded/, 6000)) };
  }

  test('after promote and an emergency retire, /bff/user answers 200 for users who used the app in between', async () => {
    const OLD = sg.kid;
    const alice = (await login({ bffUrl: sg.url, username: 'alice' })).jar;
    const bob = (await login({ bffUrl: sg.url, username: 'bob' })).jar;
    for (const jar of [alice, bob]) assert.equal((await bffFetch(jar, `${sg.url}/bff/user`)).status, 200);

    const { out: NEW } = await keys(['keygen']);
    const promoted = await keys(['keys', 'promote', NEW]);
    assert.equal(promoted.ring.primary, NEW);

    // In between: Alice's SPA asks /bff/user (and its API); Bob's only calls its API.
    assert.equal((await bffFetch(alice, `${sg.url}/bff/user`)).status, 200);
    assert.equal((await bffFetch(alice, `${sg.url}/api/echo`)).status, 200);
    assert.equal((await bffFetch(bob, `${sg.url}/api/echo`)).status, 200);
    assert.equal(kidInCookieHeader(bob.header(`${sg.url}/api/echo`)), NEW, 'the API call re-sealed the session');
    assert.equal(kidInCookieHeader(bob.header(`${sg.url}/bff/user`), 'sealgate-user.0'), OLD,
      'the profile is not sent on /api/ and stays under the old key');

    const retired = await keys(['keys', 'retire', OLD]);
    assert.deepEqual(retired.ring.kids, [NEW]);

    const a = await bffFetch(alice, `${sg.url}/bff/user`);
    assert.equal(a.status, 200, `alice after the retirement${tail(sg)}`);
    assert.equal((await a.json()).sub, 'alice');

    const b = await bffFetch(bob, `${sg.url}/bff/user`);
    assert.equal(b.status, 200, `bob after the retirement${tail(sg)}`);
    const body = await b.json();
    assert.equal(body.sub, 'bob');
    assert.equal(body.claims.sub, 'bob', 'claims rebuilt from userinfo');
    assert.equal(kidInCookieHeader(bob.header(`${sg.url}/bff/user`), 'sealgate-user.0'), NEW, 'the rebuilt profile was re-sealed');
    assert.equal((await bffFetch(bob, `${sg.url}/bff/user`)).status, 200);
    assert.equal((await bffFetch(bob, `${sg.url}/api/echo`)).status, 200);
  });
});

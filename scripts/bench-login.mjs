// Logs in to a running sealgate through the real provider's forms and prints the Cookie
// header a browser would send on API calls. Used by scripts/bench.
// Usage: node scripts/bench-login.mjs http://127.0.0.1:PORT
import { login } from '../tests/e2e/browserless.mjs';

const bff = process.argv[2];
const { jar, callbackResponse } = await login({ bffUrl: bff, username: 'bench' });
if (callbackResponse.status !== 302) throw new Error(`login failed: ${callbackResponse.status}`);
process.stdout.write(jar.header(`${bff}/api/bench`));

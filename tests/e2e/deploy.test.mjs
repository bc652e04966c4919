// The shipped manifests, started as the platform starts them: deploy/kubernetes.yaml and
// deploy/cloudrun.yaml are read, the container's `env` is taken as written (secret references
// replaced by working test values), the variables each platform injects are added (Kubernetes'
// service links for every Service in the manifest unless the pod disables them, the
// `kubernetes` Service, HOSTNAME; Cloud Run's PORT, K_SERVICE, K_REVISION, K_CONFIGURATION),
// plus the image's own ENV from the Dockerfile, and the real binary is started with exactly
// that environment (nothing inherited from this process) against the real provider.
//
// What the test changes, and why: the volumes are mounted under a temporary folder (the mount
// paths are rewritten wherever they appear), the placeholder hosts of the manifests
// (idp.example.com, app.example.com, *.svc.cluster.local) point at the test's provider and
// upstream, and every fixed port is remapped to a free one (a container has its own network
// namespace; this machine does not).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';

import { startProvider } from './op.mjs';
import { REPO_ROOT, freePort, keygen, sealgateBin } from './sealgate.mjs';
import { startUpstream } from './upstream.mjs';

const CLIENT_SECRET = 'deploy-test-client-secret';
const CLUSTER_IP = '10.96.0.17';

// Kubernetes reads manifests as YAML 1.1 (sigs.k8s.io/yaml): `defaultMode: 0440` is octal.
async function manifest(file) {
  const text = await fs.readFile(path.join(REPO_ROOT, 'deploy', file), 'utf8');
  return parseAllDocuments(text, { version: '1.1' }).map((d) => d.toJS()).filter(Boolean);
}

// The image's ENV lines (Dockerfile), which the container starts with.
async function imageEnv() {
  const text = await fs.readFile(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/home/nonroot' };
  for (const m of text.matchAll(/^ENV\s+([A-Z0-9_]+)=(\S+)\s*$/gm)) env[m[1]] = m[2];
  return env;
}

// What kubelet injects for one Service (docker-link style), as documented in "Discovering
// services: environment variables".
export function serviceLinkEnv(svc, ip = CLUSTER_IP) {
  const name = svc.metadata.name.toUpperCase().replace(/-/g, '_');
  const ports = svc.spec.ports ?? [];
  const env = { [`${name}_SERVICE_HOST`]: ip };
  if (ports.length === 0) return env;
  env[`${name}_SERVICE_PORT`] = String(ports[0].port);
  for (const p of ports) {
    if (p.name) env[`${name}_SERVICE_PORT_${p.name.toUpperCase().replace(/-/g, '_')}`] = String(p.port);
  }
  const proto = (p) => (p.protocol ?? 'TCP');
  env[`${name}_PORT`] = `${proto(ports[0]).toLowerCase()}://${ip}:${ports[0].port}`;
  for (const p of ports) {
    const base = `${name}_PORT_${p.port}_${proto(p)}`;
    env[base] = `${proto(p).toLowerCase()}://${ip}:${p.port}`;
    env[`${base}_PROTO`] = proto(p).toLowerCase();
    env[`${base}_PORT`] = String(p.port);
    env[`${base}_ADDR`] = ip;
  }
  return env;
}

// The container's env as the platform resolves it: literal values, secret references looked
// up in `secrets` ("name/key"). A reference the test does not know fails loudly, so a new
// secret in a manifest makes this test learn it.
function containerEnv(container, secrets) {
  const env = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    else if (e.valueFrom?.secretKeyRef) {
      const ref = `${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}`;
      assert.ok(ref in secrets, `the test has no value for secret ${ref} (${e.name})`);
      env[e.name] = secrets[ref];
    } else assert.fail(`unsupported env source for ${e.name}: ${JSON.stringify(e)}`);
  }
  return env;
}

// Replaces each fixed port of a local address (0.0.0.0:P, 127.0.0.1:P) by a free one, the
// same P always by the same free port.
async function remapPorts(text, ports) {
  for (const m of text.matchAll(/\b(?:0\.0\.0\.0|127\.0\.0\.1):(\d+)\b/g)) {
    if (!ports.has(m[1])) ports.set(m[1], String(await freePort()));
  }
  return text.replace(/\b(0\.0\.0\.0|127\.0\.0\.1):(\d+)\b/g, (_, host, p) => `${host}:${ports.get(p)}`);
}

function rewritePaths(text, mounts) {
  let out = text;
  for (const [from, to] of mounts) out = out.split(from).join(to);
  return out;
}

// Starts the binary with exactly `env` and waits for /readyz 200 on `port`.
async function run({ args, env, port, timeoutMs = 15_000 }) {
  const proc = spawn(sealgateBin(), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (c) => { stdout += c; });
  proc.stderr.on('data', (c) => { stderr += c; });
  let exit;
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => { exit = { code, signal }; resolve(exit); }));
  const stop = async () => {
    if (!exit) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => { if (!exit) proc.kill('SIGKILL'); }, 5000);
      await exited;
      clearTimeout(t);
    }
    return exit;
  };
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline && !exit) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      last = `status ${res.status}`;
      if (res.status === 200) return { proc, stop, logs: () => stderr, stdout: () => stdout, ready: true };
    } catch (err) {
      last = err.cause?.code ?? err.message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  return { ready: false, why: exit ? `exited ${JSON.stringify(exit)}` : last, logs: () => stderr, exit };
}

// Every line the process wrote to stderr is one JSON object (what a log pipeline ingests).
function assertJsonLogs(logs) {
  const lines = logs.split('\n').filter((l) => l.trim() !== '');
  assert.ok(lines.length > 0, 'no log lines');
  for (const line of lines) {
    let parsed;
    assert.doesNotThrow(() => { parsed = JSON.parse(line); }, `not a JSON log line: ${line}`);
    assert.equal(typeof parsed, 'object');
    assert.ok(parsed.level && parsed.fields, `not a tracing JSON line: ${line}`);
  }
  return lines.map((l) => JSON.parse(l));
}

describe('the shipped manifests start as deployed', () => {
  let tmp;
  let op;
  let up;
  let ringEntry;
  const publicPort = { k8s: 0, run: 0 };

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'sealgate-deploy-'));
    publicPort.k8s = await freePort();
    publicPort.run = await freePort();
    const urls = Object.values(publicPort).map((p) => `http://127.0.0.1:${p}`);
    op = await startProvider({
      clientId: 'bff',
      clientSecret: CLIENT_SECRET,
      redirectUris: urls.map((u) => `${u}/bff/callback`),
      postLogoutRedirectUris: urls.map((u) => `${u}/`),
    });
    up = await startUpstream();
    const { stdout } = await promisify(execFile)(sealgateBin(), ['keygen', '--ring-entry'], { timeout: 10_000 });
    ringEntry = stdout.trim();
  });
  after(async () => {
    await up?.close();
    await op?.close();
    if (tmp && !process.env.KEEP_TMP) await fs.rm(tmp, { recursive: true, force: true });
  });

  // The placeholder hosts of the manifests, pointed at the test's services.
  const placeholders = (port) => (text) => text
    .replaceAll('https://idp.example.com', op.issuer)
    .replace(/^\[oidc\]$/m, '[oidc]\nallow_insecure_http = true')
    .replaceAll('https://app.example.com', `http://127.0.0.1:${port}`)
    .replace(/http:\/\/[a-z0-9-]+\.default\.svc\.cluster\.local/g, up.url);

  async function kubernetes({ forceServiceLinks }) {
    const docs = await manifest('kubernetes.yaml');
    const deployment = docs.find((d) => d.kind === 'Deployment');
    const pod = deployment.spec.template.spec;
    const [container] = pod.containers;
    const root = await fs.mkdtemp(path.join(tmp, 'k8s-'));
    const mounts = container.volumeMounts.map((m) => [m.mountPath, path.join(root, m.mountPath)]);
    const ports = new Map([['8080', String(publicPort.k8s)]]);
    for (const m of container.volumeMounts) {
      const dir = path.join(root, m.mountPath);
      await fs.mkdir(dir, { recursive: true });
      const volume = pod.volumes.find((v) => v.name === m.name);
      if (volume.configMap) {
        const cm = docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === volume.configMap.name);
        for (const [file, content] of Object.entries(cm.data)) {
          const text = placeholders(publicPort.k8s)(rewritePaths(await remapPorts(content, ports), mounts));
          await fs.writeFile(path.join(dir, file), text);
        }
      } else if (volume.secret?.secretName === 'sealgate-keys') {
        await keygen(dir);
        const mode = volume.secret.defaultMode ?? 0o644;
        for (const f of await fs.readdir(dir)) await fs.chmod(path.join(dir, f), mode);
      } else assert.fail(`unknown volume ${m.name}`);
    }
    const secrets = { 'sealgate-oidc/client_secret': CLIENT_SECRET };
    const env = { ...(await imageEnv()), HOSTNAME: 'sealgate-6d5f7c9b8-x2x9q' };
    for (const [k, v] of Object.entries(containerEnv(container, secrets))) {
      env[k] = await remapPorts(rewritePaths(v, mounts), ports);
    }
    // Always there: the API server's Service of the default namespace.
    Object.assign(env, {
      KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443', KUBERNETES_SERVICE_PORT_HTTPS: '443',
    });
    const links = forceServiceLinks || pod.enableServiceLinks !== false;
    if (links) {
      Object.assign(env, serviceLinkEnv({ metadata: { name: 'kubernetes' }, spec: { ports: [{ name: 'https', port: 443 }] } }, '10.96.0.1'));
      for (const svc of docs.filter((d) => d.kind === 'Service')) Object.assign(env, serviceLinkEnv(svc));
    }
    const args = container.args ?? [];
    return { env, args, ports, root, pod };
  }

  test('kubernetes.yaml: the pod disables service links and the Deployment starts, logs JSON, serves /metrics on the admin port only', async () => {
    const { env, args, ports, pod } = await kubernetes({ forceServiceLinks: false });
    assert.equal(pod.enableServiceLinks, false, 'the pod spec sets enableServiceLinks: false');
    const sg = await run({ args, env, port: publicPort.k8s });
    try {
      assert.ok(sg.ready, `not ready: ${sg.why}\n${sg.logs()}`);
      const res = await fetch(`http://127.0.0.1:${publicPort.k8s}/bff/login`, { redirect: 'manual' });
      assert.equal(res.status, 302);
      assert.ok(res.headers.get('location').startsWith(op.issuer), 'login goes to the real provider');
      const admin = ports.get('9090');
      assert.ok(admin, 'the ConfigMap sets an admin listener on 9090');
      const metrics = await fetch(`http://127.0.0.1:${admin}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /sealgate_requests_total/);
      const onMain = await fetch(`http://127.0.0.1:${publicPort.k8s}/metrics`);
      assert.equal(onMain.status, 404, '/metrics is not on the public port when admin_listen is set');
      assert.equal((await fetch(`http://127.0.0.1:${publicPort.k8s}/healthz`)).status, 200);
    } finally {
      await sg.stop?.();
    }
    assertJsonLogs(sg.logs());
  });

  test('kubernetes.yaml with service links injected anyway (a namespace with a Service "sealgate"): starts, one warning names them', async () => {
    const { env, args } = await kubernetes({ forceServiceLinks: true });
    assert.equal(env.SEALGATE_PORT, `tcp://${CLUSTER_IP}:80`);
    assert.equal(env.SEALGATE_SERVICE_PORT_HTTP, '80');
    const sg = await run({ args, env, port: publicPort.k8s });
    try {
      assert.ok(sg.ready, `not ready: ${sg.why}\n${sg.logs()}`);
    } finally {
      await sg.stop?.();
    }
    const lines = assertJsonLogs(sg.logs());
    const warnings = lines.filter((l) => /not configuration/.test(l.fields.message ?? ''));
    assert.equal(warnings.length, 1, 'one warning line');
    assert.equal(warnings[0].level, 'WARN');
    for (const name of ['SEALGATE_SERVICE_HOST', 'SEALGATE_SERVICE_PORT', 'SEALGATE_PORT', 'SEALGATE_PORT_80_TCP_ADDR']) {
      assert.ok(warnings[0].fields.variables.split(' ').includes(name), `${name} named in the warning`);
    }
  });

  test('kubernetes.yaml with a typo in a SEALGATE_<SECTION>__<KEY> variable: exit 2 naming it', async () => {
    const { env, args } = await kubernetes({ forceServiceLinks: true });
    env.SEALGATE_SERVER__DRAIN_TIMOUT = '5s';
    const sg = await run({ args, env, port: publicPort.k8s, timeoutMs: 5000 });
    assert.equal(sg.ready, false);
    assert.equal(sg.exit?.code, 2, sg.why);
    assert.match(sg.logs(), /SEALGATE_SERVER__DRAIN_TIMOUT/);
  });

  test('cloudrun.yaml: PORT, K_SERVICE, K_REVISION, K_CONFIGURATION injected; listens on 0.0.0.0:$PORT, logs JSON', async () => {
    const [svc] = await manifest('cloudrun.yaml');
    const spec = svc.spec.template.spec;
    const [container] = spec.containers;
    const root = await fs.mkdtemp(path.join(tmp, 'run-'));
    const mounts = container.volumeMounts.map((m) => [m.mountPath, path.join(root, m.mountPath)]);
    const ports = new Map();
    // The config Secret (not in the manifest: the operator's file, as its comment describes).
    for (const m of container.volumeMounts) {
      const volume = spec.volumes.find((v) => v.name === m.name);
      assert.equal(volume.secret?.secretName, 'sealgate-config');
      const dir = path.join(root, m.mountPath);
      await fs.mkdir(dir, { recursive: true });
      for (const item of volume.secret.items) {
        await fs.writeFile(path.join(dir, item.path), [
          `public_url = "http://127.0.0.1:${publicPort.run}"`,
          '[oidc]', `issuer = "${op.issuer}"`, 'client_id = "bff"', 'allow_insecure_http = true', '',
        ].join('\n'));
      }
    }
    const [kid] = ringEntry.split(':');
    const secrets = {
      'sealgate-client-secret/latest': CLIENT_SECRET,
      'sealgate-key-ring/latest': ringEntry,
      'sealgate-key-primary/latest': kid,
    };
    const env = { ...(await imageEnv()) };
    for (const [k, v] of Object.entries(containerEnv(container, secrets))) {
      env[k] = await remapPorts(rewritePaths(v, mounts), ports);
    }
    assert.ok(!('SEALGATE_LISTEN' in env), 'the manifest leaves listen to PORT');
    Object.assign(env, {
      PORT: String(publicPort.run),
      K_SERVICE: svc.metadata.name,
      K_REVISION: `${svc.metadata.name}-00001-abc`,
      K_CONFIGURATION: svc.metadata.name,
    });
    const sg = await run({ args: container.args ?? [], env, port: publicPort.run });
    try {
      assert.ok(sg.ready, `not ready: ${sg.why}\n${sg.logs()}`);
      const res = await fetch(`http://127.0.0.1:${publicPort.run}/bff/login`, { redirect: 'manual' });
      assert.equal(res.status, 302);
      const admin = ports.get('9090');
      assert.ok(admin, 'the manifest sets an admin listener');
      assert.equal((await fetch(`http://127.0.0.1:${admin}/metrics`)).status, 200);
      assert.equal((await fetch(`http://127.0.0.1:${publicPort.run}/metrics`)).status, 404);
    } finally {
      await sg.stop?.();
    }
    const lines = assertJsonLogs(sg.logs());
    assert.ok(lines.some((l) => l.fields.message === 'serving' && l.fields.listen === `0.0.0.0:${publicPort.run}`),
      'listens on 0.0.0.0:$PORT');
  });
});

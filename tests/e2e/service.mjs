// Starts connector-manager for the end-to-end tests (oauth_e2e.test.mjs,
// connect_page.test.mjs): a private database on the test cluster
// (scripts/pg-cluster createdb/url), a fresh master key, a JWT secret, a
// service file with tests/e2e/providers.yaml and the oidc-test provider
// pointed at the oidc-provider stand-in; waits for the `ready` log line.
//
// Needs CONNECTOR_SOURCE_DIR, CONNECTOR_SERVER_BINARY and CONNECTOR_TEST_PG_DIR.
import { spawn, execFileSync } from 'node:child_process';
import { writeFileSync, chmodSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const source = process.env.CONNECTOR_SOURCE_DIR;
export const binary = process.env.CONNECTOR_SERVER_BINARY;
export const clusterDir = process.env.CONNECTOR_TEST_PG_DIR;

/** Throws unless the environment names the checkout, the binary and the cluster. */
export function requireEnvironment() {
  if (!source || !binary || !clusterDir) {
    throw new Error('CONNECTOR_SOURCE_DIR, CONNECTOR_SERVER_BINARY and CONNECTOR_TEST_PG_DIR must be set');
  }
}

/** The SHA-256 of `text` in hex, as the service's config expects for service tokens. */
export function sha256Hex(text) {
  return execFileSync(binary, ['hash-token'], { input: text }).toString().trim();
}

/** A loopback TCP port that was free a moment ago: listen on 0, read it, close. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Waits for a line on the child's stdout/stderr that `match` accepts.
 * @returns {Promise<*>} what `match` returned for that line
 */
export function waitForLine(child, match, { timeoutMs = 30000, what = 'the process', output = () => '' } = {}) {
  return new Promise((resolve, reject) => {
    let pending = '';
    const done = (fn, value) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      fn(value);
    };
    const onData = (chunk) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop();
      for (const line of lines) {
        const value = match(line);
        if (value !== undefined && value !== false) {
          done(resolve, value);
          return;
        }
      }
    };
    const onExit = (code, signal) => done(reject,
      new Error(`${what} exited (${signal || code}) before it was ready:\n${output()}`));
    const timer = setTimeout(() => done(reject,
      new Error(`${what} was not ready within ${timeoutMs} ms:\n${output()}`)), timeoutMs);
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

/** Sends SIGTERM and waits (bounded) for the child to exit; SIGKILL after that. */
export async function stopChild(child, timeoutMs = 10000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve('late'), timeoutMs); });
  if (await Promise.race([exited, late]) === 'late') {
    child.kill('SIGKILL');
    await exited;
  }
  clearTimeout(timer);
}

/**
 * Starts connector-manager.
 * @param {object} o
 * @param {string} o.dir a private temporary directory (keys, config)
 * @param {{issuer: string}} o.as the oidc-provider stand-in (startAuthorizationServer)
 * @param {string} o.publicBase oauth.public_base_url
 * @param {number} [o.port] the listen port (0: any; the answer says which)
 * @param {string} [o.address] the listen address (127.0.0.1)
 * @param {string} o.clientId the oidc-test client registered at the stand-in
 * @param {string} o.clientSecret its secret
 * @param {string} [o.oauthYaml] more `oauth:` keys, as YAML flow-mapping entries (`a: 1, b: 2`)
 * @param {string} [o.authYaml] more `auth:` keys, as YAML block lines indented by two spaces
 * @param {string} [o.extraYaml] more providers' settings, as YAML block lines indented by two
 *   spaces (they go under `providers:`, after oidc-test's)
 * @returns {Promise<{port: number, base: string, configPath: string, child: import('node:child_process').ChildProcess,
 *   mint: (user: string, team?: string) => string, log: () => string, stop: () => Promise<void>}>}
 */
export async function startService({
  dir, as, publicBase, port = 0, address = '127.0.0.1',
  clientId, clientSecret, oauthYaml = '', authYaml = '', extraYaml = '',
}) {
  requireEnvironment();
  const db = `cm_e2e_${Date.now()}_${process.pid}`;
  execFileSync(path.join(source, 'scripts/pg-cluster'), ['createdb', clusterDir, db]);
  const dbUrl = execFileSync(path.join(source, 'scripts/pg-cluster'), ['url', clusterDir, db])
    .toString().trim();
  execFileSync(binary, ['keygen', '--out', path.join(dir, 'master.key')]);
  writeFileSync(path.join(dir, 'jwt.secret'), 'e2e-jwt-secret-0123456789abcdef0123456789');
  chmodSync(path.join(dir, 'jwt.secret'), 0o600);
  const config = `
listen: {address: ${address}, port: ${port}}
database: {url: "${dbUrl}"}
crypto: {key_file: ${path.join(dir, 'master.key')}}
auth:
  jwt: {hs256_secret_file: ${path.join(dir, 'jwt.secret')}}
${authYaml}
oauth: {public_base_url: "${publicBase}"${oauthYaml ? `, ${oauthYaml}` : ''}}
token_service: {port: 0}
providers_file: ${path.join(source, 'tests/e2e/providers.yaml')}
providers:
  oidc-test:
    client_id: ${clientId}
    client_secret: ${clientSecret}
    authorization_url: ${as.issuer}/auth
    token_url: ${as.issuer}/token
    revoke_url: ${as.issuer}/token/revocation
    account_url: ${as.issuer}/me
${extraYaml}
`;
  const configPath = path.join(dir, 'service.yaml');
  writeFileSync(configPath, config);
  const child = spawn(binary, ['serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (chunk) => { log += chunk; });
  child.stderr.on('data', (chunk) => { log += chunk; });
  let ready;
  try {
    ready = await waitForLine(child, (line) => {
      try {
        const json = JSON.parse(line);
        return json.msg === 'ready' ? json.port : undefined;
      } catch {
        return undefined; // not a JSON line
      }
    }, { timeoutMs: 30000, what: 'connector-manager', output: () => log });
  } catch (error) {
    await stopChild(child);
    throw error;
  }
  const mint = (user, team = 'acme') => execFileSync(binary, ['mint-token', '--config', configPath,
    '--user', user, '--team', team]).toString().trim();
  return {
    port: ready,
    base: `http://127.0.0.1:${ready}`,
    configPath,
    child,
    mint,
    log: () => log,
    stop: () => stopChild(child),
  };
}

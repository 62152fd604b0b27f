// The whole authorization-code flow against a real OAuth 2.0 server:
// authorize -> login page -> consent page -> callback -> stored -> token
// served to a service -> refresh with rotation -> the old refresh token is
// dead at the provider -> disconnect -> the provider reports the grant
// revoked. Run by ctest (scripts/test) with CONNECTOR_TEST_PG_DIR set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startAuthorizationServer } from './authorization_server.mjs';
import { contract, lintOpenApi } from './openapi_contract.mjs';
import { startService, sha256Hex, source, binary, clusterDir } from './service.mjs';

const clientId = 'cm-e2e-client';
const clientSecret = 'cm-e2e-secret-0123456789';
const publicBase = 'http://cm.e2e.test';
const callbackPath = '/api/oauth/oidc-test/callback';
const landing = 'https://app.example/integrations/done';
const serviceToken = 'svc-e2e-token-0001';

function startServer(dir, as) {
  return startService({
    dir,
    as,
    publicBase,
    clientId,
    clientSecret,
    authYaml: `  service_tokens:
    - {name: e2e, sha256: ${sha256Hex(serviceToken)}, scopes: [FETCH_CONFIG]}`,
    oauthYaml: `allowed_redirect_uris: ["${landing}"]`,
  });
}

/// A minimal browser: follows redirects by hand, keeps cookies per host.
class Browser {
  constructor() { this.cookies = new Map(); }
  cookieHeader(url) {
    const jar = this.cookies.get(new URL(url).host) || new Map();
    return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  remember(url, res) {
    const host = new URL(url).host;
    const jar = this.cookies.get(host) || new Map();
    // getSetCookie() is missing on older Node releases.
    const setCookies = res.headers.getSetCookie ? res.headers.getSetCookie()
      : (res.headers.get('set-cookie') || '').split(/,(?=\s*[^;,=\s]+=)/).filter(Boolean);
    for (const c of setCookies) {
      const [pair] = c.split(';');
      const eq = pair.indexOf('=');
      jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    this.cookies.set(host, jar);
  }
  async request(url, { method = 'GET', form } = {}) {
    const res = await fetch(url, {
      method,
      redirect: 'manual',
      headers: {
        cookie: this.cookieHeader(url),
        accept: 'text/html',
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      body: form ? new URLSearchParams(form) : undefined,
    });
    this.remember(url, res);
    return res;
  }
  /// Follows redirects until one leaves for `stopPrefix`; fills the login
  /// and consent forms on the way.
  async walk(start, stopPrefix) {
    let url = start;
    let method = 'GET';
    let form;
    for (let step = 0; step < 20; ++step) {
      const res = await this.request(url, { method, form });
      method = 'GET';
      form = undefined;
      if (res.status >= 300 && res.status < 400) {
        url = new URL(res.headers.get('location'), url).toString();
        if (url.startsWith(stopPrefix)) return url;
        continue;
      }
      const html = await res.text();
      const action = html.match(/<form[^>]*action="([^"]+)"/);
      assert.ok(action, `no form on ${url} (status ${res.status}): ${html.replace(/<style[\s\S]*<\/style>/, "").slice(0, 1500)}`);
      const fields = {};
      for (const [tag] of html.matchAll(/<input[^>]*>/g)) {
        const name = tag.match(/name="([^"]+)"/);
        const value = tag.match(/value="([^"]*)"/);
        if (name) fields[name[1]] = value ? value[1] : '';
      }
      if ('login' in fields) fields.login = 'alice';
      if ('password' in fields) fields.password = 'any-password';
      url = new URL(action[1], url).toString();
      method = 'POST';
      form = fields;
    }
    throw new Error('too many steps');
  }
}

test('authorization code flow end to end against oidc-provider', { timeout: 120000 }, async () => {
  assert.ok(source && binary && clusterDir, 'CONNECTOR_SOURCE_DIR, CONNECTOR_SERVER_BINARY and CONNECTOR_TEST_PG_DIR');
  const dir = mkdtempSync(path.join(tmpdir(), 'cm-e2e-'));
  const as = await startAuthorizationServer({
    clientId, clientSecret, redirectUri: publicBase + callbackPath,
  });
  const cm = await startServer(dir, as);
  const base = `http://127.0.0.1:${cm.port}`;
  try {
    const user = { authorization: `Bearer ${cm.mint('alice')}` };
    const service = { 'x-services-token': serviceToken };

    // The service's OpenAPI document lints clean, and every answer below
    // must be one it lists, with a body its schema accepts.
    const docAnswer = await fetch(`${base}/api/v1/openapi.json`);
    assert.equal(docAnswer.status, 200);
    const doc = await docAnswer.json();
    assert.equal(doc.openapi, '3.1.0');
    assert.equal(doc.servers[0].url, publicBase);
    lintOpenApi(doc, dir);
    const api = contract(doc);
    const call = async (method, url, pattern, headers = {}) => {
      const res = await fetch(`${base}${url}`, { method, headers, redirect: 'manual' });
      const text = await res.text();
      const type = res.headers.get('content-type') || '';
      const body = type.includes('application/json') && text ? JSON.parse(text) : text;
      api.check(method, pattern, res.status, body);
      return { status: res.status, body, headers: res.headers };
    };
    const health = await call('GET', '/api/v1/health', '/api/v1/health');
    assert.equal(health.status, 200);
    const anonymous = await call('GET', '/api/connectors/list', '/api/connectors/list');
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate'), /^Bearer /);
    const unknown = await call('GET', '/api/oauth/nope/authorize', '/api/oauth/{provider}/authorize', user);
    assert.equal(unknown.status, 404);

    // authorize -> the provider's login and consent pages -> back to us
    const authorize = await call('GET', `/api/oauth/oidc-test/authorize?redirect_uri=${encodeURIComponent(landing)}`,
      '/api/oauth/{provider}/authorize', user);
    assert.equal(authorize.status, 200);
    const { auth_url: authUrl } = authorize.body;
    assert.match(authUrl, /code_challenge_method=S256/);
    const browser = new Browser();
    const back = await browser.walk(authUrl, publicBase);
    const callback = new URL(back);
    assert.ok(callback.searchParams.get('code'), back);
    assert.equal(callback.searchParams.get('iss'), as.issuer);

    // callback -> stored. The browser that called authorize brings back the
    // cookie its answer set (the flow's binding to that browser).
    const binding = authorize.headers.get('set-cookie').split(';')[0];
    assert.match(binding, /^cm_flow_[0-9a-f]{16}=[0-9a-f]{64}$/);
    const done = await fetch(`${base}${callbackPath}${callback.search}`,
      { headers: { accept: 'text/html', cookie: binding }, redirect: 'manual' });
    assert.equal(done.status, 302, await done.text());
    assert.equal(done.headers.get('location'), `${landing}?connected=true&provider=oidc-test`);
    api.check('GET', '/api/oauth/{provider}/callback', done.status, '');
    const list = (await call('GET', '/api/connectors/list', '/api/connectors/list', user)).body;
    assert.equal(list.connections.length, 1);
    assert.equal(list.connections[0].account, 'alice@example.test');

    // the token served to a service is the one the provider issued
    const first = (await call('GET', '/api/internal/tokens/oidc-test?user_id=alice',
      '/api/internal/tokens/{provider}', service)).body;
    assert.equal(as.issued.length, 1);
    assert.equal(first.access_token, as.issued[0].access_token);
    assert.ok(await as.introspect(first.access_token));

    // refresh with rotation
    const refreshed = await call('POST', '/api/connectors/oidc-test/refresh',
      '/api/connectors/{provider}/refresh', user);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal(as.issued.length, 2);
    assert.notEqual(as.issued[1].refresh_token, as.issued[0].refresh_token, 'refresh token rotated');
    const second = (await call('GET', '/api/internal/tokens/oidc-test?user_id=alice',
      '/api/internal/tokens/{provider}', service)).body;
    assert.equal(second.access_token, as.issued[1].access_token);
    assert.equal(await as.introspect(as.issued[0].refresh_token), false, 'old refresh token refused');
    assert.ok(await as.introspect(as.issued[1].refresh_token), 'new refresh token active');

    // disconnect -> revoked at the provider
    const removed = await call('DELETE', '/api/connectors/oidc-test', '/api/connectors/{provider}', user);
    const body = removed.body;
    assert.equal(removed.status, 200, JSON.stringify(body));
    assert.equal(body.revoked, true);
    assert.equal(await as.introspect(as.issued[1].refresh_token), false, 'refresh token revoked');
    assert.equal(await as.introspect(as.issued[1].access_token), false, 'access token revoked with its grant');
    const gone = await call('GET', '/api/internal/tokens/oidc-test?user_id=alice&team_id=acme',
      '/api/internal/tokens/{provider}', service);
    assert.equal(gone.status, 404);
    const listedAfter = await call('GET', '/api/connectors/list?scope=team', '/api/connectors/list', user);
    assert.equal(listedAfter.body.connections.length, 0);
    assert.ok(api.checked.size >= 10, [...api.checked].join(', '));
    // No token the provider issued ever reached the server's log.
    for (const t of as.issued) {
      assert.ok(!cm.log().includes(t.access_token));
      assert.ok(!cm.log().includes(t.refresh_token));
    }
  } finally {
    await cm.stop();
    await as.close();
  }
});

// The Connect page (/connect) in a real browser: headless Debian chromium
// driven by puppeteer-core (pinned in tests/e2e/package-lock.json), against
// connector-manager, oidc-provider as the OAuth provider and
// stripe-stateful-mock as Stripe, all on 127.0.0.1 (the browser resolves no
// other host name).
//
//   a. the page names whose session it is; a member connects the OAuth
//      provider from the keyboard (popup, login, consent, back to the page)
//      and disconnects it;
//   b. an API key the provider refuses shows the service's message in the
//      form and stores nothing; one it accepts connects;
//   c. a provider that sends Cross-Origin-Opener-Policy severs the popup's
//      opener: the page still learns the outcome (BroadcastChannel), and so
//      does the SDK without a channel (it asks the catalog);
//   d. while the member's flow is pending, a forged /connect/done page
//      (connected=true, another flow's nonce) settles nothing; the
//      provider's authorization URL for that flow, completed in another
//      browser, ends on the service's "another browser" page and attaches
//      nothing; Connect again cancels the pending flow quietly and a new one
//      connects;
//   e. a callback with an unknown state gets an HTML error page;
//   f. a start the service refuses for an invalid session reaches the SDK
//      (code unauthenticated) and the page (its session-expired message)
//      through /connect/done, at once;
//   g. the SDK and a closed popup: without a BroadcastChannel it rejects
//      popup_closed after closedGraceMs; with one it calls onPopupClosed and
//      keeps waiting until its signal aborts it; an aborted signal opens no
//      popup.
// No secret (session JWT, keys, flow cookie) appears in the service's log.
//
// Run by ctest (ConnectPage.BrowserFlows) with CONNECTOR_SOURCE_DIR,
// CONNECTOR_SERVER_BINARY, CONNECTOR_TEST_PG_DIR, CHROMIUM_PATH and
// CONNECT_ARTIFACTS_DIR (screenshots of every step go there).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { startAuthorizationServer } from './authorization_server.mjs';
import { startService, freePort, waitForLine, stopChild, requireEnvironment, source } from './service.mjs';

const clientId = 'cm-connect-client';
const clientSecret = 'cm-connect-secret-0123456789';
const callbackPath = '/api/oauth/oidc-test/callback';
// stripe-stateful-mock accepts sk_test_ keys and refuses live ones.
const refusedKey = 'sk_live_refused_by_the_stand_in_0001';
const acceptedKey = 'sk_test_4eC39HqLyjWDarjtT1zdp7dc';
const artifacts = process.env.CONNECT_ARTIFACTS_DIR || path.join(os.tmpdir(), 'cm-connect-artifacts');
const WAIT_MS = 15000;

const oidcCard = 'li.provider[data-provider="oidc-test"]';
const stripeCard = 'li.provider[data-provider="stripe"]';
const stripeForm = 'form.connect-form[data-provider="stripe"]';

/** Starts stripe-stateful-mock on a free loopback port. */
async function startStripeStandIn(dir) {
  const port = await freePort();
  const cli = path.join(source, 'tests/e2e/node_modules/stripe-stateful-mock/dist/cli.js');
  const child = spawn(process.execPath, [cli], {
    cwd: dir,
    env: { ...process.env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (chunk) => { log += chunk; });
  child.stderr.on('data', (chunk) => { log += chunk; });
  try {
    await waitForLine(child, (line) => line.includes('Server started'),
      { timeoutMs: 20000, what: 'stripe-stateful-mock', output: () => log });
  } catch (error) {
    await stopChild(child);
    throw error;
  }
  return { port, child, stop: () => stopChild(child) };
}

/** Resolves with the value of `event` on `emitter`, or rejects after `ms`. */
function nextEvent(emitter, event, what, ms = WAIT_MS) {
  let timer;
  let listener;
  const promise = new Promise((resolve, reject) => {
    listener = resolve;
    emitter.once(event, listener);
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return promise.finally(() => {
    clearTimeout(timer);
    emitter.off(event, listener);
  });
}

/** Closes the browser; kills it when it does not close within 10 s. */
async function closeBrowser(browser) {
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve('late'), 10000); });
  const closed = browser.close().then(() => 'closed', () => 'failed');
  if (await Promise.race([closed, late]) !== 'closed') browser.process()?.kill('SIGKILL');
  clearTimeout(timer);
}

test('the Connect page in headless chromium', { timeout: 240000 }, async (t) => {
  requireEnvironment();
  mkdirSync(artifacts, { recursive: true });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cm-connect-'));
  const port = await freePort();
  const publicBase = `http://127.0.0.1:${port}`;
  let as;
  let stripe;
  let cm;
  let browser;
  let shot = 0;
  const screenshot = async (page, step) => {
    shot += 1;
    await page.screenshot({ path: path.join(artifacts, `${String(shot).padStart(2, '0')}-${step}.png`) });
  };
  try {
    as = await startAuthorizationServer({ clientId, clientSecret, redirectUri: publicBase + callbackPath });
    stripe = await startStripeStandIn(dir);
    cm = await startService({
      dir,
      as,
      publicBase,
      port,
      clientId,
      clientSecret,
      extraYaml: `  stripe:\n    validate_url: http://127.0.0.1:${stripe.port}/v1/customers?limit=1`,
    });
    assert.equal(cm.port, port);
    const session = cm.mint('alice');
    const api = async (method, url, body) => {
      const res = await fetch(`${publicBase}${url}`, {
        method,
        headers: {
          authorization: `Bearer ${session}`,
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(WAIT_MS),
      });
      return { status: res.status, body: await res.json() };
    };
    const connections = async () => (await api('GET', '/api/connectors/list')).body.connections;
    const providersConnected = async () => (await connections()).map((c) => c.provider).sort();

    browser = await puppeteer.launch({
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--no-first-run',
        '--no-default-browser-check',
        '--disable-features=Translate,MediaRouter',
        '--disable-background-networking',
        // Loopback only: oidc-provider's pages @import a web font, for one.
        '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      ],
      protocolTimeout: 30000,
      timeout: 30000,
    });
    const prepare = async (page) => {
      page.setDefaultTimeout(WAIT_MS);
      page.setDefaultNavigationTimeout(WAIT_MS);
      await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
      return page;
    };
    const member = await prepare(await browser.newPage());
    await member.setViewport({ width: 1000, height: 700 });
    const pageErrors = [];
    member.on('pageerror', (error) => pageErrors.push(error.message));

    const cardStatus = (name) => member.$eval(`li.provider[data-provider="${name}"]`, (el) => el.dataset.status);

    /**
     * Waits for a popup window that `start` opens; the popup is prepared
     * like the other pages. `start` must open it (a click or a key press).
     */
    const withPopup = async (opener, start) => {
      const opened = nextEvent(opener, 'popup', 'popup window');
      await start();
      const popup = await opened;
      assert.ok(popup, 'the popup is reachable');
      await prepare(popup);
      return popup;
    };

    /**
     * Walks oidc-provider's pages in `page` (a login page when it has no
     * session for this browser yet, then the consent page) as `login`.
     * Returns when the consent form is submitted.
     */
    const throughProvider = async (page, login, label) => {
      await page.waitForFunction(
        (issuer) => location.href.startsWith(`${issuer}/interaction/`) && document.readyState === 'complete'
          && document.querySelector('form button[type="submit"]'),
        { timeout: WAIT_MS }, as.issuer);
      if (await page.$('input[name="login"]')) {
        await screenshot(page, `${label}-provider-login`);
        await page.type('input[name="login"]', login);
        await page.type('input[name="password"]', 'any-password');
        await Promise.all([
          page.waitForNavigation({ waitUntil: 'load' }),
          page.click('button[type="submit"]'),
        ]);
        await page.waitForFunction(() => document.readyState === 'complete' && !document.querySelector('input[name="login"]')
          && document.querySelector('form button[type="submit"]'), { timeout: WAIT_MS });
      }
      assert.match(page.url(), new RegExp(`^${as.issuer}/interaction/`));
      const consent = await page.$eval('form button[type="submit"]', (b) => b.textContent.trim());
      assert.equal(consent, 'Continue');
      await screenshot(page, `${label}-provider-consent`);
      await page.click('form button[type="submit"]');
    };

    await t.test('a. a member connects the OAuth provider from the keyboard and disconnects it', async () => {
      await member.goto(`${publicBase}/connect#session=${session}`, { waitUntil: 'load' });
      await member.waitForSelector(`${oidcCard} button[data-action="connect"]`);
      await member.waitForSelector(stripeCard);
      assert.equal(member.url(), `${publicBase}/connect`, 'the session left the address bar');
      assert.equal(await cardStatus('oidc-test'), 'not_connected');
      assert.equal(await cardStatus('stripe'), 'not_connected');
      assert.equal(await member.evaluate(() => sessionStorage.getItem('cm.session')), session);
      // Whose session this is (decoded from the JWT: mint-token --user alice --team acme).
      const identity = await member.$eval('#identity', (el) => ({ hidden: el.hidden, text: el.textContent }));
      assert.equal(identity.hidden, false);
      assert.match(identity.text, /^Connecting accounts for alice \(team acme\)/);
      await screenshot(member, 'page-loaded');

      // Keyboard only: Tab to the OAuth provider's Connect button, Enter.
      const onConnect = () => member.evaluate((sel) => document.activeElement
        === document.querySelector(`${sel} button[data-action="connect"]`), oidcCard);
      for (let i = 0; i < 30 && !(await onConnect()); ++i) await member.keyboard.press('Tab');
      assert.ok(await onConnect(), 'Tab reaches the Connect button');
      await screenshot(member, 'keyboard-focus-on-connect');
      const popup = await withPopup(member, () => member.keyboard.press('Enter'));
      const closed = nextEvent(popup, 'close', 'closing of the popup');
      await throughProvider(popup, 'alice', 'a');

      // /connect/done tells the page and closes the popup.
      await closed;
      await member.waitForSelector(`${oidcCard}[data-status="connected"]`);
      await member.waitForFunction(() => /Connected to OIDC stand-in as alice@example\.test/
        .test(document.getElementById('status').textContent));
      assert.match(await member.$eval(`${oidcCard} .badge`, (el) => el.textContent), /Connected as alice@example\.test/);
      await screenshot(member, 'oauth-connected');
      // The one screenshot kept for the README (docs/images/connect-page.png),
      // without the focus ring.
      await member.evaluate(() => document.activeElement && document.activeElement.blur());
      await member.screenshot({ path: path.join(artifacts, 'connect-page.png') });
      const list = await connections();
      assert.equal(list.length, 1, JSON.stringify(list));
      assert.equal(list[0].provider, 'oidc-test');
      assert.equal(list[0].account, 'alice@example.test');

      await member.click(`${oidcCard} button[data-action="disconnect"]`);
      await member.waitForSelector(`${oidcCard}[data-status="not_connected"]`);
      await member.waitForFunction(() => document.getElementById('status').textContent === 'Disconnected from OIDC stand-in.');
      assert.deepEqual(await connections(), []);
      assert.equal(await as.introspect(as.issued.at(-1).refresh_token), false, 'the grant was revoked');
      await screenshot(member, 'oauth-disconnected');
    });

    await t.test('b. an API key: refused with the service\'s message, then accepted', async () => {
      await member.click(`${stripeCard} button[data-action="connect"]`);
      const input = `${stripeForm} input[name="api_key"]`;
      await member.waitForSelector(input, { visible: true });
      assert.equal(await member.$eval(input, (el) => el.type), 'password', 'the key is a secret field');
      assert.ok(await member.$eval(input, (el) => el === document.activeElement), 'the form focuses the key');
      await member.keyboard.type(refusedKey);
      const refusal = member.waitForResponse((r) => r.url() === `${publicBase}/api/connectors/connect`
        && r.request().method() === 'POST');
      await member.keyboard.press('Enter');
      const answer = await refusal;
      assert.equal(answer.status(), 422);
      const { error } = await answer.json();
      assert.equal(error.code, 'invalid_credentials');
      const shown = await member.waitForSelector(`${stripeForm} p.form-error`, { visible: true });
      assert.equal(await shown.evaluate((el) => el.textContent), error.message);
      assert.equal(await cardStatus('stripe'), 'not_connected');
      assert.deepEqual(await connections(), [], 'nothing was stored');
      await screenshot(member, 'api-key-refused');

      await member.$eval(input, (el) => { el.value = ''; });
      await member.type(input, acceptedKey);
      await member.keyboard.press('Enter');
      await member.waitForSelector(`${stripeCard}[data-status="connected"]`);
      await member.waitForFunction(() => /^Connected to Stripe/.test(document.getElementById('status').textContent));
      assert.equal(await member.$(stripeForm), null, 'the form is gone');
      assert.deepEqual(await providersConnected(), ['stripe']);
      await screenshot(member, 'api-key-connected');
    });

    await t.test('c. a provider that severs window.opener (COOP)', async () => {
      as.setOpenerPolicy('same-origin');
      const page = await prepare(await browser.newPage());
      await page.setViewport({ width: 1000, height: 700 });
      try {
        // The Connect page hears /connect/done on its BroadcastChannel.
        await page.goto(`${publicBase}/connect#session=${session}`, { waitUntil: 'load' });
        await page.waitForSelector(`${oidcCard}[data-status="not_connected"] button[data-action="connect"]`);
        await page.evaluate(() => {
          window.heard = [];
          new BroadcastChannel('connector-manager:connect').onmessage = (event) => window.heard.push(event.data);
        });
        let popup = await withPopup(page, () => page.click(`${oidcCard} button[data-action="connect"]`));
        // The popup's page changes browsing context group at the provider;
        // follow it by URL.
        const atProvider = async () => {
          const target = await browser.waitForTarget((tg) => tg.type() === 'page'
            && tg.url().startsWith(`${as.issuer}/interaction/`), { timeout: WAIT_MS });
          return prepare(await target.page());
        };
        popup = await atProvider();
        await throughProvider(popup, 'alice', 'c-coop');
        await page.waitForSelector(`${oidcCard}[data-status="connected"]`);
        await page.waitForFunction(() => /Connected to OIDC stand-in/.test(document.getElementById('status').textContent));
        await popup.waitForFunction(() => document.documentElement.dataset.connected === 'true');
        assert.equal(await popup.evaluate(() => window.opener), null, 'the opener was severed');
        const heard = await page.evaluate(() => window.heard);
        assert.equal(heard.length, 1, JSON.stringify(heard));
        const { flow, ...rest } = heard[0];
        assert.deepEqual(rest, { type: 'connector-manager:connect', connected: true, provider: 'oidc-test' },
          '/connect/done told the page on the BroadcastChannel');
        assert.match(flow, /^[0-9a-f]{32}$/, 'with the SDK\'s nonce for the flow');
        await screenshot(popup, 'c-done-without-opener');
        await screenshot(page, 'c-connected-by-broadcast');
        await popup.close();
        assert.deepEqual(await providersConnected(), ['oidc-test', 'stripe']);
        assert.equal((await api('DELETE', '/api/connectors/oidc-test')).status, 200);

        // The SDK without a BroadcastChannel asks the catalog instead.
        await page.evaluate(() => {
          delete window.BroadcastChannel;
        });
        // connect() called by the page's own script, through the provider;
        // what it settled with.
        const sdkConnect = async (step) => {
          await page.evaluate((jwt) => {
            window.outcome = import('/connect/sdk.js')
              .then((sdk) => sdk.connect('oidc-test', { session: jwt, closedGraceMs: 20000 }))
              .then((result) => ({ result }), (error) => ({ error: error.code }));
            return null;
          }, session);
          popup = await atProvider();
          await throughProvider(popup, 'alice', step);
          return page.waitForFunction(() => window.outcome, { timeout: WAIT_MS })
            .then(() => page.evaluate(() => window.outcome));
        };
        const outcome = await sdkConnect('c-sdk-catalog');
        // account_name comes from the catalog only (/connect/done's message has none).
        assert.deepEqual(outcome, { result: { connected: true, provider: 'oidc-test', account_name: 'alice@example.test' } });
        await popup.close();
        assert.deepEqual(await providersConnected(), ['oidc-test', 'stripe']);

        // A reconnect, seen the same way: a new grant is a new connection_id
        // (a refresh keeps it).
        const catalogEntry = async () => (await api('GET', '/api/connectors/catalog')).body.providers
          .find((p) => p.name === 'oidc-test');
        const was = await catalogEntry();
        assert.equal(was.connected, true);
        assert.equal(was.connectable, true);
        assert.match(was.updated_at, /^\d{4}-\d\d-\d\dT/);
        assert.match(was.connection_id, /^[0-9a-f-]{36}$/);
        const again = await sdkConnect('c-sdk-reconnect');
        assert.deepEqual(again, { result: { connected: true, provider: 'oidc-test', account_name: 'alice@example.test' } });
        assert.notEqual((await catalogEntry()).connection_id, was.connection_id);
        await popup.close();
        assert.equal((await api('DELETE', '/api/connectors/oidc-test')).status, 200);
      } finally {
        as.setOpenerPolicy(null);
        await page.close();
      }
    });

    await t.test('d. a forged done page and another browser attach nothing; Connect again starts over', async () => {
      const before = await connections();
      const authorizations = as.authorizations.length;
      await member.evaluate(() => {
        window.heard = [];
        new BroadcastChannel('connector-manager:connect').onmessage = (event) => window.heard.push(event.data);
      });
      const popup = await withPopup(member, () => member.click(`${oidcCard} button[data-action="connect"]`));
      // This browser has a session at the provider since (a): the consent page.
      await popup.waitForFunction((issuer) => location.href.startsWith(`${issuer}/interaction/`)
        && document.querySelector('form button[type="submit"]'), { timeout: WAIT_MS }, as.issuer);
      await screenshot(popup, 'd-member-popup-at-provider');
      assert.equal(as.authorizations.length, authorizations + 1);
      const authUrl = new URL(as.authorizations.at(-1));
      assert.equal(authUrl.searchParams.get('redirect_uri'), publicBase + callbackPath);
      assert.match(authUrl.searchParams.get('state'), /.{16,}/);
      // The flow is bound to the member's browser by an HttpOnly cookie.
      const flowCookies = (await member.cookies(publicBase + callbackPath)).filter((c) => c.name.startsWith('cm_flow_'));
      assert.equal(flowCookies.length, 1, JSON.stringify(flowCookies.map((c) => c.name)));
      assert.equal(flowCookies[0].httpOnly, true);
      assert.equal(flowCookies[0].sameSite, 'Lax');
      assert.equal(flowCookies[0].path, callbackPath);
      const flowSecret = flowCookies[0].value;

      // Anyone can open /connect/done with connected=true; its message
      // carries another flow's nonce, so the pending flow ignores it.
      const forged = await prepare(await browser.newPage());
      try {
        await forged.goto(`${publicBase}/connect/done?origin=${encodeURIComponent(publicBase)}`
          + '&connected=true&provider=oidc-test&flow=0123456789abcdef0123456789abcdef', { waitUntil: 'load' });
        await forged.waitForFunction(() => document.documentElement.dataset.connected === 'true');
        await member.waitForFunction(() => window.heard.length > 0, { timeout: WAIT_MS });
        assert.equal((await member.evaluate(() => window.heard))[0].flow, '0123456789abcdef0123456789abcdef',
          'the member\'s page heard the forged message');
        await new Promise((resolve) => { setTimeout(resolve, 1000); });
        assert.equal(await cardStatus('oidc-test'), 'not_connected');
        const status = await member.$eval('#status', (el) => el.textContent);
        assert.doesNotMatch(status, /Connected/);
        assert.match(status, /^Continue in the OIDC stand-in window/);
        await screenshot(forged, 'd-forged-done-page');
      } finally {
        await forged.close();
      }
      // (A tab in the background cannot be captured.)
      await member.bringToFront();
      await screenshot(member, 'd-forged-done-ignored');
      await popup.close();

      const other = await browser.createBrowserContext();
      try {
        const page = await prepare(await other.newPage());
        await page.goto(authUrl.toString(), { waitUntil: 'load' });
        await throughProvider(page, 'bob', 'd-other-browser');
        await page.waitForSelector('main#error[data-code="forbidden"]');
        assert.ok(page.url().startsWith(publicBase + callbackPath), page.url());
        assert.match(await page.$eval('#message', (el) => el.textContent), /started in another browser/);
        await screenshot(page, 'd-other-browser-refused');
      } finally {
        await other.close();
      }
      const after = await connections();
      assert.deepEqual(after, before, 'no new connection');
      assert.ok(!after.some((c) => c.provider === 'oidc-test'));
      assert.ok(!cm.log().includes(flowSecret), 'the flow cookie is not logged');

      // The page still waits for the first flow (its popup only looks
      // closed to it); Connect again cancels that one, quietly, and the
      // new one connects.
      assert.equal(await cardStatus('oidc-test'), 'not_connected');
      const again = await withPopup(member, () => member.click(`${oidcCard} button[data-action="connect"]`));
      const closed = nextEvent(again, 'close', 'closing of the popup');
      assert.match(await member.$eval('#status', (el) => el.textContent), /^Continue in the OIDC stand-in window/,
        'the cancelled flow shows no error');
      await throughProvider(again, 'alice', 'd-again');
      await closed;
      await member.waitForSelector(`${oidcCard}[data-status="connected"]`);
      await member.waitForFunction(() => /Connected to OIDC stand-in as alice@example\.test/
        .test(document.getElementById('status').textContent));
      assert.deepEqual(await providersConnected(), ['oidc-test', 'stripe']);
      await member.click(`${oidcCard} button[data-action="disconnect"]`);
      await member.waitForSelector(`${oidcCard}[data-status="not_connected"]`);
      await member.waitForFunction(() => document.getElementById('status').textContent === 'Disconnected from OIDC stand-in.');
      assert.deepEqual(await providersConnected(), ['stripe']);
    });

    await t.test('e. a callback with an unknown state gets an HTML error page', async () => {
      const page = await prepare(await browser.newPage());
      try {
        const res = await page.goto(`${publicBase}${callbackPath}?code=x&state=not-a-state`, { waitUntil: 'load' });
        assert.equal(res.status(), 400);
        assert.match(res.headers()['content-type'], /^text\/html/);
        await page.waitForSelector('main#error[data-code="bad_request"]');
        assert.ok((await page.$eval('#message', (el) => el.textContent)).length > 0);
        await screenshot(page, 'e-unknown-state');
      } finally {
        await page.close();
      }
    });

    await t.test('f. a start refused for an invalid session reaches the SDK and the page', async () => {
      let page = await prepare(await browser.newPage());
      try {
        // The SDK, called directly with a session the service refuses:
        // the start answers 303 to /connect/done with error=unauthenticated.
        await page.goto(`${publicBase}/connect`, { waitUntil: 'load' });
        const direct = await page.evaluate(async () => {
          const sdk = await import('/connect/sdk.js');
          const started = Date.now();
          const outcome = await sdk.connect('oidc-test', { session: 'not-a-jwt', closedGraceMs: 0 })
            .then((result) => ({ result }), (error) => ({ error: error.code, status: error.status ?? null }));
          return { ...outcome, ms: Date.now() - started };
        });
        assert.equal(direct.error, 'unauthenticated', JSON.stringify(direct));
        assert.ok(direct.ms < 5000, `rejected after ${direct.ms} ms`);
      } finally {
        await page.close();
      }

      // The Connect page, whose session stops working between its catalog
      // and the start: it shows its session-expired message.
      page = await prepare(await browser.newPage());
      try {
        await page.goto(`${publicBase}/connect#session=${session}`, { waitUntil: 'load' });
        await page.waitForSelector(`${oidcCard}[data-status="not_connected"] button[data-action="connect"]`);
        await page.evaluate(() => {
          const submit = HTMLFormElement.prototype.submit;
          HTMLFormElement.prototype.submit = function submitWithAnotherSession() {
            const field = this.querySelector('input[name="session"]');
            if (field) field.value = 'not-a-jwt';
            return submit.call(this);
          };
        });
        const popup = await withPopup(page, () => page.click(`${oidcCard} button[data-action="connect"]`));
        await page.waitForFunction(() => /^Your session is no longer valid/.test(document.getElementById('status').textContent),
          { timeout: 5000 });
        assert.equal(await page.$$eval('li.provider', (items) => items.length), 0, 'the list is cleared');
        assert.equal(await page.$eval('#identity', (el) => el.hidden), true);
        assert.equal(await page.evaluate(() => sessionStorage.getItem('cm.session')), null);
        await screenshot(page, 'f-session-refused');
        if (!popup.isClosed()) await popup.close().catch(() => {});
      } finally {
        await page.close();
      }
      assert.deepEqual(await providersConnected(), ['stripe']);
    });

    await t.test('g. the SDK and a closed popup: popup_closed, onPopupClosed, abort', async () => {
      const page = await prepare(await browser.newPage());
      try {
        await page.goto(`${publicBase}/connect`, { waitUntil: 'load' });
        await page.evaluate(() => {
          window.opened = 0;
          const open = window.open;
          window.open = function countedOpen(...args) {
            window.opened += 1;
            return open.apply(this, args);
          };
        });
        // An aborted signal: rejected at once, no popup.
        const early = await page.evaluate(async (jwt) => {
          const sdk = await import('/connect/sdk.js');
          return sdk.connect('oidc-test', { session: jwt, signal: AbortSignal.abort() })
            .then(() => 'resolved', (error) => error.code);
        }, session);
        assert.equal(early, 'aborted');
        assert.equal(await page.evaluate(() => window.opened), 0, 'no popup for an aborted signal');

        const start = (grace) => page.evaluate((jwt, closedGraceMs) => {
          window.controller = new AbortController();
          window.popupClosed = 0;
          window.outcome = null;
          import('/connect/sdk.js')
            .then((sdk) => sdk.connect('oidc-test', {
              session: jwt,
              closedGraceMs,
              signal: window.controller.signal,
              onPopupClosed: () => { window.popupClosed += 1; },
            }))
            .then((result) => { window.outcome = { result }; }, (error) => { window.outcome = { error: error.code }; });
          return null;
        }, session, grace);
        const toProvider = async () => {
          const popup = await withPopup(page, () => start(500));
          await popup.waitForFunction((issuer) => location.href.startsWith(`${issuer}/interaction/`)
            && document.querySelector('form button[type="submit"]'), { timeout: WAIT_MS }, as.issuer);
          return popup;
        };

        // With the BroadcastChannel (this page is on the service's origin):
        // after the grace period it tells onPopupClosed and keeps waiting.
        let popup = await toProvider();
        await popup.close();
        await page.waitForFunction(() => window.popupClosed === 1, { timeout: WAIT_MS });
        await new Promise((resolve) => { setTimeout(resolve, 500); });
        assert.equal(await page.evaluate(() => window.outcome), null, 'still waiting for the channel');
        await page.evaluate(() => window.controller.abort());
        await page.waitForFunction(() => window.outcome, { timeout: WAIT_MS });
        assert.deepEqual(await page.evaluate(() => window.outcome), { error: 'aborted' });

        // Without one: popup_closed once the grace period is over.
        await page.evaluate(() => { delete window.BroadcastChannel; });
        const closedAt = Date.now();
        popup = await toProvider();
        await popup.close();
        await page.waitForFunction(() => window.outcome, { timeout: WAIT_MS });
        assert.deepEqual(await page.evaluate(() => window.outcome), { error: 'popup_closed' });
        assert.ok(Date.now() - closedAt < 10000);
        assert.equal(await page.evaluate(() => window.popupClosed), 0);

        // Abort while the popup is open: the SDK closes it.
        popup = await toProvider();
        const gone = nextEvent(popup, 'close', 'closing of the aborted popup');
        await page.evaluate(() => window.controller.abort());
        await gone;
        await page.waitForFunction(() => window.outcome, { timeout: WAIT_MS });
        assert.deepEqual(await page.evaluate(() => window.outcome), { error: 'aborted' });
      } finally {
        await page.close();
      }
      assert.deepEqual(await providersConnected(), ['stripe']);
    });

    await t.test('no page error, and nothing secret in the service\'s log', async () => {
      assert.deepEqual(pageErrors, []);
      const log = cm.log();
      assert.ok(log.length > 0);
      for (const secret of [session, refusedKey, acceptedKey]) {
        assert.ok(!log.includes(secret), 'a secret reached the service\'s log');
      }
    });
  } finally {
    if (browser) await closeBrowser(browser);
    if (cm) await cm.stop();
    if (stripe) await stripe.stop();
    if (as) await as.close();
  }
});

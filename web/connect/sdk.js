/**
 * connector-manager Connect SDK (served as /connect/sdk.js).
 *
 * A small, dependency-free ES module that lets a page connect a member's
 * accounts through connector-manager: list the catalog, connect a provider
 * (with an API key, or with OAuth in a popup), and disconnect it. The Connect
 * page (/connect) uses it, and host applications can import it directly:
 *
 *   import { connect, catalog, disconnect, ConnectError } from 'https://cm.example/connect/sdk.js';
 *   button.addEventListener('click', () => {
 *     connect('github', { session: jwt }).then(ok, err => console.warn(err.code));
 *   });
 *
 * Every call needs `session`: the member's session JWT, minted by the host
 * application's backend. It is sent as `Authorization: Bearer` (and, for
 * OAuth, as a POST form field to the service), never in a URL.
 *
 * OAuth runs in a popup, which must be opened while the user's click is being
 * handled: call connect() synchronously from the click/submit handler (no
 * await before it), or open the popup yourself and pass it as `popup`.
 * A host page with a CSP needs `connect-src` (and `form-action`, if it sets
 * one) to allow the service's origin.
 *
 * How the outcome comes back: /connect/done, where the popup ends, posts it
 * to `window.opener` (addressed to the starting page's origin only) and on
 * the BroadcastChannel named MESSAGE_TYPE (heard by pages of the service's
 * own origin only, such as the Connect page, even when the provider's pages
 * severed window.opener; not by such a page framed by another site, whose
 * storage is partitioned). When the popup closes without either, the SDK
 * asks the catalog for a while before it gives up (see `closedGraceMs`).
 */

/**
 * The `type` of the message /connect/done posts to the page that opened the
 * popup, and the name of the BroadcastChannel it also posts it on.
 */
export const MESSAGE_TYPE = 'connector-manager:connect';

const DEFAULT_TIMEOUT_MS = 600000;
const DEFAULT_CLOSED_GRACE_MS = 20000;
const POLL_MS = 400;
const CLOSED_POLL_MS = 1500;
const POPUP_FEATURES = 'popup,width=520,height=720';

const MESSAGES = {
  popup_blocked: 'The browser blocked the popup window. Allow popups for this page and try again.',
  popup_closed: 'The popup window was closed before the connection finished.',
  timeout: 'The connection did not finish in time.',
  network_error: 'Could not reach the connector service.',
  missing_session: 'No session: pass the member\'s session JWT as options.session.',
};

/** An error from the service or from the connect flow. */
export class ConnectError extends Error {
  /**
   * @param {string} code snake_case code, e.g. `invalid_key`, `popup_closed`, `network_error`
   * @param {string} [message] human-readable text, safe to show to the user
   * @param {number} [status] HTTP status, when the error came from the service
   */
  constructor(code, message, status) {
    super(message || MESSAGES[code] || `The connection failed (${code}).`);
    this.name = 'ConnectError';
    /** @type {string} */
    this.code = code;
    /** @type {number|undefined} */
    this.status = status;
  }
}

/**
 * @typedef {object} Options
 * @property {string} session the member's session JWT (required)
 * @property {string} [baseUrl] the service's URL; defaults to the origin this module was loaded from
 */

/** @returns {{href: string, origin: string}} the base URL without a trailing slash, and its origin */
function base(options) {
  const raw = options && options.baseUrl != null ? String(options.baseUrl) : new URL(import.meta.url).origin;
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new ConnectError('invalid_base_url', 'options.baseUrl is not a URL.');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConnectError('invalid_base_url', 'options.baseUrl must be an http(s) URL.');
  }
  return { href: (url.origin + url.pathname).replace(/\/+$/, ''), origin: url.origin };
}

function sessionOf(options) {
  const session = options && options.session;
  if (typeof session !== 'string' || session === '') throw new ConnectError('missing_session');
  return session;
}

function providerName(provider) {
  if (typeof provider !== 'string' || provider === '') {
    throw new ConnectError('invalid_provider', 'The provider name must be a non-empty string.');
  }
  return provider;
}

/** fetch() with the session; answers the parsed JSON body or throws ConnectError. */
async function call(method, path, options, body) {
  const { href } = base(options);
  const headers = { Authorization: `Bearer ${sessionOf(options)}`, Accept: 'application/json' };
  /** @type {RequestInit} */
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  let text;
  try {
    response = await fetch(href + path, init);
    text = await response.text();
  } catch {
    throw new ConnectError('network_error');
  }
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && typeof data === 'object' ? data.error : null;
    const code = error && typeof error.code === 'string' ? error.code : `http_${response.status}`;
    const message = error && typeof error.message === 'string' && error.message
      ? error.message : `The service answered HTTP ${response.status}.`;
    throw new ConnectError(code, message, response.status);
  }
  if (!data || typeof data !== 'object') {
    throw new ConnectError('bad_response', 'The service sent an unexpected answer.', response.status);
  }
  return data;
}

/**
 * The providers the member can connect, with their state.
 * @param {Options} options
 * @returns {Promise<{providers: Array<object>}>} the body of GET /api/connectors/catalog
 */
export async function catalog(options) {
  const data = await call('GET', '/api/connectors/catalog', options);
  if (!Array.isArray(data.providers)) throw new ConnectError('bad_response', 'The catalog has no providers list.');
  return data;
}

/**
 * Disconnects a provider (the service also revokes the grant where it can).
 * @param {string} provider e.g. `stripe`
 * @param {Options} options
 * @returns {Promise<{deleted: boolean, provider: string, revoked: boolean}>}
 */
export async function disconnect(provider, options) {
  return call('DELETE', `/api/connectors/${encodeURIComponent(providerName(provider))}`, options);
}

/**
 * Connects a provider.
 *
 * With `fields.api_key`, POSTs the fields to /api/connectors/connect (the
 * service checks the key with the provider). Otherwise runs OAuth in a popup,
 * opened synchronously by this call: call it straight from a click handler.
 *
 * @param {string} provider e.g. `stripe`, `github`
 * @param {Options & {
 *   fields?: Object<string,string>,
 *   params?: Object<string,string>,
 *   popup?: Window,
 *   timeoutMs?: number,
 *   closedGraceMs?: number,
 * }} options `fields`: the key form's values (api_key, subdomain, …);
 *   `params`: OAuth authorization parameters (e.g. `{shop: 'acme'}`);
 *   `popup`: a window you opened yourself (still on about:blank), used for OAuth;
 *   `timeoutMs`: how long to wait for the OAuth flow (default 10 minutes);
 *   `closedGraceMs`: once the popup reports closed without a message (the
 *   user closed it, or a provider page severed window.opener with
 *   Cross-Origin-Opener-Policy, which makes it look closed at once), how long
 *   to keep asking the catalog, every 1.5 s, whether the provider got
 *   connected (default 20 s; 0 asks once). It resolves as soon as the
 *   provider turns connected when it was not connected, or needed
 *   reconnecting, at the start; otherwise it rejects with `popup_closed`.
 *   A message from /connect/done that arrives meanwhile still counts.
 * @returns {Promise<{connected: true, provider: string, account_name?: string}>}
 *   rejects with ConnectError (`popup_blocked`, `popup_closed`, `timeout`,
 *   the service's codes, or the flow's code from /connect/done)
 */
export function connect(provider, options) {
  let where;
  let session;
  try {
    providerName(provider);
    where = base(options);
    session = sessionOf(options);
  } catch (error) {
    closeQuietly(options && options.popup);
    return Promise.reject(error);
  }
  const fields = options.fields;
  if (fields && typeof fields === 'object' && Object.prototype.hasOwnProperty.call(fields, 'api_key')) {
    closeQuietly(options.popup);
    return connectWithKey(provider, fields, options);
  }
  return connectWithOAuth(provider, where, session, options);
}

async function connectWithKey(provider, fields, options) {
  const data = await call('POST', '/api/connectors/connect', options, { ...fields, provider });
  const result = { connected: true, provider: typeof data.provider === 'string' ? data.provider : provider };
  if (typeof data.account_name === 'string' && data.account_name) result.account_name = data.account_name;
  return result;
}

function closeQuietly(win) {
  try {
    if (win && !win.closed) win.close();
  } catch {
    // A window we cannot reach is not ours to close.
  }
}

function uniqueName() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return `cm_connect_${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** True when the catalog entry is connected and usable (not waiting for a reconnect). */
function live(entry) {
  return !!entry && entry.connected === true && entry.status !== 'needs_reauth' && entry.status !== 'disconnected';
}

/** The connect result for a catalog entry. */
function resultOf(provider, entry) {
  const result = { connected: true, provider };
  if (entry && typeof entry.account_name === 'string' && entry.account_name) result.account_name = entry.account_name;
  return result;
}

/** A BroadcastChannel for /connect/done's messages, on the service's own origin only; else null. */
function openChannel(where) {
  if (typeof BroadcastChannel !== 'function' || window.location.origin !== where.origin) return null;
  try {
    return new BroadcastChannel(MESSAGE_TYPE);
  } catch {
    return null;
  }
}

function connectWithOAuth(provider, where, session, options) {
  // No await before this point: the popup must open within the user's click.
  const name = uniqueName();
  let popup = options.popup || null;
  if (popup) {
    try {
      popup.name = name;
    } catch {
      popup = null;
    }
  } else {
    popup = window.open('about:blank', name, POPUP_FEATURES);
  }
  if (!popup) return Promise.reject(new ConnectError('popup_blocked'));

  return new Promise((resolve, reject) => {
    let settled = false;
    let poll = 0;
    let timer = 0;
    let closedTimer = 0;
    const channel = openChannel(where);

    const finish = (error, result) => {
      if (settled) return;
      settled = true;
      window.removeEventListener('message', onMessage);
      if (channel) channel.close();
      clearInterval(poll);
      clearTimeout(timer);
      clearTimeout(closedTimer);
      if (error) reject(error);
      else resolve(result);
    };

    /** Settles with /connect/done's outcome. */
    const outcome = (data) => {
      if (data.connected === true) {
        finish(null, { connected: true, provider });
      } else {
        const code = typeof data.error === 'string' && data.error ? data.error : 'connect_failed';
        finish(new ConnectError(code));
      }
    };

    const onMessage = (event) => {
      if (event.source !== popup || event.origin !== where.origin) return;
      const data = event.data;
      if (!data || typeof data !== 'object' || data.type !== MESSAGE_TYPE) return;
      outcome(data);
    };
    window.addEventListener('message', onMessage);

    // Same-origin pages only can post on the channel; a message must name
    // this flow's provider (a failure that names none is left to the popup
    // check below).
    if (channel) {
      channel.onmessage = (event) => {
        const data = event.data;
        if (!data || typeof data !== 'object' || data.type !== MESSAGE_TYPE || data.provider !== provider) return;
        outcome(data);
      };
    }

    try {
      submitStart(provider, where.href, session, options.params, name);
    } catch {
      closeQuietly(popup);
      finish(new ConnectError('start_failed', 'Could not start the connection.'));
      return;
    }

    // The provider's state before the flow, for the fallback check below.
    const lookup = () => catalog({ session, baseUrl: where.href })
      .then((data) => data.providers.find((p) => p && p.name === provider) || null);
    const before = lookup().catch(() => null);

    // Closed without a message: the user closed it, or the provider's page
    // severed window.opener (COOP), which makes it look closed at once while
    // the flow goes on. Ask the catalog every CLOSED_POLL_MS for up to
    // closedGraceMs; a message that arrives meanwhile still settles.
    const grace = Number.isFinite(options.closedGraceMs) && options.closedGraceMs >= 0
      ? options.closedGraceMs : DEFAULT_CLOSED_GRACE_MS;
    const watchCatalog = () => {
      const closedAt = Date.now();
      const check = () => {
        if (settled) return;
        Promise.all([before, lookup().catch(() => null)]).then(([was, now]) => {
          if (settled) return;
          if (was && !live(was) && live(now)) {
            finish(null, resultOf(provider, now));
            return;
          }
          const left = grace - (Date.now() - closedAt);
          if (left <= 0) finish(new ConnectError('popup_closed'));
          else closedTimer = setTimeout(check, Math.min(CLOSED_POLL_MS, left));
        });
      };
      check();
    };
    poll = setInterval(() => {
      if (settled || !popup.closed) return;
      clearInterval(poll);
      watchCatalog();
    }, POLL_MS);

    const timeoutMs = Number.isFinite(options.timeoutMs) && options.timeoutMs > 0 ? options.timeoutMs : DEFAULT_TIMEOUT_MS;
    timer = setTimeout(() => {
      closeQuietly(popup);
      finish(new ConnectError('timeout'));
    }, timeoutMs);
  });
}

/** Navigates the popup named `target` to POST /api/oauth/{provider}/start. */
function submitStart(provider, href, session, params, target) {
  const form = document.createElement('form');
  form.method = 'post';
  form.action = `${href}/api/oauth/${encodeURIComponent(provider)}/start`;
  form.target = target;
  form.hidden = true;
  const add = (name, value) => {
    const input = document.createElement('input');
    input.type = 'hidden';
    input.name = name;
    input.value = value;
    form.appendChild(input);
  };
  add('session', session);
  add('origin', window.location.origin);
  if (params && typeof params === 'object') {
    for (const [key, value] of Object.entries(params)) {
      if (key === 'session' || key === 'origin' || value === undefined || value === null) continue;
      add(key, String(value));
    }
  }
  (document.body || document.documentElement).appendChild(form);
  try {
    form.submit();
  } finally {
    form.remove();
  }
}

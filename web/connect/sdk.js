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
 * one) to allow the service's origin. The service checks the start form's
 * Origin header, so the host page must not use `Referrer-Policy: no-referrer`
 * (browsers then send `Origin: null`); the default policy,
 * strict-origin-when-cross-origin, is fine. A host page on another origin
 * must be listed in the service's cors.allowed_origins.
 *
 * How the outcome comes back: each OAuth connect() makes a random nonce and
 * sends it with the start form; the popup ends on /connect/done with that
 * nonce in its query, and the page there posts {type, flow, connected,
 * provider, error} to `window.opener` (addressed to the starting page's
 * origin only) and on the BroadcastChannel named MESSAGE_TYPE (heard by pages
 * of the service's own origin only, such as the Connect page, even when the
 * provider's pages severed window.opener; not by such a page framed by
 * another site, whose storage is partitioned). connect() accepts a message
 * only when its `flow` is its own nonce (and, for postMessage, when it comes
 * from its popup and the service's origin), so a forged /connect/done page or
 * another tab's flow settles nothing. When the popup closes without a
 * message, connect() asks the catalog for a while (see `closedGraceMs`).
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
/** How long the start form waits for the "before" catalog lookup. */
const BEFORE_WAIT_MS = 3000;
/** The bound on a catalog lookup made while a flow is settling. */
const LOOKUP_MS = 5000;
const POPUP_FEATURES = 'popup,width=520,height=720';

const MESSAGES = {
  popup_blocked: 'The browser blocked the popup window. Allow popups for this page and try again.',
  popup_closed: 'The popup window was closed before the connection finished.',
  timeout: 'The connection did not finish in time.',
  network_error: 'Could not reach the connector service.',
  missing_session: 'No session: pass the member\'s session JWT as options.session.',
  aborted: 'The connection was cancelled.',
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
 * @property {AbortSignal} [signal] aborting it rejects the call with ConnectError `aborted`
 *   (and, for OAuth, closes the popup and stops waiting); an already-aborted
 *   signal rejects at once
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
  const signal = options && options.signal;
  if (signal) init.signal = signal;
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
    throw new ConnectError(signal && signal.aborted ? 'aborted' : 'network_error');
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
 * OAuth, step by step: the popup opens (about:blank); the SDK reads the
 * provider's catalog entry (waiting up to 3 s for it), then posts the start
 * form (session, origin, a fresh random `flow` nonce, `params`) into the
 * popup, which goes on to the provider and ends on /connect/done. The call
 * settles on the first of:
 * - a message from /connect/done carrying this call's nonce (postMessage from
 *   the popup, or the BroadcastChannel on the service's own origin): resolves
 *   when it says connected (with `account_name` from a catalog lookup bounded
 *   to 5 s, left out if that fails), else rejects with its error code (e.g.
 *   `unauthenticated` when the session expired, `access_denied`);
 * - the catalog showing the provider connected by this flow, asked every
 *   1.5 s for `closedGraceMs` once the popup reports closed without a
 *   message: the entry is usable and was not before the start, or its
 *   `connection_id` changed (a reconnect; a refresh keeps it);
 * - the end of that grace period: rejects with `popup_closed`, unless this
 *   page is on the service's origin (it has the BroadcastChannel): then it
 *   calls `onPopupClosed` and keeps waiting for the channel until `timeoutMs`
 *   (a provider that severs window.opener makes the popup look closed while
 *   the member is still using it);
 * - `timeoutMs`: closes the popup, rejects with `timeout`;
 * - `signal` aborted: closes the popup, rejects with `aborted`.
 * The message listener and the channel stay open until the call settles.
 *
 * @param {string} provider e.g. `stripe`, `github`
 * @param {Options & {
 *   fields?: Object<string,string>,
 *   params?: Object<string,string>,
 *   popup?: Window,
 *   timeoutMs?: number,
 *   closedGraceMs?: number,
 *   onPopupClosed?: function(): void,
 * }} options `fields`: the key form's values (api_key, subdomain, …);
 *   `params`: OAuth authorization parameters (e.g. `{shop: 'acme'}`);
 *   `popup`: a window you opened yourself (still on about:blank), used for OAuth;
 *   `timeoutMs`: how long to wait for the OAuth flow in all (default 10 minutes);
 *   `closedGraceMs`: how long to keep asking the catalog once the popup
 *   reports closed without a message (default 20 s; 0 asks once);
 *   `onPopupClosed`: called once when that grace period ends and the call
 *   keeps waiting on the BroadcastChannel (e.g. to tell the member that
 *   connecting again starts over);
 *   `signal`: see Options.
 * @returns {Promise<{connected: true, provider: string, account_name?: string}>}
 *   rejects with ConnectError (`popup_blocked`, `popup_closed`, `timeout`,
 *   `aborted`, the service's codes, or the flow's code from /connect/done)
 */
export function connect(provider, options) {
  let where;
  let session;
  try {
    providerName(provider);
    where = base(options);
    session = sessionOf(options);
    if (options.signal && options.signal.aborted) throw new ConnectError('aborted');
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

/** `bytes` random bytes as lowercase hex. */
function randomHex(bytes) {
  const buffer = new Uint8Array(bytes);
  crypto.getRandomValues(buffer);
  return Array.from(buffer, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Rejects when `promise` has not settled within `ms`. */
function within(promise, ms) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ConnectError('timeout')), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** True when the catalog entry is connected and usable (not waiting for a reconnect). */
function live(entry) {
  return !!entry && entry.connected === true && entry.status !== 'needs_reauth' && entry.status !== 'disconnected';
}

/**
 * True when the catalog says this flow connected the provider: usable now,
 * and not before the start, or a new grant since (a reconnect makes a new
 * connection_id; a refresh keeps it). `before` undefined: unknown, never.
 */
function connectedSince(before, now) {
  if (!live(now) || before === undefined) return false;
  return !live(before) || now.connection_id !== before.connection_id;
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
  const name = `cm_connect_${randomHex(8)}`;
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

  // This flow's nonce: /connect/done echoes it, and only a message that
  // carries it settles this call.
  const nonce = randomHex(16);
  const signal = options.signal || null;
  const timeoutMs = Number.isFinite(options.timeoutMs) && options.timeoutMs > 0 ? options.timeoutMs : DEFAULT_TIMEOUT_MS;
  const grace = Number.isFinite(options.closedGraceMs) && options.closedGraceMs >= 0
    ? options.closedGraceMs : DEFAULT_CLOSED_GRACE_MS;
  const onPopupClosed = typeof options.onPopupClosed === 'function' ? options.onPopupClosed : null;

  const lookup = () => within(catalog({ session, baseUrl: where.href }), LOOKUP_MS)
    .then((data) => data.providers.find((p) => p && p.name === provider) || null);
  // The provider's entry before the flow, asked before the start form goes
  // out: null when the catalog did not list it, undefined when the lookup
  // failed (then the catalog cannot tell this flow's grant from an older
  // one, and only a message settles).
  const before = lookup().catch(() => undefined);

  return new Promise((resolve, reject) => {
    let settled = false;
    // An outcome is known and only its account lookup is left.
    let decided = false;
    let poll = 0;
    let timer = 0;
    let closedTimer = 0;
    const channel = openChannel(where);

    const finish = (error, result) => {
      if (settled) return;
      settled = true;
      window.removeEventListener('message', onMessage);
      if (channel) channel.close();
      if (signal) signal.removeEventListener('abort', onAbort);
      clearInterval(poll);
      clearTimeout(timer);
      clearTimeout(closedTimer);
      if (error) reject(error);
      else resolve(result);
    };

    /** Settles with /connect/done's outcome. */
    const outcome = (data) => {
      if (settled || decided) return;
      decided = true;
      clearInterval(poll);
      clearTimeout(closedTimer);
      if (data.connected === true) {
        // The message has no account name; the catalog has (best effort).
        lookup().then((entry) => finish(null, resultOf(provider, entry)),
          () => finish(null, resultOf(provider, null)));
      } else {
        const code = typeof data.error === 'string' && data.error ? data.error : 'connect_failed';
        finish(new ConnectError(code));
      }
    };

    /** True for /connect/done's message about this flow. */
    const ours = (data) => !!data && typeof data === 'object' && data.type === MESSAGE_TYPE && data.flow === nonce;

    const onMessage = (event) => {
      if (event.source !== popup || event.origin !== where.origin || !ours(event.data)) return;
      outcome(event.data);
    };
    window.addEventListener('message', onMessage);
    if (channel) {
      channel.onmessage = (event) => {
        if (ours(event.data)) outcome(event.data);
      };
    }

    const onAbort = () => {
      closeQuietly(popup);
      finish(new ConnectError('aborted'));
    };
    if (signal) signal.addEventListener('abort', onAbort, { once: true });

    timer = setTimeout(() => {
      closeQuietly(popup);
      finish(new ConnectError('timeout'));
    }, timeoutMs);

    // Closed without a message: the user closed it, or the provider's page
    // severed window.opener (COOP), which makes it look closed at once while
    // the flow goes on. Ask the catalog every CLOSED_POLL_MS for up to
    // closedGraceMs; a message that arrives meanwhile, or later on the
    // channel, still settles.
    const watchCatalog = () => {
      const closedAt = Date.now();
      const check = () => {
        if (settled || decided) return;
        Promise.all([before, lookup().catch(() => null)]).then(([was, now]) => {
          if (settled || decided) return;
          if (connectedSince(was, now)) {
            decided = true;
            finish(null, resultOf(provider, now));
            return;
          }
          const left = grace - (Date.now() - closedAt);
          if (left > 0) {
            closedTimer = setTimeout(check, Math.min(CLOSED_POLL_MS, left));
          } else if (!channel) {
            finish(new ConnectError('popup_closed'));
          } else if (onPopupClosed) {
            try {
              onPopupClosed();
            } catch {
              // The caller's callback is not ours to report.
            }
          }
        });
      };
      check();
    };

    // The start form goes out once the "before" entry is known (or after
    // BEFORE_WAIT_MS): a flow the provider completes at once cannot change
    // the entry before it is read.
    within(before, BEFORE_WAIT_MS).catch(() => null).then(() => {
      if (settled) return;
      if (popup.closed) { // closed before it could start: nothing to wait for
        finish(new ConnectError('popup_closed'));
        return;
      }
      try {
        submitStart(provider, where.href, session, nonce, options.params, name);
      } catch {
        closeQuietly(popup);
        finish(new ConnectError('start_failed', 'Could not start the connection.'));
        return;
      }
      poll = setInterval(() => {
        if (settled || decided || !popup.closed) return;
        clearInterval(poll);
        watchCatalog();
      }, POLL_MS);
    });
  });
}

/** Start-form fields the SDK sets itself; `params` cannot override them. */
const RESERVED_FIELDS = new Set(['session', 'origin', 'flow', 'redirect_uri']);

/** Navigates the popup named `target` to POST /api/oauth/{provider}/start. */
function submitStart(provider, href, session, nonce, params, target) {
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
  add('flow', nonce);
  if (params && typeof params === 'object') {
    for (const [key, value] of Object.entries(params)) {
      if (RESERVED_FIELDS.has(key) || value === undefined || value === null) continue;
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

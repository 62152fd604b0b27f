/**
 * /connect/page.js: the Connect page's logic.
 *
 * Open the page as /connect#session=<member session JWT>. The host
 * application's backend mints that JWT for the signed-in member (locally:
 * `connector-manager mint-token --user U --team T`). The page keeps it in
 * sessionStorage ('cm.session') and removes it from the address bar at once.
 *
 * It shows whose session it is (decoded from the JWT for display only, not
 * verified: a link with someone else's session would connect accounts to
 * that person, so the member must be able to see it), lists the catalog as
 * cards and connects providers through the SDK:
 * OAuth in a popup (opened within the click or submit, so popup blockers let
 * it through), or an API key / service-account key in an inline form that the
 * service checks with the provider. Everything is built with DOM calls and
 * textContent (no HTML strings), and keyboard-only use works throughout.
 * The session and keys are never logged and never put in a URL.
 *
 * Selecting Connect while that provider's OAuth popup is still pending
 * cancels that flow (quietly) and starts a new one. A provider the member is
 * connected to but can no longer connect (`connectable: false`) keeps only
 * its Disconnect button.
 */

import { catalog, connect, disconnect } from '/connect/sdk.js';

const SESSION_KEY = 'cm.session';
const AUTH_MODES = { oauth2: 'OAuth', api_key: 'API key', service_account: 'Service account' };
const NO_SESSION = 'This page needs a session. Open it as /connect#session=<member JWT>, where the JWT is a session token '
  + 'that your application\'s backend mints for the signed-in member.';
const BAD_SESSION = 'Your session is no longer valid. Open this page again from your application.';
const JWT_PAYLOAD = /^[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]*$/;

const statusEl = document.getElementById('status');
const listEl = document.getElementById('providers');
const retryEl = document.getElementById('retry');
const identityEl = document.getElementById('identity');

let session = takeSession();
/** @type {Array<object>} */
let providers = [];
/** The open inline form (one at a time), kept across re-renders. */
let openForm = null; // { provider: string, form: HTMLFormElement }
/**
 * Providers with a connect in flight: the AbortController of an OAuth flow,
 * or KEY_CHECK while the service checks a key.
 * @type {Map<string, AbortController|string>}
 */
const pending = new Map();
const KEY_CHECK = 'key';

// ---------------------------------------------------------------- session

function takeSession() {
  const hash = window.location.hash.replace(/^#/, '');
  const fromHash = hash ? new URLSearchParams(hash).get('session') : null;
  if (fromHash) {
    try {
      sessionStorage.setItem(SESSION_KEY, fromHash);
    } catch {
      // Storage disabled: the session lives in memory for this page view.
    }
    history.replaceState(history.state, '', window.location.pathname + window.location.search);
    return fromHash;
  }
  try {
    return sessionStorage.getItem(SESSION_KEY);
  } catch {
    return null;
  }
}

function dropSession() {
  session = null;
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // Nothing stored.
  }
  for (const [name, flow] of pending) {
    pending.delete(name);
    if (flow instanceof AbortController) flow.abort();
  }
  showIdentity();
}

/**
 * The JWT's payload claims, for display only: nothing here is verified
 * (the service verifies the session on every call). Null when unreadable.
 */
function claimsOf(jwt) {
  const match = typeof jwt === 'string' ? JWT_PAYLOAD.exec(jwt) : null;
  if (!match) return null;
  try {
    const b64 = match[1].replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const json = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    return json && typeof json === 'object' && !Array.isArray(json) ? json : null;
  } catch {
    return null;
  }
}

/** Shows whose accounts this page connects (email, else subject, and team); hidden when unknown. */
function showIdentity() {
  const claims = session ? claimsOf(session) : null;
  const text = (value) => (typeof value === 'string' && value.trim() ? value.trim() : '');
  const who = claims ? text(claims.email) || text(claims.sub) : '';
  if (!who) {
    identityEl.hidden = true;
    identityEl.replaceChildren();
    return;
  }
  const team = text(claims.team);
  identityEl.replaceChildren('Connecting accounts for ', el('strong', {}, who), team ? ` (team ${team})` : '',
    el('span', { class: 'hint' }, ' Not you? Close this page.'));
  identityEl.hidden = false;
}

// ---------------------------------------------------------------- helpers

let lastAnnouncement = '';
/** Puts a message in the polite live region (re-announcing a repeated one). */
function announce(message) {
  if (message === lastAnnouncement && statusEl.textContent === message) {
    statusEl.textContent = '';
    setTimeout(() => { statusEl.textContent = message; }, 50);
  } else {
    statusEl.textContent = message;
  }
  lastAnnouncement = message;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? '' : String(value));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

const idPart = (value) => String(value).replace(/[^A-Za-z0-9_-]/g, '_');
const displayName = (p) => p.display_name || p.name;
const find = (name) => providers.find((p) => p.name === name);
/** False for a provider the member is connected to but can no longer connect. */
const connectable = (p) => p.connectable !== false;
const card = (name) => listEl.querySelector(`li.provider[data-provider="${CSS.escape(name)}"]`);
const button = (name, action) => {
  const li = card(name);
  return li && li.querySelector(`button[data-action="${action}"]`);
};

function statusOf(p) {
  if (p.status === 'needs_reauth') return 'needs_reauth';
  if (p.status === 'connected' || (p.connected === true && !p.status)) return 'connected';
  return 'not_connected';
}

/** A friendly sentence for an error from the SDK. */
function describe(error, p) {
  const name = p ? displayName(p) : 'the service';
  switch (error && error.code) {
    case 'popup_blocked': return 'Your browser blocked the popup window. Allow popups for this page and try again.';
    case 'popup_closed': return `The ${name} window was closed before the connection finished.`;
    case 'timeout': return `Connecting ${name} took too long. Please try again.`;
    case 'network_error': return 'Could not reach the server. Check your connection and try again.';
    case 'bad_request':
    case 'forbidden':
    case 'provider_failed':
      if (error.status === undefined) return `${name} did not complete the connection (${error.code}).`;
      break;
    default:
  }
  return (error && error.message) || 'Something went wrong.';
}

/**
 * True (after saying so) when the error means the session is unusable: a
 * 401 from the API, or `unauthenticated` from an OAuth start the service
 * refused (reported by /connect/done).
 */
function sessionFailed(error) {
  if (!error || (error.status !== 401 && error.code !== 'unauthenticated')) return false;
  dropSession();
  announce(BAD_SESSION);
  listEl.replaceChildren();
  openForm = null;
  return true;
}

// ---------------------------------------------------------------- rendering

function renderCard(p) {
  const state = statusOf(p);
  const ids = `p-${idPart(p.name)}`;
  const li = el('li', { class: 'provider', 'data-provider': p.name, 'data-status': state });

  const head = el('div', { class: 'provider-head' });
  head.append(el('h2', { class: 'provider-name', id: `${ids}-name` }, displayName(p)));
  const badge = state === 'connected'
    ? `Connected${p.account_name ? ` as ${p.account_name}` : ''}`
    : state === 'needs_reauth' ? 'Needs reconnecting' : 'Not connected';
  head.append(el('span', { class: 'badge', id: `${ids}-state` }, badge));
  li.append(head);

  const meta = el('p', { class: 'provider-meta' }, AUTH_MODES[p.auth_mode] || p.auth_mode || '');
  if (typeof p.docs === 'string' && /^https?:\/\//i.test(p.docs)) {
    meta.append(' · ');
    meta.append(el('a', { href: p.docs, target: '_blank', rel: 'noopener noreferrer' }, 'Documentation'));
  }
  li.append(meta);
  if (!connectable(p)) {
    li.append(el('p', { class: 'provider-note', id: `${ids}-note` },
      'This service can no longer be connected here. You can still disconnect it.'));
  }

  const actions = el('div', { class: 'actions' });
  const formOpen = openForm && openForm.provider === p.name;
  if (connectable(p)) {
    const connectButton = el('button', {
      type: 'button',
      'data-action': 'connect',
      'aria-describedby': `${ids}-name ${ids}-state`,
      'aria-expanded': (p.fields || []).length || p.auth_mode !== 'oauth2' ? String(!!formOpen) : null,
      'aria-controls': formOpen ? `${ids}-form` : null,
    }, state === 'not_connected' ? 'Connect' : 'Reconnect');
    connectButton.addEventListener('click', () => onConnect(p.name));
    actions.append(connectButton);
  }
  if (state !== 'not_connected') {
    const disconnectButton = el('button', {
      type: 'button',
      class: 'secondary',
      'data-action': 'disconnect',
      'aria-describedby': connectable(p) ? `${ids}-name` : `${ids}-name ${ids}-note`,
    }, 'Disconnect');
    disconnectButton.addEventListener('click', () => onDisconnect(p.name));
    actions.append(disconnectButton);
  }
  li.append(actions);

  if (formOpen) li.append(openForm.form);
  return li;
}

/**
 * Rebuilds the list, keeping an open form (with its values) and putting focus
 * back where it was, or on `focus` = {provider, action} when given.
 */
function render(focus) {
  const active = document.activeElement;
  let restore = null;
  if (!focus && active && listEl.contains(active)) {
    if (openForm && openForm.form.contains(active)) restore = active;
    else {
      const li = active.closest('li.provider');
      if (li) focus = { provider: li.dataset.provider, action: active.dataset.action || 'connect' };
    }
  }
  if (openForm && !(find(openForm.provider) && connectable(find(openForm.provider)))) openForm = null;
  listEl.replaceChildren(...providers.map(renderCard));
  if (providers.length === 0) announce('No services are available to connect.');
  if (restore && restore.isConnected) restore.focus();
  else if (focus) {
    (button(focus.provider, focus.action) || button(focus.provider, 'connect')
      || button(focus.provider, 'disconnect'))?.focus();
  }
}

async function load(focus) {
  if (!session) {
    announce(NO_SESSION);
    return false;
  }
  try {
    const data = await catalog({ session });
    providers = data.providers.filter((p) => p && typeof p.name === 'string');
    retryEl.hidden = true;
    render(focus);
    return true;
  } catch (error) {
    if (!sessionFailed(error)) {
      announce(`Could not load your accounts: ${describe(error)}`);
      retryEl.hidden = false;
    }
    return false;
  }
}

// ---------------------------------------------------------------- forms

function closeForm(focusConnect) {
  if (!openForm) return;
  const { provider, form } = openForm;
  openForm = null;
  form.remove();
  const b = button(provider, 'connect');
  if (b) {
    b.setAttribute('aria-expanded', 'false');
    b.removeAttribute('aria-controls');
    if (focusConnect) b.focus();
  }
}

function buildForm(p) {
  const ids = `p-${idPart(p.name)}`;
  const oauth = p.auth_mode === 'oauth2';
  const form = el('form', {
    class: 'connect-form',
    'data-provider': p.name,
    id: `${ids}-form`,
    novalidate: true,
    'aria-labelledby': `${ids}-form-title`,
  });
  form.append(el('p', { class: 'form-title', id: `${ids}-form-title` },
    oauth ? `Connect ${displayName(p)}` : `Connect ${displayName(p)} with ${AUTH_MODES[p.auth_mode] === 'Service account' ? 'a service-account key' : 'an API key'}`));

  for (const f of p.fields || []) {
    if (!f || typeof f.name !== 'string') continue;
    const id = `${ids}-f-${idPart(f.name)}`;
    const wrap = el('div', { class: 'field' });
    const label = el('label', { for: id }, f.label || f.name);
    if (!f.required) label.append(' ', el('span', { class: 'optional' }, '(optional)'));
    const common = {
      id,
      name: f.name,
      required: !!f.required,
      autocomplete: 'off',
      autocapitalize: 'off',
      spellcheck: 'false',
      'aria-describedby': `${id}-error`,
    };
    const input = f.multiline
      ? el('textarea', { ...common, rows: 8 })
      : el('input', { ...common, type: f.secret ? 'password' : f.name === 'email' ? 'email' : 'text' });
    input.dataset.label = f.label || f.name;
    if (typeof f.pattern === 'string' && f.pattern) input.dataset.pattern = f.pattern;
    input.addEventListener('input', () => {
      if (input.getAttribute('aria-invalid') === 'true') checkField(input);
    });
    const error = el('p', { class: 'field-error', id: `${id}-error` });
    error.hidden = true;
    wrap.append(label, input, error);
    form.append(wrap);
  }

  form.append(el('p', { class: 'form-progress' }));
  const row = el('div', { class: 'form-actions' });
  row.append(el('button', { type: 'submit' }, 'Connect'));
  const cancel = el('button', { type: 'button', class: 'secondary', 'data-action': 'cancel' }, 'Cancel');
  cancel.addEventListener('click', () => closeForm(true));
  row.append(cancel);
  form.append(row);

  form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      closeForm(true);
    }
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    onSubmit(p.name, form);
  });
  return form;
}

/** The field's trimmed value (a multiline value is kept as typed). */
function valueOf(input) {
  return input.tagName === 'TEXTAREA' ? input.value : input.value.trim();
}

/** Validates one field (required, pattern); shows or clears its message. */
function checkField(input) {
  const value = valueOf(input);
  const label = input.dataset.label;
  let message = '';
  if (!value.trim()) {
    if (input.required) message = `${label} is required.`;
  } else if (input.dataset.pattern) {
    let re = null;
    try {
      re = new RegExp(input.dataset.pattern);
    } catch {
      re = null; // An unusable pattern is the server's to enforce.
    }
    if (re && !re.test(value)) message = `${label} does not look right. Check it and try again.`;
  }
  input.setCustomValidity(message);
  const error = document.getElementById(input.getAttribute('aria-describedby'));
  if (message) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
  if (error) {
    error.textContent = message;
    error.hidden = !message;
  }
  return !message;
}

function formError(form, message) {
  form.querySelector('.form-error')?.remove();
  if (!message) return;
  const p = el('p', { class: 'form-error', role: 'alert' }, message);
  form.querySelector('.form-actions').before(p);
}

function firstField(form) {
  return form.querySelector('input, textarea');
}

// ---------------------------------------------------------------- actions

/** Cancels the provider's pending OAuth flow, if any (quietly: no error is shown). */
function cancelFlow(name) {
  const flow = pending.get(name);
  if (!(flow instanceof AbortController)) return false;
  pending.delete(name);
  flow.abort();
  return true;
}

function onConnect(name) {
  const p = find(name);
  if (!p || !connectable(p)) return;
  if (pending.get(name) === KEY_CHECK) {
    announce(`Connecting ${displayName(p)} is already in progress.`);
    return;
  }
  const fields = (p.fields || []).filter((f) => f && typeof f.name === 'string');
  if (p.auth_mode === 'oauth2' && fields.length === 0) {
    startOAuth(p, {}, null); // Synchronously, inside the click: the popup opens now.
    return;
  }
  // A flow started from the form: cancel it; submitting starts a new one.
  if (cancelFlow(name)) {
    if (openForm && openForm.provider === name) busy(openForm.form, '');
    announce('');
  }
  if (openForm && openForm.provider === name) {
    firstField(openForm.form)?.focus();
    return;
  }
  closeForm(false);
  openForm = { provider: name, form: buildForm(p) };
  const li = card(name);
  li.append(openForm.form);
  const b = button(name, 'connect');
  b.setAttribute('aria-expanded', 'true');
  b.setAttribute('aria-controls', openForm.form.id);
  (firstField(openForm.form) || openForm.form.querySelector('button[type="submit"]')).focus();
}

function onSubmit(name, form) {
  const p = find(name);
  if (!p || pending.get(name) === KEY_CHECK) return;
  const inputs = Array.from(form.querySelectorAll('input, textarea'));
  const valid = inputs.map(checkField);
  const bad = inputs[valid.indexOf(false)];
  if (bad) {
    bad.focus();
    return;
  }
  const values = {};
  for (const input of inputs) {
    const value = valueOf(input);
    if (value.trim()) values[input.name] = value;
  }
  formError(form, '');
  if (p.auth_mode === 'oauth2') startOAuth(p, values, form); // still inside the submit event
  else submitKey(p, values, form);
}

function busy(form, message) {
  if (!form) return;
  form.querySelector('button[type="submit"]').disabled = !!message;
  form.querySelector('.form-progress').textContent = message || '';
}

async function finishConnected(p, form) {
  if (!session) return; // the session ended meanwhile; the page said so
  if (openForm && openForm.form === form) openForm = null;
  form?.remove();
  if (!(await load({ provider: p.name, action: 'connect' }))) return; // load() said why
  const now = find(p.name) || p;
  announce(`Connected to ${displayName(now)}${now.account_name ? ` as ${now.account_name}` : ''}.`);
}

function failed(p, form, error) {
  if (sessionFailed(error)) return;
  const message = describe(error, p);
  if (form && form.isConnected) {
    busy(form, '');
    formError(form, message);
    announce('');
    firstField(form)?.focus();
  } else {
    announce(message);
  }
}

function startOAuth(p, params, form) {
  if (!session) {
    announce(NO_SESSION);
    return;
  }
  cancelFlow(p.name); // a new Connect replaces a pending one
  const controller = new AbortController();
  const current = () => pending.get(p.name) === controller;
  const done = connect(p.name, { // opens the popup before returning
    session,
    params,
    signal: controller.signal,
    // The popup looks closed and the SDK goes on listening for the outcome.
    onPopupClosed: () => {
      if (current()) {
        announce(`Waiting for ${displayName(p)}… If you closed its window before finishing, select Connect to start again.`);
      }
    },
  });
  pending.set(p.name, controller);
  const waiting = `Continue in the ${displayName(p)} window…`;
  busy(form, waiting);
  announce(waiting);
  done.then(() => {
    if (!current()) return;
    pending.delete(p.name);
    finishConnected(p, form);
  }, (error) => {
    if (!current()) return; // cancelled (a new Connect, or the session ended): nothing to say
    pending.delete(p.name);
    failed(p, form, error);
  });
}

async function submitKey(p, fields, form) {
  if (!session) {
    announce(NO_SESSION);
    return;
  }
  pending.set(p.name, KEY_CHECK);
  const checking = `Checking the key with ${displayName(p)}…`;
  busy(form, checking);
  announce(checking);
  try {
    await connect(p.name, { session, fields });
  } catch (error) {
    pending.delete(p.name);
    failed(p, form, error);
    return;
  }
  pending.delete(p.name);
  await finishConnected(p, form);
}

async function onDisconnect(name) {
  const p = find(name);
  if (!p || !session) return;
  const b = button(name, 'disconnect');
  if (b) b.disabled = true;
  announce(`Disconnecting ${displayName(p)}…`);
  try {
    await disconnect(name, { session });
  } catch (error) {
    if (sessionFailed(error)) return;
    if (error.status !== 404) { // 404: it was not connected any more; just refresh
      if (b) {
        b.disabled = false;
        b.focus();
      }
      announce(`Could not disconnect ${displayName(p)}: ${describe(error, p)}`);
      return;
    }
  }
  if (openForm && openForm.provider === name) closeForm(false);
  if (await load({ provider: name, action: 'connect' })) announce(`Disconnected from ${displayName(p)}.`);
}

// ---------------------------------------------------------------- start

retryEl.addEventListener('click', async () => {
  announce('Loading your accounts…');
  if (await load()) {
    announce('');
    listEl.querySelector('button')?.focus();
  } else if (retryEl.hidden === false) {
    retryEl.focus();
  }
});

showIdentity();
if (session) {
  announce('Loading your accounts…');
  load().then((ok) => { if (ok && providers.length) announce(''); });
} else {
  announce(NO_SESSION);
}

/**
 * /connect/done.js: the end of the OAuth popup.
 *
 * The service redirects the popup to
 *   /connect/done?origin=<opener origin>&flow=<nonce>&connected=true&provider=<name>
 *   /connect/done?origin=<opener origin>&flow=<nonce>&connected=false&provider=<name>&error=<code>
 * where <nonce> is the one the SDK sent with the start form. This script posts
 * {type:'connector-manager:connect', flow, connected, provider, error} to
 * window.opener, addressed to that origin only (never '*'), so only the page
 * that started the flow can read it, and closes the window. It also posts the
 * same message on the BroadcastChannel 'connector-manager:connect', which only
 * pages of this (the service's) origin hear: the Connect page learns the
 * outcome that way even when a provider's page severed window.opener
 * (Cross-Origin-Opener-Policy).
 *
 * Anyone can open this URL with any query, so the SDK trusts a message only
 * when its `flow` is the nonce it made for the flow it is waiting for (and,
 * for postMessage, when it comes from its own popup and the service's
 * origin): a forged done page, or another tab's flow, settles nothing.
 * The outcome is always shown as text too, with a Close button.
 */

const MESSAGE_TYPE = 'connector-manager:connect';
const CLOSE_DELAY_MS = 300;

const query = new URLSearchParams(window.location.search);
const connected = query.get('connected') === 'true';
// Only simple names/codes are shown or sent: the query is attacker-controllable.
const token = (value) => (value && /^[A-Za-z0-9_.-]{1,64}$/.test(value) ? value : undefined);
const provider = token(query.get('provider'));
const error = connected ? undefined : token(query.get('error')) || 'unknown_error';
// The SDK's nonce for the flow; anything else is treated as absent.
const flowValue = query.get('flow');
const flow = flowValue && /^[A-Za-z0-9_-]{16,64}$/.test(flowValue) ? flowValue : undefined;

/** The http(s) origin the query names, or null. */
function openerOrigin(value) {
  if (!value) return null;
  try {
    const url = new URL(value);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return null;
    return url.origin === value.replace(/\/$/, '') ? url.origin : null;
  } catch {
    return null;
  }
}

const outcome = document.getElementById('outcome');
const close = document.getElementById('close');

outcome.textContent = connected
  ? `Connected${provider ? ` to ${provider}` : ''}. You can close this window.`
  : `The connection failed (${error}). You can close this window.`;
document.documentElement.dataset.connected = String(connected);

close.addEventListener('click', () => window.close());
close.focus();

const message = { type: MESSAGE_TYPE, flow, connected, provider, error };

if (typeof BroadcastChannel === 'function') {
  try {
    // Left open: the page closes soon anyway, and closing the channel at
    // once could race the delivery.
    new BroadcastChannel(MESSAGE_TYPE).postMessage(message);
  } catch {
    // No channel in this browser; the opener (if any) is told below.
  }
}

const origin = openerOrigin(query.get('origin'));
if (window.opener && origin) {
  try {
    window.opener.postMessage(message, origin);
    setTimeout(() => window.close(), CLOSE_DELAY_MS);
  } catch {
    // The opener is gone or unreachable; the text above says what happened.
  }
}

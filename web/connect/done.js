/**
 * /connect/done.js: the end of the OAuth popup.
 *
 * The service redirects the popup to
 *   /connect/done?origin=<opener origin>&connected=true&provider=<name>
 *   /connect/done?origin=<opener origin>&connected=false&error=<code>
 * This script posts {type:'connector-manager:connect', connected, provider, error}
 * to window.opener, addressed to that origin only (never '*'), so only the
 * page that started the flow can read it; the SDK also checks that the message
 * comes from its popup and from the service's origin. It then closes the
 * window. The outcome is always shown as text too, with a Close button.
 */

const MESSAGE_TYPE = 'connector-manager:connect';
const CLOSE_DELAY_MS = 300;

const query = new URLSearchParams(window.location.search);
const connected = query.get('connected') === 'true';
// Only simple names/codes are shown or sent: the query is attacker-controllable.
const token = (value) => (value && /^[A-Za-z0-9_.-]{1,64}$/.test(value) ? value : undefined);
const provider = token(query.get('provider'));
const error = connected ? undefined : token(query.get('error')) || 'unknown_error';

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

const origin = openerOrigin(query.get('origin'));
if (window.opener && origin) {
  try {
    window.opener.postMessage({ type: MESSAGE_TYPE, connected, provider, error }, origin);
    setTimeout(() => window.close(), CLOSE_DELAY_MS);
  } catch {
    // The opener is gone or unreachable; the text above says what happened.
  }
}

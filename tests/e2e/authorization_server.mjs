// oidc-provider configured as the stand-in authorization server: PKCE
// required, refresh tokens rotate, revocation and introspection enabled, the
// development login and consent pages on. Every token response is recorded
// so the test can check which tokens the provider still considers active,
// and every authorization request (its full URL, with the client's state),
// so a test can replay one in another browser. setOpenerPolicy('same-origin')
// makes its pages send Cross-Origin-Opener-Policy, as some real providers
// do: a popup that reaches them loses its window.opener.
import http from 'node:http';
import Provider from 'oidc-provider';

export async function startAuthorizationServer({ clientId, clientSecret, redirectUri, port = 0 }) {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    }],
    pkce: { required: () => true },
    rotateRefreshToken: true,
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },
    claims: { openid: ['sub'], email: ['email'] },
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, email: `${id}@example.test` }),
    }),
    cookies: { keys: ['e2e-cookie-key-0123456789abcdef'] },
    ttl: { AccessToken: 3600, RefreshToken: 86400, Grant: 86400, Session: 3600, Interaction: 600 },
  });
  const issued = [];
  const authorizations = [];
  let openerPolicy = null;
  provider.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/auth') authorizations.push(`${issuer}${ctx.originalUrl}`);
    await next();
    if (openerPolicy) ctx.set('Cross-Origin-Opener-Policy', openerPolicy);
    if (ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.access_token)
      issued.push({ access_token: ctx.body.access_token, refresh_token: ctx.body.refresh_token });
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
  server.on('request', provider.callback());

  async function introspect(token) {
    const res = await fetch(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, client_id: clientId, client_secret: clientSecret }),
    });
    return (await res.json()).active === true;
  }

  return {
    issuer,
    issued,
    authorizations,
    introspect,
    /** Sends `Cross-Origin-Opener-Policy: value` on every response from now on (null: none). */
    setOpenerPolicy: (value) => { openerPolicy = value; },
    close: () => new Promise((r) => {
      server.close(r);
      // A browser's keep-alive connections would hold close() open.
      if (server.closeAllConnections) server.closeAllConnections();
    }),
  };
}

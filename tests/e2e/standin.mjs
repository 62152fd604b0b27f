// A local OAuth 2.0 stand-in for trying connector-manager by hand:
// oidc-provider with login and consent pages, on 127.0.0.1:9400 (or PORT).
//
//   (cd tests/e2e && npm ci) && node tests/e2e/standin.mjs
//
// It prints the environment that points a scripts/run server at it.
import { startAuthorizationServer } from './authorization_server.mjs';

const port = Number(process.env.PORT || 9400);
const cm = process.env.CM_BASE || 'http://127.0.0.1:8080';
const as = await startAuthorizationServer({
  clientId: 'cm-local-client',
  clientSecret: 'cm-local-secret-0123456789',
  redirectUri: `${cm}/api/oauth/oidc-test/callback`,
  port,
});
console.log(`OAuth stand-in listening on ${as.issuer} (any login and password work)

Start connector-manager against it:

  CM_PROVIDERS_FILE=$PWD/tests/e2e/providers.yaml \\
  CM_PROVIDERS__OIDC_TEST__CLIENT_ID=cm-local-client \\
  CM_PROVIDERS__OIDC_TEST__CLIENT_SECRET=cm-local-secret-0123456789 \\
  CM_PROVIDERS__OIDC_TEST__AUTHORIZATION_URL=${as.issuer}/auth \\
  CM_PROVIDERS__OIDC_TEST__TOKEN_URL=${as.issuer}/token \\
  CM_PROVIDERS__OIDC_TEST__REVOKE_URL=${as.issuer}/token/revocation \\
  CM_PROVIDERS__OIDC_TEST__ACCOUNT_URL=${as.issuer}/me \\
  scripts/run
`);

// A real OpenID provider for the workload identity tests: node's oidc-provider issuing RFC 9068
// JWT access tokens for a resource indicator, by the client credentials grant.
//
// Usage: node issuer.mjs CONFIG.json, where CONFIG is
//   {"port": N, "jwks": {"keys": [private JWKs, the signing one first]}, "clients": ["id", ...],
//    "ttl": seconds}
// A resource "urn:<audience>" gets tokens whose aud is <audience>. GET /_jwks_hits says how many
// times the key set was fetched. Prints "ready" once listening.
import fs from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
let jwksHits = 0;

const provider = new Provider(issuer, {
  clients: config.clients.map((id) => ({
    client_id: id,
    client_secret: `secret-${id}`,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
  })),
  jwks: config.jwks,
  cookies: { keys: ['test-cookie-key-not-a-secret'] },
  ttl: { ClientCredentials: () => config.ttl || 600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:delegation-vault',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'vault',
        audience: resource.replace(/^urn:/, ''),
        accessTokenTTL: config.ttl || 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

provider.use(async (ctx, next) => {
  if (ctx.path === '/_jwks_hits') {
    ctx.body = { hits: jwksHits };
    return;
  }
  if (ctx.path === '/jwks') jwksHits += 1;
  await next();
});

const server = http.createServer(provider.callback());
server.listen(config.port, '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));

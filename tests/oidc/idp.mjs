// A real OpenID Connect provider for connectd's end-to-end tests: panva's
// oidc-provider (an OpenID-certified implementation) on loopback, with the
// login and consent steps written against its interaction API, as a site
// would, so passwords are checked.
//
// Environment:
//   IDP_USERS          JSON file, read at every lookup so a test can rename
//                      someone: {"<sub>": {"password": "...", "claims": {...}}}
//   IDP_CLIENT_ID, IDP_CLIENT_SECRET, IDP_REDIRECT_URI   the one client
//   IDP_TLS_CERT, IDP_TLS_KEY   optional: serve https with this PEM pair
// Prints {"issuer": "http(s)://127.0.0.1:<port>"} on stdout once listening.
//
// Test-only endpoints, under /__test__/:
//   POST /__test__/rotate         sign with a new key from now on, and
//                                 publish only that one
//   POST /__test__/tamper?mode=M  alter the ID token of the next token
//                                 response, as an attacker in the middle
//                                 would: wrong-audience, extra-audience,
//                                 wrong-issuer, expired, future, bad-signature,
//                                 alg-none, unadvertised-alg, wrong-nonce

import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import * as jose from 'jose';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`idp.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const usersFile = env('IDP_USERS');
const client = {
  client_id: env('IDP_CLIENT_ID'),
  client_secret: env('IDP_CLIENT_SECRET'),
  redirect_uris: [env('IDP_REDIRECT_URI')],
  response_types: ['code'],
  grant_types: ['authorization_code'],
  token_endpoint_auth_method: 'client_secret_basic',
};

const users = () => JSON.parse(readFileSync(usersFile, 'utf8'));

async function newSigningKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let signingKey = await newSigningKey();
let tamperNext = null;

async function tamper(mode, idToken, issuer) {
  const claims = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  let key = await jose.importJWK(signingKey, 'RS256');
  let header = { alg: 'RS256', kid: signingKey.kid, typ: 'JWT' };
  switch (mode) {
    case 'wrong-audience': claims.aud = 'someone-else'; break;
    case 'extra-audience': claims.aud = [client.client_id, 'someone-else']; delete claims.azp; break;
    case 'wrong-issuer': claims.iss = `${issuer}/other`; break;
    case 'expired': claims.iat = now - 7200; claims.exp = now - 3600; break;
    case 'future': claims.iat = now + 3600; claims.exp = now + 7200; break;
    case 'wrong-nonce': claims.nonce = 'not-the-nonce-connectd-sent'; break;
    case 'bad-signature': {
      // Signed by someone else's key, under the provider's key id.
      const { privateKey } = await jose.generateKeyPair('RS256');
      key = privateKey;
      break;
    }
    case 'unadvertised-alg':
      key = new TextEncoder().encode(client.client_secret);
      header = { alg: 'HS256', typ: 'JWT' };
      break;
    case 'alg-none': {
      const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      return `${part({ alg: 'none', typ: 'JWT' })}.${part(claims)}.`;
    }
    default: throw new Error(`unknown tamper mode ${mode}`);
  }
  return new jose.SignJWT(claims).setProtectedHeader(header).sign(key);
}

function makeProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [client],
    jwks: { keys: [signingKey] },
    pkce: { methods: ['S256'], required: () => true },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name', 'given_name', 'family_name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
      role: ['role'],
    },
    features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
    cookies: { keys: ['connect-tests-cookie-key'] },
    async findAccount(ctx, id) {
      const user = users()[id];
      if (!user) return undefined;
      return { accountId: id, async claims() { return { ...user.claims, sub: id } } };
    },
  });
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && tamperNext && ctx.body && ctx.body.id_token) {
      const mode = tamperNext;
      tamperNext = null;
      ctx.body = { ...ctx.body, id_token: await tamper(mode, ctx.body.id_token, issuer) };
    }
  });
  return provider;
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><title>Test IdP</title></head><body>${body}</body></html>`);
}

function loginForm(uid, error) {
  return `${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<input name="login" type="text"><input name="password" type="password">
<button type="submit">Sign in</button></form>
<a href="/interaction/${escape(uid)}/abort">Cancel</a>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

// Login checks the password; consent is given for the one first-party
// client, as a site's own IdP would.
async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  if (details.prompt.name === 'login') {
    if (req.method !== 'POST') return page(res, 200, loginForm(uid));
    const form = await readForm(req);
    const user = users()[form.login];
    if (!user || user.password !== form.password) {
      return page(res, 200, loginForm(uid, 'Invalid login or password'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: form.login } },
      { mergeWithLastSubmission: false });
  }
  if (details.prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } },
      { mergeWithLastSubmission: true });
  }
  return page(res, 501, `unexpected prompt ${escape(details.prompt.name)}`);
}

const tls = process.env.IDP_TLS_CERT
  ? { cert: readFileSync(process.env.IDP_TLS_CERT), key: readFileSync(env('IDP_TLS_KEY')) }
  : null;
const createServer = tls ? (handler) => createHttpsServer(tls, handler) : createHttpServer;

let provider;
const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/__test__/rotate' && req.method === 'POST') {
      signingKey = await newSigningKey();
      provider = makeProvider(provider.issuer);
      res.writeHead(200).end(signingKey.kid);
      return;
    }
    if (url.pathname === '/__test__/tamper' && req.method === 'POST') {
      tamperNext = url.searchParams.get('mode');
      res.writeHead(200).end(tamperNext);
      return;
    }
    const m = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort))?$/);
    if (m) {
      await interaction(provider, req, res, m[1], m[2]);
      return;
    }
    provider.callback()(req, res);
  } catch (e) {
    console.error(e);
    if (!res.headersSent) page(res, 500, escape(e.message));
  }
});

server.listen(0, '127.0.0.1', () => {
  const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;
  provider = makeProvider(issuer);
  console.log(JSON.stringify({ issuer }));
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));

// A real OpenID Connect provider for Portico's tests: panva's oidc-provider (OpenID
// certified) dressed with AWS Cognito's hosted-UI paths, a plain HTML login page, and
// test-only control endpoints under /__test/ (fault injection, runtime users and clients,
// recorded revocations and logins).
//
//   node tests/idp/idp.mjs CONFIG.json
//
// Prints one JSON line on stdout once listening: {"event":"ready","issuer":"http://127.0.0.1:PORT"}.
// Exits on SIGTERM/SIGINT and when its stdin reaches EOF (the parent died or closed it).
// Logs go to stderr only. tests/support/idp.py is the Python side; its docstring has the
// config format.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import * as jose from 'jose';
import Provider, { interactionPolicy } from 'oidc-provider';

const HOST = '127.0.0.1';
const GROUP_AND_ROLE_CLAIMS = [
  'cognito:username', 'cognito:groups', 'cognito:roles', 'cognito:preferred_role',
  'groups', 'roles',
];
const PROFILE_CLAIMS = [
  'name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username',
  'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at',
];
const SCOPE_CLAIMS = {
  email: ['email', 'email_verified'],
  phone: ['phone_number', 'phone_number_verified'],
  address: ['address'],
  profile: PROFILE_CLAIMS,
};
const KNOWN_CLAIMS = new Set(['sub', ...GROUP_AND_ROLE_CLAIMS, ...Object.values(SCOPE_CLAIMS).flat()]);
const ID_TOKEN_FAULTS = new Set([
  'bad_signature', 'alg_none', 'hs256_public_key', 'wrong_iss', 'wrong_aud', 'expired', 'not_yet_valid',
]);
const USERINFO_FAULTS = new Set(['malformed', 'missing_sub', 'error']);

function log(...args) {
  process.stderr.write(`[test-idp] ${args.join(' ')}\n`);
}

function fail(message) {
  process.stderr.write(`[test-idp] fatal: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------
// Configuration

if (process.argv.length < 3) fail('usage: node idp.mjs CONFIG.json');
let config;
try {
  config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
} catch (error) {
  fail(`cannot read config ${process.argv[2]}: ${error.message}`);
}

/** Cognito's subs are UUIDs; the default one is derived from the username, so it is stable. */
function defaultSub(username) {
  const hex = crypto.createHash('sha256').update(`portico-test-idp:${username}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

const users = new Map(); // username -> {username, password, sub, claims}
const usersBySub = new Map();

function putUser(spec) {
  if (!spec || typeof spec.username !== 'string' || !spec.username) throw new Error('user needs a username');
  if (typeof spec.password !== 'string') throw new Error(`user ${spec.username} needs a password`);
  const claims = { ...(spec.claims ?? {}) };
  const sub = spec.sub ?? claims.sub ?? defaultSub(spec.username);
  delete claims.sub;
  const previous = users.get(spec.username);
  if (previous) usersBySub.delete(previous.sub);
  const user = { username: spec.username, password: spec.password, sub: String(sub), claims };
  users.set(user.username, user);
  usersBySub.set(user.sub, user);
  return user;
}

for (const spec of config.users ?? []) putUser(spec);

// Claims are returned only when a scope maps to them (an oidc-provider rule). Custom claims
// (Cognito's cognito:*, Keycloak's groups...) ride on `openid`, so they come with every
// login, as Cognito does. The set is fixed when the provider is built: names seen in the
// start-up users and config.extra_claims are added; POST /__test/users reports the rest.
const openidClaims = new Set(['sub', ...GROUP_AND_ROLE_CLAIMS, ...(config.extra_claims ?? [])]);
for (const user of users.values()) {
  for (const name of Object.keys(user.claims)) if (!KNOWN_CLAIMS.has(name)) openidClaims.add(name);
}
const returnedClaims = new Set([...openidClaims, ...Object.values(SCOPE_CLAIMS).flat()]);

// ---------------------------------------------------------------------------------------
// Storage: unbounded (the built-in MemoryAdapter is an LRU of 1000 entries, so a long test
// run would see valid tokens vanish). Expired entries are dropped when read.

const store = new Map(); // `${model}:${id}` -> {payload, expiresAt}
const clientsById = new Map(); // client_id -> metadata, served through the adapter as "dynamic" clients

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.value;
}

function storeSet(key, value, expiresIn) {
  store.set(key, { value, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
}

const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);

class UnboundedAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    if (this.model === 'Session') storeSet(`sessionUid:${payload.uid}`, id, expiresIn);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const grant = storeGet(grantKey);
      if (grant) grant.push(this.key(id));
      else storeSet(grantKey, [this.key(id)], expiresIn);
    }
    if (payload.userCode) storeSet(`userCode:${payload.userCode}`, id, expiresIn);
    storeSet(this.key(id), payload, expiresIn);
  }

  async find(id) {
    if (this.model === 'Client') {
      const metadata = clientsById.get(id);
      return metadata ? structuredClone(metadata) : undefined;
    }
    return storeGet(this.key(id));
  }

  async findByUid(uid) {
    const id = storeGet(`sessionUid:${uid}`);
    return id ? this.find(id) : undefined;
  }

  async findByUserCode(userCode) {
    const id = storeGet(`userCode:${userCode}`);
    return id ? this.find(id) : undefined;
  }

  async consume(id) {
    const payload = storeGet(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    for (const key of storeGet(grantKey) ?? []) store.delete(key);
    store.delete(grantKey);
  }
}

// ---------------------------------------------------------------------------------------
// Keys: one RS256 signing key made at start (Cognito signs with RS256), kept here so that
// the fault modes can re-sign tokens with it; a second, unpublished one for bad_signature.

const { privateKey: signingKey, publicKey: verifyKey } = await jose.generateKeyPair('RS256', { extractable: true });
const kid = crypto.randomBytes(12).toString('base64url');
const signingJwk = { ...(await jose.exportJWK(signingKey)), kid, alg: 'RS256', use: 'sig' };
const publicKeyPem = await jose.exportSPKI(verifyKey);
const { privateKey: strangerKey } = await jose.generateKeyPair('RS256');

// ---------------------------------------------------------------------------------------
// Test state

const NO_FAULTS = Object.freeze({
  id_token: null, token_delay_ms: 0, token_error: null, userinfo: null, authorize_error: null,
});
let faults = { ...NO_FAULTS };
const revocations = [];
const logins = {};

function setFaults(body) {
  const next = { ...faults };
  for (const [name, value] of Object.entries(body ?? {})) {
    if (!(name in NO_FAULTS)) throw new Error(`unknown fault ${name}; known: ${Object.keys(NO_FAULTS).join(', ')}`);
    if (name === 'id_token' && value !== null && !ID_TOKEN_FAULTS.has(value)) {
      throw new Error(`id_token fault must be one of ${[...ID_TOKEN_FAULTS].join(', ')} or null`);
    }
    if (name === 'userinfo' && value !== null && !USERINFO_FAULTS.has(value)) {
      throw new Error(`userinfo fault must be one of ${[...USERINFO_FAULTS].join(', ')} or null`);
    }
    if (name === 'token_delay_ms' && !(Number.isInteger(value) && value >= 0)) {
      throw new Error('token_delay_ms must be an integer >= 0');
    }
    if ((name === 'token_error' || name === 'authorize_error') && value !== null && typeof value !== 'string') {
      throw new Error(`${name} must be an OAuth error code or null`);
    }
    next[name] = value;
  }
  faults = next;
}

function clientMetadata(spec) {
  if (!spec || typeof spec.client_id !== 'string' || !spec.client_id) throw new Error('client needs a client_id');
  const metadata = {
    client_id: spec.client_id,
    redirect_uris: spec.redirect_uris ?? [],
    post_logout_redirect_uris: spec.post_logout_redirect_uris ?? [],
    token_endpoint_auth_method: spec.token_endpoint_auth_method ?? 'client_secret_basic',
    application_type: spec.application_type ?? 'web',
    grant_types: spec.grant_types ?? ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  };
  if (spec.client_secret !== undefined) metadata.client_secret = spec.client_secret;
  return metadata;
}

// ---------------------------------------------------------------------------------------
// HTML

function escapeHtml(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

const STYLE = `body{font-family:sans-serif;background:#f3f4f6;margin:0}
main{max-width:22rem;margin:4rem auto;background:#fff;padding:1.5rem 2rem;border-radius:8px;box-shadow:0 1px 4px #0003}
label{display:block;margin-top:.8rem}input{width:100%;box-sizing:border-box;padding:.4rem;margin-top:.2rem}
.buttons{margin-top:1.2rem;display:flex;gap:.5rem}.error{color:#b00020;font-weight:bold}`;

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body><main>
${body}
</main></body>
</html>
`;
}

function loginPage({ uid, clientId, username = '', error = null }) {
  return page('Sign in - Portico test identity provider', `<h1>Sign in</h1>
<p>Test identity provider for <strong id="client">${escapeHtml(clientId)}</strong>.</p>
${error ? `<p id="error" class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}">
<label for="username">Username</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none" value="${escapeHtml(username)}" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<div class="buttons">
<button id="submit" type="submit">Sign in</button>
<button id="cancel" type="submit" name="cancel" value="cancel">Cancel</button>
</div>
</form>`);
}

// ---------------------------------------------------------------------------------------
// Provider

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(config.port ?? 0), HOST, () => {
    server.off('error', reject);
    resolve();
  });
});
const issuer = `http://${HOST}:${server.address().port}`;

const ttl = {
  AccessToken: 3600,
  AuthorizationCode: 300,
  IdToken: 3600,
  RefreshToken: 30 * 24 * 3600,
  Interaction: 3600,
  Session: 14 * 24 * 3600,
  Grant: 14 * 24 * 3600,
  ...(config.ttl ?? {}),
};

// oidc-provider asks native (loopback) clients for consent on every request, even with an
// existing grant; Cognito never does.
const policy = interactionPolicy.base();
policy.get('consent').checks.remove('native_client_prompt');

const provider = new Provider(issuer, {
  adapter: UnboundedAdapter,
  jwks: { keys: [signingJwk] },
  cookies: {
    keys: [crypto.randomBytes(32).toString('base64url')],
    // Cookies do not isolate ports: Portico on another 127.0.0.1 port shares the jar.
    names: { session: '_idp_session', interaction: '_idp_interaction', resume: '_idp_interaction_resume' },
  },
  routes: {
    authorization: '/oauth2/authorize',
    token: '/oauth2/token',
    userinfo: '/oauth2/userInfo',
    revocation: '/oauth2/revoke',
    jwks: '/.well-known/jwks.json',
    end_session: '/logout',
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'phone', 'address'],
  claims: { openid: [...openidClaims], ...SCOPE_CLAIMS },
  // Cognito puts every claim in the ID token; oidc-provider would keep profile and email
  // claims for userinfo alone.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { methods: ['S256'], required: () => false },
  ttl,
  // Cognito returns a refresh token with every code exchange and does not rotate it.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: false,
  clientBasedCORS: () => true,
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    // A plain request needs no `resource` and gets an opaque access token for userinfo, as
    // before. A request that names a resource (RFC 8707) gets a JWT access token (RFC 9068)
    // for it, signed with the IdP's key: the kind of token an API behind the IdP receives,
    // which Portico's introspection accepts for auth servers that allow IdP tokens.
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: async (ctx, resourceIndicator) => ({
        scope: 'openid email profile',
        audience: resourceIndicator,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
    rpInitiatedLogout: {
      enabled: true,
      // Cognito signs out without asking; the confirmation form submits itself (a
      // SimulatedBrowser submits forms marked data-autosubmit).
      logoutSource: async (ctx, form) => {
        const autoForm = form
          .replace('<form ', '<form data-autosubmit="true" ')
          .replace('</form>', '<input type="hidden" name="logout" value="yes"/><noscript><button type="submit">Sign out</button></noscript></form>');
        ctx.type = 'html';
        ctx.body = page('Signing out - Portico test identity provider', `<h1>Signing out</h1>
${autoForm}
<script>document.getElementById('op.logoutForm').submit();</script>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.type = 'html';
        ctx.body = page('Signed out - Portico test identity provider', '<h1 id="signed-out">You are signed out.</h1>');
      },
    },
  },
  interactions: {
    policy,
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  // No consent screen: the grant covers whatever the client asked for (Cognito has no
  // consent step either).
  loadExistingGrant: async (ctx) => {
    const { oidc } = ctx;
    if (!oidc.session?.accountId) return undefined;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
    if (!grant || grant.accountId !== oidc.session.accountId) {
      grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
    }
    grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
    if (oidc.requestParamClaims?.size) grant.addOIDCClaims([...oidc.requestParamClaims]);
    // A named resource (RFC 8707) is granted the same scopes, or consent would be asked forever.
    const resources = [oidc.params?.resource].flat().filter(Boolean);
    for (const resource of resources) grant.addResourceScope(resource, [...oidc.requestParamScopes].join(' '));
    await grant.save();
    return grant;
  },
  findAccount: async (ctx, sub) => {
    const user = usersBySub.get(sub);
    if (!user) return undefined;
    return {
      accountId: user.sub,
      claims: async () => ({ ...user.claims, sub: user.sub }),
    };
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error - Portico test identity provider', `<h1>Error</h1>
<p id="error" class="error">${escapeHtml(out.error)}</p>
<p id="error_description">${escapeHtml(out.error_description)}</p>`);
  },
});

for (const spec of config.clients ?? []) {
  const metadata = clientMetadata(spec);
  // eslint-disable-next-line no-await-in-loop
  await provider.Client.validate(metadata);
  clientsById.set(metadata.client_id, metadata);
}

provider.on('server_error', (ctx, error) => log('server_error', ctx.path, error.stack));

// ---------------------------------------------------------------------------------------
// ID token faults: the real token is decoded and re-signed.

function b64json(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

async function resign(header, claims, key, alg = 'RS256') {
  return new jose.SignJWT(claims).setProtectedHeader({ ...header, alg }).sign(key);
}

async function tamperIdToken(idToken, mode) {
  const header = jose.decodeProtectedHeader(idToken);
  const claims = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  const lifetime = (claims.exp ?? now + 3600) - (claims.iat ?? now);
  switch (mode) {
    case 'bad_signature':
      return resign(header, claims, strangerKey);
    case 'alg_none':
      return `${b64json({ ...header, alg: 'none' })}.${b64json(claims)}.`;
    case 'hs256_public_key':
      return resign(header, claims, new TextEncoder().encode(publicKeyPem), 'HS256');
    case 'wrong_iss':
      return resign(header, { ...claims, iss: `${issuer}/not-this-issuer` }, signingKey);
    case 'wrong_aud':
      return resign(header, { ...claims, aud: 'some-other-client' }, signingKey);
    case 'expired': {
      const exp = now - 2 * 3600;
      const iat = exp - lifetime;
      return resign(header, { ...claims, iat, exp, auth_time: Math.min(claims.auth_time ?? iat, iat) }, signingKey);
    }
    case 'not_yet_valid': {
      const iat = now + 600;
      return resign(header, { ...claims, iat, nbf: iat, exp: iat + lifetime }, signingKey);
    }
    default:
      return idToken;
  }
}

// ---------------------------------------------------------------------------------------
// Middleware around the provider: interactions, /__test/, faults.

async function readBody(req, limit = 1 << 20) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function json(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(body);
  ctx.set('Cache-Control', 'no-store');
}

async function testControl(ctx) {
  const route = `${ctx.method} ${ctx.path.replace(/\/+$/, '')}`;
  let body = {};
  if (ctx.method === 'POST' || ctx.method === 'PUT') {
    const text = await readBody(ctx.req);
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      json(ctx, 400, { error: 'body is not JSON' });
      return;
    }
  }
  try {
    switch (route) {
      case 'GET /__test/faults':
        json(ctx, 200, faults);
        return;
      case 'POST /__test/faults':
      case 'PUT /__test/faults':
        setFaults(body);
        json(ctx, 200, faults);
        return;
      case 'DELETE /__test/faults':
        faults = { ...NO_FAULTS };
        json(ctx, 200, faults);
        return;
      case 'GET /__test/revocations':
        json(ctx, 200, revocations);
        return;
      case 'DELETE /__test/revocations':
        revocations.length = 0;
        json(ctx, 200, revocations);
        return;
      case 'GET /__test/logins':
        json(ctx, 200, logins);
        return;
      case 'POST /__test/users': {
        const user = putUser(body);
        const dropped = Object.keys(user.claims).filter((name) => !returnedClaims.has(name));
        json(ctx, 200, { username: user.username, sub: user.sub, claims_not_returned: dropped });
        return;
      }
      case 'POST /__test/clients': {
        const metadata = clientMetadata(body);
        await provider.Client.validate(metadata);
        clientsById.set(metadata.client_id, metadata);
        json(ctx, 200, { client_id: metadata.client_id });
        return;
      }
      case 'GET /__test/health':
        json(ctx, 200, { issuer, users: users.size, clients: clientsById.size, stored: store.size });
        return;
      default:
        json(ctx, 404, { error: `no test route ${route}` });
    }
  } catch (error) {
    json(ctx, 400, { error: error.error ?? 'invalid_request', error_description: error.error_description ?? error.message });
  }
}

async function interaction(ctx) {
  const uid = ctx.path.split('/')[2];
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (error) {
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = page('Error - Portico test identity provider', `<h1>Error</h1><p id="error" class="error">${escapeHtml(error.message)}</p>`);
    return;
  }
  if (details.uid !== uid) {
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = page('Error - Portico test identity provider', '<h1>Error</h1><p id="error" class="error">interaction mismatch</p>');
    return;
  }
  const clientId = details.params.client_id;
  const finish = async (result) => {
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.redirect(returnTo);
    ctx.status = 303;
  };

  if (details.prompt.name !== 'login') {
    // loadExistingGrant makes consent unnecessary; should the policy still ask, grant it.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ clientId, accountId: details.session.accountId });
    grant.addOIDCScope(details.params.scope ?? 'openid');
    await finish({ consent: { grantId: await grant.save() } });
    return;
  }

  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = loginPage({ uid, clientId, username: details.params.login_hint ?? '' });
    return;
  }
  if (ctx.method !== 'POST') {
    ctx.status = 405;
    return;
  }
  const form = new URLSearchParams(await readBody(ctx.req));
  if (form.has('cancel')) {
    await finish({ error: 'access_denied', error_description: 'End-User aborted interaction' });
    return;
  }
  const username = form.get('username') ?? '';
  const user = users.get(username);
  const given = Buffer.from(form.get('password') ?? '', 'utf8');
  const expected = Buffer.from(user?.password ?? '', 'utf8');
  if (!user || given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    ctx.status = 200;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = loginPage({ uid, clientId, username, error: 'Incorrect username or password.' });
    return;
  }
  logins[user.username] = (logins[user.username] ?? 0) + 1;
  await finish({ login: { accountId: user.sub, remember: true } });
}

function authorizeErrorRedirect(ctx, error) {
  const params = ctx.method === 'GET' ? ctx.query : {};
  const client = clientsById.get(params.client_id);
  const redirectUri = params.redirect_uri;
  if (!client || !redirectUri) {
    json(ctx, 400, { error, error_description: 'injected fault (no client_id or redirect_uri to send it back to)' });
    return;
  }
  const target = new URL(redirectUri);
  target.searchParams.set('error', error);
  target.searchParams.set('error_description', 'injected fault');
  if (params.state !== undefined) target.searchParams.set('state', params.state);
  ctx.redirect(target.href);
}

provider.use(async (ctx, next) => {
  const path = ctx.path.toLowerCase();
  if (path.startsWith('/__test/')) {
    await testControl(ctx);
    return;
  }
  if (path.startsWith('/interaction/')) {
    await interaction(ctx);
    return;
  }
  if (path === '/oauth2/authorize' && faults.authorize_error) {
    authorizeErrorRedirect(ctx, faults.authorize_error);
    return;
  }
  if (path === '/logout' && ctx.method === 'GET' && ctx.query.logout_uri && !ctx.query.post_logout_redirect_uri) {
    // Cognito's sign-out parameters: client_id and logout_uri.
    const { logout_uri: logoutUri, ...rest } = ctx.query;
    ctx.query = { ...rest, post_logout_redirect_uri: logoutUri };
  }
  if (path === '/oauth2/token') {
    const { token_delay_ms: delay, token_error: tokenError, id_token: idTokenFault } = faults;
    if (delay) await new Promise((resolve) => { setTimeout(resolve, delay); });
    if (tokenError) {
      json(ctx, 400, { error: tokenError, error_description: 'injected fault' });
      return;
    }
    await next();
    if (idTokenFault && ctx.status === 200 && ctx.body && typeof ctx.body === 'object' && ctx.body.id_token) {
      ctx.body = { ...ctx.body, id_token: await tamperIdToken(ctx.body.id_token, idTokenFault) };
    }
    return;
  }
  if (path === '/oauth2/userinfo') {
    const mode = faults.userinfo;
    await next();
    if (!mode || ctx.status !== 200) return;
    if (mode === 'malformed') {
      ctx.type = 'application/json';
      ctx.body = '{"sub": "this is not JSON';
    } else if (mode === 'missing_sub') {
      const { sub, ...rest } = ctx.body;
      ctx.body = rest;
    } else if (mode === 'error') {
      ctx.status = 500;
      ctx.type = 'text/plain';
      ctx.body = 'injected fault: internal server error';
    }
    return;
  }
  if (path === '/oauth2/revoke') {
    await next();
    const params = ctx.oidc?.params ?? {};
    if (ctx.status === 200 && params.token) {
      const { entities = {} } = ctx.oidc;
      let kind = null;
      if (entities.RefreshToken) kind = 'refresh_token';
      else if (entities.AccessToken) kind = 'access_token';
      revocations.push({
        token: params.token,
        prefix: params.token.slice(0, 12),
        token_type_hint: params.token_type_hint ?? null,
        client_id: ctx.oidc.client?.clientId ?? null,
        kind, // what the token was, null when it was not (or no longer) a live token
        at: new Date().toISOString(),
      });
    }
    return;
  }
  await next();
});

// ---------------------------------------------------------------------------------------
// Serve, announce, stop.

server.on('request', provider.callback());
server.keepAliveTimeout = 5000;

let stopping = false;
function stop(reason) {
  if (stopping) return;
  stopping = true;
  log(`stopping (${reason})`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
process.stdin.on('end', () => stop('stdin closed'));
process.stdin.on('error', () => stop('stdin error'));
process.stdin.resume();

process.stdout.write(`${JSON.stringify({ event: 'ready', issuer })}\n`);

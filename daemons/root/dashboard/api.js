// The root's public REST API, as every other client uses it: the same endpoints, bearer
// tokens and `{code, status, message, violations}` errors. The tokens live in sessionStorage
// (this tab only, gone when it closes), are sent only in the Authorization header, never in a
// URL, and no cookie is used, so there is nothing for a cross-site request to ride on.

const KEY = 'oakestra.session';

let session = load();
let sessionEnded = () => {};

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY)) || null;
  } catch {
    return null;
  }
}

function save() {
  if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
}

/** An error answer of the API (status 0: the root did not answer). */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.violations = (body && Array.isArray(body.violations)) ? body.violations : [];
  }
}

/** The claims of a JWT (for the user name and roles to show; the root checks them itself). */
function claims(token) {
  const part = token.split('.')[1] || '';
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')));
}

/** Who is logged in, or null. */
export function me() {
  if (!session) return null;
  return {
    name: session.username,
    roles: session.roles,
    isAdmin: session.roles.includes('Admin'),
    organization: session.organization,
    defaultPassword: session.defaultPassword,
  };
}

/** Called when the session ends by itself (the refresh token was refused). */
export function onSessionEnd(callback) {
  sessionEnded = callback;
}

async function request(method, path, body, token) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, { message: `the root does not answer (${e.message})` });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** Logs in; `organization` empty means the default organization. */
export async function login(username, password, organization) {
  const body = { username, password };
  if (organization) body.organization_name = organization;
  const answer = await request('POST', '/api/auth/login', body, null);
  const c = claims(answer.token);
  session = {
    token: answer.token,
    refresh: answer.refresh_token,
    username: c.sub,
    roles: c.roles || [],
    organization: organization || 'root',
    defaultPassword: answer.default_password === true,
  };
  save();
  return me();
}

export function logout() {
  session = null;
  save();
}

/** The password was changed: the default-password banner goes, and the tokens the answer
 * carries replace the session's (the root revokes every token issued before the change). */
export function passwordChanged(answer) {
  if (session) {
    session.defaultPassword = false;
    if (answer && answer.token) {
      session.token = answer.token;
      session.refresh = answer.refresh_token;
    }
    save();
  }
}

let refreshing = null;

/** An authenticated call; an expired access token is refreshed once with the refresh token. */
export async function api(method, path, body) {
  if (!session) throw new ApiError(401, { message: 'you are not logged in' });
  try {
    return await request(method, path, body, session.token);
  } catch (e) {
    if (e.status !== 401 || !session || !session.refresh) throw e;
    if (!refreshing) {
      refreshing = request('POST', '/api/auth/refresh', undefined, session.refresh)
        .finally(() => { refreshing = null; });
    }
    let answer;
    try {
      answer = await refreshing;
    } catch {
      logout();
      sessionEnded('Your session ended; log in again.');
      throw e;
    }
    if (!session) throw e;
    session.token = answer.token;
    session.roles = claims(answer.token).roles || [];
    save();
    return request(method, path, body, session.token);
  }
}

/** `_id` as the API writes it (`{"$oid": …}` or a plain string). */
export function idOf(value) {
  if (value && typeof value === 'object') return value.$oid || '';
  return value || '';
}

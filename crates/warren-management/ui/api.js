// The management API from the browser: HTTP Basic with the credentials
// the user typed, kept in sessionStorage (gone when the tab closes),
// never in a cookie or localStorage.

const KEY = 'warren.session';

/** The logged-in user: {user, auth, tags} or null. */
export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

function basic(user, password) {
  const raw = new TextEncoder().encode(`${user}:${password}`);
  let s = '';
  for (const b of raw) s += String.fromCharCode(b);
  return 'Basic ' + btoa(s);
}

/** An API failure: HTTP status and RabbitMQ's {error, reason}. */
export class ApiError extends Error {
  constructor(status, error, reason, body) {
    super(reason || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
    this.reason = reason;
    this.body = body;
  }

  /** The credentials themselves were refused (not a missing right). */
  get loginFailed() {
    return this.status === 401 && (this.error === 'not_authorized' || !this.error);
  }
}

/** Tries the credentials on /api/whoami; keeps them if they work. */
export async function login(user, password) {
  const auth = basic(user, password);
  const who = await request('GET', '/api/whoami', undefined, auth);
  const s = {user: who.name, auth, tags: who.tags || []};
  sessionStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export function logout() {
  sessionStorage.removeItem(KEY);
}

/** Listeners told when the session's credentials stop working. */
const lost = new Set();
export function onSessionLost(fn) { lost.add(fn); }

/** Calls the API; JSON in and out. Throws ApiError. */
export async function api(method, path, body, extraHeaders) {
  const s = session();
  if (!s) throw new ApiError(401, 'not_authorized', 'Not logged in');
  try {
    return await request(method, path, body, s.auth, extraHeaders);
  } catch (e) {
    if (e instanceof ApiError && e.loginFailed) {
      logout();
      for (const fn of lost) fn(e);
    }
    throw e;
  }
}

/** GET shorthand. */
export const apiGet = (path) => api('GET', path);

async function request(method, path, body, auth, extraHeaders) {
  const headers = {
    'authorization': auth,
    // Tells the API not to send WWW-Authenticate: no browser password
    // dialog over the page.
    'x-warren-ui': '1',
    'accept': 'application/json',
    ...(extraHeaders || {}),
  };
  let payload;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, {method, headers, body: payload, credentials: 'omit', cache: 'no-store'});
  } catch (e) {
    throw new ApiError(0, 'network', `The broker did not answer (${e.message})`);
  }
  const text = await res.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = null; }
  }
  if (!res.ok) {
    const reason = json && typeof json === 'object' ? json.reason : null;
    const error = json && typeof json === 'object' ? json.error : null;
    throw new ApiError(res.status, error, reason || (res.status === 401 ? 'Login failed' : `HTTP ${res.status} ${res.statusText}`), json);
  }
  return json;
}

/** What the user's tags allow, as the API decides it. */
export function rights(s = session()) {
  const tags = new Set((s && s.tags) || []);
  const admin = tags.has('administrator');
  const monitor = admin || tags.has('monitoring');
  const policymaker = admin || tags.has('policymaker');
  return {admin, monitor, policymaker, management: admin || monitor || policymaker || tags.has('management')};
}

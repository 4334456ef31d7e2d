// REST client: the API token (from ?token= once, then sessionStorage), JSON in/out, and the
// error envelope turned into an ApiError whose message is the server's own.

const TOKEN_KEY = "vm-system.token";

function captureToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete("token");
    // Keep the token out of the address bar, history and anything copied from it.
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
}
captureToken();

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (err) {
    throw new ApiError(0, "NETWORK", `Cannot reach the server (${err.message}). Is it running?`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      throw new ApiError(response.status, "BAD_RESPONSE", `The server answered ${response.status} with a body that is not JSON`);
    }
  }
  if (!response.ok) {
    const e = data && data.error;
    if (e) throw new ApiError(response.status, e.code, e.message, e.details);
    throw new ApiError(response.status, `HTTP_${response.status}`, `The server answered ${response.status} ${response.statusText}`);
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

export function wsUrl() {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const t = token();
  const q = t ? `?token=${encodeURIComponent(t)}` : "";
  return `${scheme}//${window.location.host}/api/v1/ws${q}`;
}

/** Paths in the UI keep the token in sessionStorage, so plain links work as they are. */
export const enc = encodeURIComponent;

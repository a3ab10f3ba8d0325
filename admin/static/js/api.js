// The admin API as the panel uses it: JSON in and out, problem+json errors as ApiError, and the
// session's CSRF token on every state change. A 401 from any call means the session is over: the
// shell hears it (the "signed-out" event) and shows the sign-in page.

let csrfToken = null;
export const events = new EventTarget();

export function setCsrfToken(token) {
  csrfToken = token || null;
}

export class ApiError extends Error {
  constructor(status, problem, headers) {
    super((problem && problem.detail) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem && typeof problem === "object" ? problem : { detail: String(problem || "") };
    this.headers = headers;
  }

  /** The problem's kind: "stale-config-version", "write-back-disabled", … */
  get kind() {
    return (this.problem.type || "").split("/").pop();
  }
}

/** `await api("/config")` → {data, headers, status}; throws ApiError for any non-2xx answer. `body` is
 * sent as JSON; `rawBody` as it is, with `contentType` (a JSON Patch is application/json-patch+json). */
export async function api(path, { method = "GET", body, rawBody, contentType, headers = {}, quiet401 = false } = {}) {
  const sent = { accept: "application/json", ...headers };
  if (body !== undefined) sent["content-type"] = "application/json";
  if (rawBody !== undefined) sent["content-type"] = contentType || "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) sent["x-csrf-token"] = csrfToken;
  let response;
  try {
    response = await fetch(`/admin/api${path}`, {
      method,
      headers: sent,
      body: rawBody !== undefined ? rawBody : body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, { detail: "the gateway cannot be reached" });
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    if (response.status === 401 && !quiet401) events.dispatchEvent(new Event("signed-out"));
    throw new ApiError(response.status, data, response.headers);
  }
  return { data, headers: response.headers, status: response.status };
}

/** The ETag's version: `"abc123"` → `abc123`. */
export function etagVersion(headers) {
  return (headers.get("etag") || "").replace(/^W\//, "").replaceAll('"', "");
}

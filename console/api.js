// The admin API, called with the operator's token. The token lives in the tab's sessionStorage
// only: gone when the tab closes, never kept in the browser's lasting storage, a cookie or a URL.

const KEY = "portcullis.token";

/** The most of the event stream held while waiting for an event's end (characters). */
const MAX_EVENT_BUFFER = 1 << 20;

export function token() {
  return sessionStorage.getItem(KEY);
}

export function keepToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

/** A refusal of the API: its status, code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * `method path` with the token (or `as`, when signing in); `body` is JSON, or `{raw, type}` for a
 * body sent as it is. Answers the JSON body (null when empty); throws ApiError when refused.
 */
export async function call(method, path, body, as = token()) {
  const headers = { Authorization: `Bearer ${as}` };
  let payload;
  if (body && body.raw !== undefined) {
    headers["Content-Type"] = body.type;
    payload = body.raw;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, { method, headers, body: payload, cache: "no-store" });
  } catch {
    throw new ApiError(0, "unreachable", "The server did not answer.");
  }
  const text = await response.text();
  let answer = null;
  if (text) {
    try {
      answer = JSON.parse(text);
    } catch {
      answer = null;
    }
  }
  if (!response.ok) {
    const error = (answer && answer.error) || {};
    throw new ApiError(
      response.status,
      error.code || "http_" + response.status,
      error.message || `The server answered ${response.status}.`,
    );
  }
  return answer;
}

/** Every item of a list, following its pages. */
export async function all(path) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await call(
      "GET",
      `${path}${sep}limit=500${cursor ? "&cursor=" + encodeURIComponent(cursor) : ""}`,
    );
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/**
 * Follows the org's event stream (Server-Sent Events) with the token in a header, which
 * EventSource cannot send: calls `opened()` once the server answered, then `onEvent(kind, data)`
 * for each event (`data` its JSON, null when it is not JSON) until `signal` aborts or the stream
 * ends. Throws ApiError when the stream is refused.
 */
export async function follow(org, signal, onEvent, opened = () => {}) {
  const response = await fetch(`/api/v1/orgs/${encodeURIComponent(org)}/events`, {
    headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
    signal,
  });
  if (!response.ok) {
    throw new ApiError(response.status, `http_${response.status}`, "The event stream was refused.");
  }
  if (!response.body) return;
  opened();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value.replaceAll("\r\n", "\n");
    // An event never ended (nothing the server sends): dropped, and the stream followed again.
    if (buffered.length > MAX_EVENT_BUFFER) return;
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const lines = buffered.slice(0, end).split("\n");
      buffered = buffered.slice(end + 2);
      const field = (name) =>
        lines
          .filter((line) => line.startsWith(`${name}:`))
          .map((line) => line.slice(name.length + 1).replace(/^ /, ""));
      const [kind] = field("event");
      if (!kind) continue;
      let data = null;
      try {
        data = JSON.parse(field("data").join("\n"));
      } catch {
        data = null;
      }
      onEvent(kind, data);
    }
  }
}

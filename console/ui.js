// Helpers the console's pages share: counts and times as people read them, the names a dry run
// lists, and the dry-run box every destructive change goes through.

import { ApiError, call, follow } from "./api.js";
import { el, replace, row, table } from "./dom.js";

/** `1 session`, `2 sessions`. */
export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

/** An RFC 3339 time as `2026-12-06 11:40 UTC`. */
export function when(time) {
  if (!time) return "";
  return time.endsWith("Z") ? `${time.slice(0, 16).replace("T", " ")} UTC` : time;
}

/** Whether the caller may do `need` (`read`, `manage`, `approve`, `admin`; see `/whoami`). */
export function can(ctx, need) {
  return ctx.me.may.includes(need);
}

/** A list of names, the first of `total` (a dry run lists the first 100). */
export function names(list, total = list.length) {
  return el(
    "ul",
    { class: "ids" },
    list.map((name) => el("li", {}, name)),
    total > list.length ? el("li", { class: "hint" }, `… and ${total - list.length} more`) : null,
  );
}

/**
 * Shows in `box` what `change` would close and lock out (its dry run: `method path?dry_run=true`
 * with `body`), and makes it when confirmed. `change`: {question, confirm (the button), done (the
 * message once made), method, path, body, extra (more of the box, e.g. a reason field), after
 * (called once made)}; `body` may be a function, called when the change is asked and made.
 */
export async function dryRunFirst(ctx, box, change) {
  const body = () => (typeof change.body === "function" ? change.body() : change.body);
  const sep = change.path.includes("?") ? "&" : "?";
  let would;
  try {
    would = await call(change.method, `${change.path}${sep}dry_run=true`, body());
  } catch (error) {
    ctx.failed(error);
    return;
  }
  if (!would || !would.would_close || !would.would_refuse) {
    ctx.failed(new Error("The server's answer was not a dry run: nothing was changed."));
    return;
  }
  const { sessions, client_ids } = would.would_close;
  const { devices, identities } = would.would_refuse;
  const parts = [
    el("p", { id: "would-close" }, `Would close ${plural(sessions, "session")}.`),
    sessions ? names(client_ids, sessions) : null,
    el("p", { id: "would-refuse" }, `Would lock out ${plural(devices, "device")}.`),
    devices ? names(identities, devices) : null,
    change.extra || null,
  ];
  ask(box, change.question, parts, change.confirm, async () => {
    try {
      await call(change.method, change.path, body());
      replace(box);
      ctx.show(change.done, "done");
      await change.after();
    } catch (error) {
      ctx.failed(error);
    }
  });
}

/** A question in `box`: `question`, what the change would do (`parts`), then `confirm` (calls
 * `go`) or Cancel. */
function ask(box, question, parts, confirm, go) {
  replace(
    box,
    el(
      "div",
      { class: "confirm", role: "dialog", "aria-labelledby": "confirm-title" },
      el("h3", { id: "confirm-title" }, question),
      parts.flat(),
      el(
        "div",
        { class: "actions" },
        el("button", { type: "button", class: "danger", onclick: go }, confirm),
        el("button", { type: "button", onclick: () => replace(box) }, "Cancel"),
      ),
    ),
  );
}

/**
 * Asks in `box` before a change that has no dry run: `question`, what it would do (`would`), then
 * `confirm` (calls `make`) or Cancel.
 */
export function confirmFirst(box, question, would, confirm, make) {
  ask(box, question, [el("p", { id: "would-close" }, would)], confirm, async () => {
    replace(box);
    await make();
  });
}

/**
 * Shows in `holder` the list at `path` a page of `size` at a time, a "Show more" button below
 * while there is more; `empty` is said when there is nothing.
 */
export async function paged(ctx, holder, path, columns, attrs, empty, size = 50) {
  const body = el("tbody");
  const more = el("button", { type: "button", class: "more" }, "Show more");
  const sep = path.includes("?") ? "&" : "?";
  let cursor = null;
  const load = async () => {
    const after = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const page = await call("GET", `${path}${sep}limit=${size}${after}`);
    body.append(...page.items.map((item) => row(columns, item)));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    return page.items.length;
  };
  more.addEventListener("click", () => load().catch(ctx.failed));
  const shown = await load();
  replace(holder, shown ? [table(columns, [], attrs, body), more] : el("p", { class: "hint" }, empty));
}

/**
 * Follows the org's event stream until the page is left: `on.event(kind, data)` for each event,
 * `on.opened()` each time the server answered. A stream that ended (the server drops a reader
 * that falls behind) is followed again after a pause, `on.resumed()` called for what it missed;
 * a refused token ends it (`ctx.failed`: back to signing in).
 */
export async function followEvents(ctx, on) {
  const ignore = () => {};
  while (!ctx.signal.aborted) {
    try {
      await follow(ctx.org.id, ctx.signal, on.event, on.opened || ignore);
    } catch (error) {
      // A refused token, a role that may not read it, an org gone: following it again is
      // pointless; said, and stopped.
      if (error instanceof ApiError && [401, 403, 404].includes(error.status)) {
        if (!ctx.signal.aborted) ctx.failed(error);
        return;
      }
    }
    await new Promise((resume) => setTimeout(resume, 3000));
    if (!ctx.signal.aborted) (on.resumed || ignore)();
  }
}

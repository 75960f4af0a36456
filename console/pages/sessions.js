// An org's live sessions, refreshed from the event stream as devices come and go.

import { all, follow } from "../api.js";
import { el, replace, table } from "../dom.js";
import { plural, when } from "../ui.js";

export async function render(ctx) {
  const list = el("section", { class: "card", id: "sessions" }, el("h2", {}, "Live sessions"));
  replace(ctx.container, list);
  const cas = await all(`${ctx.base}/ca-certificates`);
  const subjects = new Map(cas.map((ca) => [ca.id, ca.subject]));
  const show = () => showSessions(ctx, list, subjects);
  await show();
  followSessions(ctx, show);
}

/**
 * Refreshes the sessions (`show`) on each connect and disconnect of the org's event stream, until
 * the page is left; a stream that ended (the server drops a reader that falls behind) is followed
 * again after a pause, the list refreshed for what it missed.
 */
async function followSessions(ctx, show) {
  const { signal } = ctx;
  let pending = null;
  const refresh = () => {
    // A burst of events is one refresh.
    clearTimeout(pending);
    pending = setTimeout(() => {
      if (!signal.aborted) show().catch(ctx.failed);
    }, 200);
  };
  while (!signal.aborted) {
    await follow(ctx.org.id, signal, (kind) => {
      if (kind === "connect" || kind === "disconnect") refresh();
    }).catch(() => {});
    await new Promise((resume) => setTimeout(resume, 3000));
    if (!signal.aborted) refresh();
  }
}

async function showSessions(ctx, list, subjects) {
  const sessions = await all(`${ctx.base}/sessions`);
  replace(
    list,
    el("h2", {}, "Live sessions"),
    el("p", { class: "hint" }, `${plural(sessions.length, "session")}, updated as devices come and go.`),
    sessions.length
      ? table(
          [
            ["Client id", (s) => s.client_id],
            ["Identity", (s) => s.identity],
            ["CA", (s) => subjects.get(s.ca_id) || s.ca_id],
            ["MQTT", (s) => (s.protocol === 5 ? "5" : "3.1.1")],
            ["Peer", (s) => s.peer || ""],
            ["Connected", (s) => when(s.connected_at)],
            ["Node", (s) => s.node],
          ],
          sessions,
          { id: "session-list" },
        )
      : null,
  );
}

// An org's live sessions, refreshed from the event stream as devices come and go; an operator
// disconnects one, after confirming.

import { all, call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { can, confirmFirst, followEvents, plural, when } from "../ui.js";

export async function render(ctx) {
  const list = el("section", { class: "card", id: "sessions" }, el("h2", {}, "Live sessions"));
  replace(ctx.container, list);
  const cas = await all(`${ctx.base}/ca-certificates`);
  const subjects = new Map(cas.map((ca) => [ca.id, ca.subject]));
  const show = () => showSessions(ctx, list, subjects);
  await show();
  let pending = null;
  const refresh = () => {
    // A burst of events is one refresh.
    clearTimeout(pending);
    pending = setTimeout(() => {
      if (!ctx.signal.aborted) show().catch(ctx.failed);
    }, 200);
  };
  followEvents(ctx, {
    event: (kind) => {
      if (kind === "connect" || kind === "disconnect") refresh();
    },
    resumed: refresh,
  });
}

async function showSessions(ctx, list, subjects) {
  const sessions = await all(`${ctx.base}/sessions`);
  const confirm = el("div", { id: "session-confirm" });
  const columns = [
    ["Client id", (s) => s.client_id],
    ["Identity", (s) => s.identity],
    ["CA", (s) => subjects.get(s.ca_id) || s.ca_id],
    ["MQTT", (s) => (s.protocol === 5 ? "5" : "3.1.1")],
    ["Peer", (s) => s.peer || ""],
    ["Connected", (s) => when(s.connected_at)],
    ["Node", (s) => s.node],
  ];
  if (can(ctx, "manage")) {
    columns.push([
      "",
      (s) =>
        el(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: () =>
              confirmFirst(
                confirm,
                `Disconnect ${s.client_id}?`,
                `Would close the session ${s.client_id} (the device may connect again).`,
                "Confirm disconnect",
                () => disconnect(ctx, s.client_id, () => showSessions(ctx, list, subjects)),
              ),
          },
          "Disconnect",
        ),
    ]);
  }
  replace(
    list,
    el("h2", {}, "Live sessions"),
    el("p", { class: "hint" }, `${plural(sessions.length, "session")}, updated as devices come and go.`),
    confirm,
    sessions.length ? table(columns, sessions, { id: "session-list" }) : null,
  );
}

async function disconnect(ctx, clientId, after) {
  try {
    await call("DELETE", `${ctx.base}/sessions/${encodeURIComponent(clientId)}`);
    ctx.show(`Disconnected ${clientId}.`, "done");
    await after();
  } catch (error) {
    ctx.failed(error);
  }
}

// The org's live event stream (connects, disconnects, refusals) as it happens, newest first, the
// last 200 kept.

import { el, replace, row, table } from "../dom.js";
import { followEvents, when } from "../ui.js";

const KEPT = 200;

const COLUMNS = [
  ["Time", (e) => when(e.at)],
  ["Event", (e) => el("span", { class: `pill ${e.kind}` }, e.kind)],
  ["Client id", (e) => e.client_id || ""],
  ["Identity", (e) => e.identity || ""],
  ["Reason", (e) => el("span", { class: "code" }, e.reason || "")],
  ["Peer", (e) => el("span", { class: "code" }, e.peer || "")],
];

export async function render(ctx) {
  const body = el("tbody");
  const waiting = el("p", { class: "hint", id: "events-waiting" }, "No events yet.");
  const state = el("p", { class: "hint", id: "events-state" }, "Asking for the event stream…");
  replace(
    ctx.container,
    el(
      "section",
      { class: "card", id: "events" },
      el("h2", {}, "Live events"),
      el(
        "p",
        { class: "hint" },
        `Connects, disconnects and refusals since this page was opened, newest first (the last ${KEPT}).`,
      ),
      state,
      table(COLUMNS, [], { id: "event-list" }, body),
      waiting,
    ),
  );
  followEvents(ctx, {
    opened: () => {
      state.textContent = "Live.";
    },
    event: (kind, data) => {
      waiting.hidden = true;
      body.prepend(row(COLUMNS, { ...(data || {}), kind }));
      while (body.rows.length > KEPT) body.lastElementChild.remove();
    },
    resumed: () => {
      state.textContent = "The stream ended (events may have been missed); following it again…";
    },
  });
}

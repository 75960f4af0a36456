// The org's audit log: every change, who made it with which role, and the reason given; oldest
// first, a page at a time.

import { el, replace } from "../dom.js";
import { paged, when } from "../ui.js";

const PAGE = 25;

export async function render(ctx) {
  const holder = el("div");
  replace(
    ctx.container,
    el(
      "section",
      { class: "card", id: "audit" },
      el("h2", {}, "Audit log"),
      el("p", { class: "hint" }, "Every change to the organisation, oldest first."),
      holder,
    ),
  );
  await paged(
    ctx,
    holder,
    `${ctx.base}/audit-events`,
    [
      ["Time", (a) => when(a.at)],
      ["Who", (a) => a.actor],
      ["Role", (a) => a.actor_role],
      ["Action", (a) => el("span", { class: "code" }, a.action)],
      ["Target", (a) => a.target || ""],
      ["Reason", (a) => a.reason || ""],
    ],
    { id: "audit-list" },
    "No changes yet.",
    PAGE,
  );
}

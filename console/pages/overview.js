// An org at a glance: its live sessions, its refusals of the last hour by reason, the
// certificates that expire within 30 days and the access grants that need attention.

import { all, call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { plural, when } from "../ui.js";

const HOUR_MS = 60 * 60 * 1000;

export async function render(ctx) {
  const [sessions, refusals, expiring, warning, expired] = await Promise.all([
    all(`${ctx.base}/sessions`),
    call("GET", `${ctx.base}/refusals`),
    call("GET", `${ctx.base}/expiring?within_days=30`),
    all(`${ctx.base}/grants?status=warning`),
    all(`${ctx.base}/grants?status=expired`),
  ]);
  const since = Date.now() - HOUR_MS;
  const byReason = new Map();
  for (const refusal of refusals.items) {
    if (Date.parse(refusal.at) < since) continue;
    const reason = refusal.reason || "unknown";
    byReason.set(reason, (byReason.get(reason) || 0) + 1);
  }
  const reasons = [...byReason].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const grants = [...expired, ...warning];
  replace(
    ctx.container,
    el(
      "div",
      { class: "tiles" },
      el(
        "section",
        { class: "card tile", id: "overview-sessions" },
        el("h2", {}, "Live sessions"),
        el("p", { class: "figure" }, String(sessions.length)),
        el("a", { href: `#/orgs/${encodeURIComponent(ctx.org.id)}/sessions` }, "See them"),
      ),
      el(
        "section",
        { class: "card tile", id: "overview-refusals" },
        el("h2", {}, "Refusals in the last hour"),
        el("p", { class: "figure" }, String(reasons.reduce((sum, [, n]) => sum + n, 0))),
        reasons.length
          ? table(
              [
                ["Reason", ([reason]) => reason],
                ["Refusals", ([, n]) => String(n)],
              ],
              reasons,
              { id: "refusal-reasons" },
            )
          : null,
      ),
    ),
    el(
      "section",
      { class: "card", id: "overview-expiring" },
      el("h2", {}, "Certificates expiring within 30 days"),
      expiring.items.length
        ? table(
            [
              ["Kind", (c) => c.kind],
              ["Name", (c) => c.name],
              ["Not after", (c) => when(c.not_after)],
              ["Days left", (c) => String(c.days_left)],
            ],
            expiring.items,
            { id: "expiring-list" },
          )
        : el("p", { class: "hint" }, "None."),
    ),
    el(
      "section",
      { class: "card", id: "overview-grants" },
      el("h2", {}, "Access grants that need attention"),
      grants.length
        ? table(
            [
              ["Status", (g) => el("span", { class: `pill ${g.status}` }, g.status)],
              ["Key of", (g) => `${g.holder} ${g.holder_id}`],
              ["Uses", (g) => `${g.uses} of ${g.max_uses}`],
              ["Expires", (g) => when(g.expires_at)],
            ],
            grants,
            { id: "grant-warnings" },
          )
        : el("p", { class: "hint" }, `${plural(0, "grant")} in warning or expired.`),
    ),
  );
}

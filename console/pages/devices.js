// The org's device registry (every identity that authenticated, with its certificate); an
// operator blocks one, after the blocklist's dry run showed what it would close and lock out.

import { all } from "../api.js";
import { el, replace } from "../dom.js";
import { can, dryRunFirst, paged, when } from "../ui.js";

export async function render(ctx) {
  const cas = await all(`${ctx.base}/ca-certificates`);
  const subjects = new Map(cas.map((ca) => [ca.id, ca.subject]));
  const confirm = el("div", { id: "device-confirm" });
  const holder = el("div");
  replace(
    ctx.container,
    el(
      "section",
      { class: "card", id: "devices" },
      el("h2", {}, "Devices"),
      el("p", { class: "hint" }, "Every identity that authenticated, by first sighting."),
      confirm,
      holder,
    ),
  );
  const show = () =>
    paged(ctx, holder, `${ctx.base}/devices`, columns(ctx, subjects, confirm, show), { id: "device-list" }, "No device has connected yet.");
  await show();
}

function columns(ctx, subjects, confirm, refresh) {
  const list = [
    ["Identity", (d) => el("span", { class: "code" }, d.identity)],
    ["CA", (d) => subjects.get(d.ca_id) || d.ca_id],
    ["Serial", (d) => el("span", { class: "mono" }, d.serial)],
    ["Not after", (d) => when(d.not_after)],
    ["First seen", (d) => when(d.first_seen)],
    ["Last seen", (d) => when(d.last_seen)],
  ];
  if (can(ctx, "manage")) {
    list.push([
      "",
      (d) =>
        el(
          "button",
          { type: "button", class: "danger", onclick: () => block(ctx, confirm, d, refresh) },
          "Block",
        ),
    ]);
  }
  return list;
}

function block(ctx, confirm, device, refresh) {
  const reason = el("input", { id: "block-reason", type: "text", maxlength: 1000 });
  return dryRunFirst(ctx, confirm, {
    question: `Block ${device.identity}?`,
    confirm: "Confirm block",
    done: `Blocked ${device.identity}.`,
    method: "POST",
    path: `${ctx.base}/blocked-devices`,
    body: () => ({ identity: device.identity, reason: reason.value }),
    extra: [el("label", { for: "block-reason" }, "Reason"), reason],
    after: refresh,
  });
}

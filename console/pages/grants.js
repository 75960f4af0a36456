// The org's access grants (DESIGN §11): the time- and use-limited right to sign with a key the
// product holds for the org. An operator renews one with the one-time code the server e-mails to
// the org's notification addresses.

import { call } from "../api.js";
import { el, replace } from "../dom.js";
import { can, paged, when } from "../ui.js";

const enc = encodeURIComponent;

export async function render(ctx) {
  const holder = el("div");
  const renewal = el("div", { id: "grant-renewal" });
  const status = el(
    "select",
    { id: "grant-status" },
    el("option", { value: "" }, "any"),
    ["active", "warning", "expired"].map((s) => el("option", { value: s }, s)),
  );
  const show = () => {
    const filter = status.value ? `?status=${enc(status.value)}` : "";
    return paged(
      ctx,
      holder,
      `${ctx.base}/grants${filter}`,
      columns(ctx, renewal, show),
      { id: "grant-list" },
      "No grant (the org signs with no key of its own).",
    );
  };
  status.addEventListener("change", () => show().catch(ctx.failed));
  replace(
    ctx.container,
    el(
      "section",
      { class: "card", id: "grants" },
      el("h2", {}, "Access grants"),
      el(
        "p",
        { class: "hint" },
        "Each key the server signs with for the org may be used until its grant expires or " +
          "runs out of uses; a renewal needs the code e-mailed to the org's notification addresses.",
      ),
      el("label", { for: "grant-status" }, "Status"),
      status,
      renewal,
      holder,
    ),
  );
  await show();
}

function pill(status) {
  const kind = status === "active" ? "on" : status;
  return el("span", { class: `pill ${kind}` }, status);
}

function columns(ctx, renewal, refresh) {
  const list = [
    ["Status", (g) => pill(g.status)],
    ["Key", (g) => `${g.holder} ${g.holder_id}`],
    ["Uses", (g) => `${g.uses} of ${g.max_uses}`],
    ["Granted", (g) => when(g.granted_at)],
    ["Expires", (g) => when(g.expires_at)],
  ];
  if (can(ctx, "manage")) {
    list.push([
      "",
      (g) =>
        el(
          "button",
          { type: "button", onclick: () => askCode(ctx, renewal, g, refresh) },
          "Renew",
        ),
    ]);
  }
  return list;
}

/** Sends the renewal code, then asks for it (and the PKCS#12 passphrase of an imported key). */
async function askCode(ctx, box, grant, refresh) {
  const path = `${ctx.base}/grants/${enc(grant.id)}`;
  let sent;
  try {
    sent = await call("POST", `${path}/renewal-challenge`);
  } catch (error) {
    ctx.failed(error);
    return;
  }
  const code = el("input", {
    id: "renewal-code",
    type: "text",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    maxlength: 8,
    required: true,
  });
  const passphrase = grant.needs_key_passphrase
    ? el("input", { id: "renewal-passphrase", type: "password", autocomplete: "off" })
    : null;
  replace(
    box,
    el(
      "form",
      {
        class: "confirm",
        id: "renewal-form",
        onsubmit: async (event) => {
          event.preventDefault();
          const body = { code: code.value.trim() };
          if (passphrase) body.key_passphrase = passphrase.value;
          try {
            const renewed = await call("POST", `${path}/renew`, body);
            replace(box);
            ctx.show(`Renewed: good until ${when(renewed.expires_at)}.`, "done");
            await refresh();
          } catch (error) {
            ctx.failed(error);
          }
        },
      },
      el("h3", {}, `Renew the grant on ${grant.holder} ${grant.holder_id}`),
      el(
        "p",
        { id: "renewal-sent" },
        `A code was sent to ${sent.sent_to} address${sent.sent_to === 1 ? "" : "es"}; ` +
          `it is good until ${when(sent.expires_at)}.`,
      ),
      el("label", { for: "renewal-code" }, "Code"),
      code,
      passphrase ? el("label", { for: "renewal-passphrase" }, "Key passphrase (PKCS#12)") : null,
      passphrase,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "submit", class: "primary" }, "Renew with the code"),
        el("button", { type: "button", onclick: () => replace(box) }, "Cancel"),
      ),
    ),
  );
  code.focus();
}

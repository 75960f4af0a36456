// Where the org's notices go (DESIGN §11): e-mail addresses (which also receive grant renewal
// codes, so only the admin changes them) and a webhook signed with a secret the server never
// shows back. A save replaces the whole settings, so a kept webhook needs its secret again.

import { call } from "../api.js";
import { el, replace } from "../dom.js";
import { can } from "../ui.js";

export async function render(ctx) {
  const held = await call("GET", `${ctx.base}/notification-settings`);
  const shown = el(
    "dl",
    { class: "facts", id: "notification-settings" },
    el("dt", {}, "E-mail addresses"),
    el("dd", {}, held.emails.length ? held.emails.join(", ") : "none"),
    el("dt", {}, "Webhook"),
    el("dd", {}, held.webhook_url || "none"),
    el("dt", {}, "Webhook secret"),
    el("dd", {}, held.webhook_secret_set ? "set (never shown)" : "not set"),
  );
  replace(
    ctx.container,
    el("section", { class: "card", id: "notifications" }, el("h2", {}, "Notification settings"), shown),
    can(ctx, "manage") ? form(ctx, held) : null,
  );
}

function form(ctx, held) {
  const admin = can(ctx, "admin");
  const emails = el("textarea", { id: "notify-emails", rows: 4, disabled: !admin });
  emails.value = held.emails.join("\n");
  const url = el("input", { id: "notify-webhook-url", type: "text", value: held.webhook_url || "" });
  const secret = el("input", {
    id: "notify-webhook-secret",
    type: "password",
    autocomplete: "new-password",
    minlength: 16,
  });
  return el(
    "form",
    {
      class: "card",
      id: "notify-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = {
          emails: emails.value
            .split(/[\s,]+/)
            .map((e) => e.trim())
            .filter(Boolean),
          webhook_url: url.value.trim() || null,
          webhook_secret: url.value.trim() ? secret.value : null,
        };
        try {
          await call("PUT", `${ctx.base}/notification-settings`, body);
          ctx.show("Notification settings saved.", "done");
          await render(ctx);
        } catch (error) {
          ctx.failed(error);
        }
      },
    },
    el("h2", {}, "Change them"),
    el("label", { for: "notify-emails" }, "E-mail addresses (one a line)"),
    emails,
    admin
      ? null
      : el("p", { class: "hint" }, "Only the admin changes the addresses: they receive renewal codes."),
    el("label", { for: "notify-webhook-url" }, "Webhook URL (http:// or https://; empty: none)"),
    url,
    el("label", { for: "notify-webhook-secret" }, "Webhook secret (at least 16 characters)"),
    secret,
    el(
      "p",
      { class: "hint" },
      "The secret signs each POST (X-Portcullis-Signature) and is never shown back: give it " +
        "again whenever you save with a webhook.",
    ),
    el("button", { type: "submit", class: "primary" }, "Save"),
  );
}

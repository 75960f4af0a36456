// The org's token signing certificates (every role reads them: clients verify tokens with their
// chains) and its tokens (an operator lists, suspends and reactivates them; the admin creates,
// revokes, and generates signing certificates). A new token is shown once, in this page only:
// never kept in the browser's storage or put in a URL, gone when the page is left.

import { all, call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { can, confirmFirst, paged, plural, when } from "../ui.js";

const enc = encodeURIComponent;
const ROLES = ["operator", "approver", "viewer"];
const LIFETIMES = [
  [3600, "1 hour"],
  [86400, "1 day"],
  [30 * 86400, "30 days"],
  [90 * 86400, "90 days"],
  [365 * 86400, "365 days"],
];

export async function render(ctx) {
  const signing = el("section", { class: "card", id: "signing" }, el("h2", {}, "Signing certificates"));
  const tokens = el("section", { class: "card", id: "tokens" }, el("h2", {}, "Tokens"));
  const refresh = () =>
    Promise.all([showSigning(ctx, signing, refresh), can(ctx, "manage") ? showTokens(ctx, tokens, refresh) : null]);
  replace(
    ctx.container,
    signing,
    can(ctx, "manage") ? tokens : null,
    can(ctx, "admin") ? createCard(ctx, refresh) : null,
  );
  await refresh();
}

/** Calls `method path` (with `body`), says `done`, refreshes; shows what the API refused. */
function act(ctx, refresh, method, path, body, done) {
  return async () => {
    try {
      await call(method, path, body);
      ctx.show(done, "done");
      await refresh();
    } catch (error) {
      ctx.failed(error);
    }
  };
}

async function showSigning(ctx, section, refresh) {
  const certs = await all(`${ctx.base}/signing-certificates`);
  const confirm = el("div", { id: "signing-confirm" });
  const columns = [
    ["Alias", (c) => c.alias],
    ["Issuer", (c) => c.issuer],
    ["Not after", (c) => when(c.not_after)],
    [
      "Default",
      (c) => el("span", { class: c.is_default ? "pill on" : "pill off" }, c.is_default ? "default" : "standby"),
    ],
    ["Tokens", (c) => String(c.tokens)],
    ["Grant", (c) => (c.grant ? el("span", { class: `pill ${c.grant.status}` }, c.grant.status) : "")],
  ];
  if (can(ctx, "admin")) {
    const path = (c) => `${ctx.base}/signing-certificates/${enc(c.id)}`;
    columns.push([
      "",
      (c) =>
        c.is_default
          ? el("span", { class: "actions" })
          : el(
              "span",
              { class: "actions" },
              el(
                "button",
                {
                  type: "button",
                  onclick: act(ctx, refresh, "PUT", `${ctx.base}/default-signing-certificate`, { id: c.id }, `New tokens are signed with ${c.alias}.`),
                },
                "Make default",
              ),
              el(
                "button",
                {
                  type: "button",
                  class: "danger",
                  onclick: () =>
                    confirmFirst(
                      confirm,
                      `Delete ${c.alias}?`,
                      `Would revoke ${plural(c.tokens, "token")} it signed.`,
                      "Confirm deletion",
                      act(ctx, refresh, "DELETE", path(c), undefined, `Deleted ${c.alias}.`),
                    ),
                },
                "Delete",
              ),
            ),
    ]);
  }
  replace(
    section,
    el("h2", {}, "Signing certificates"),
    el("p", { class: "hint" }, "The org's tokens are signed with the default; deleting one revokes the tokens it signed."),
    confirm,
    certs.length
      ? table(columns, certs, { id: "signing-list" })
      : el("p", { class: "hint" }, "No signing certificate: no token can be issued."),
    can(ctx, "admin")
      ? el(
          "button",
          {
            type: "button",
            onclick: act(ctx, refresh, "POST", `${ctx.base}/signing-certificates`, {}, "Generated a signing certificate from the platform CA."),
          },
          "Generate a signing certificate",
        )
      : null,
  );
}

async function showTokens(ctx, section, refresh) {
  const confirm = el("div", { id: "token-confirm" });
  const holder = el("div");
  const columns = [
    ["Name", (t) => t.name],
    ["Role", (t) => t.role],
    ["Status", (t) => el("span", { class: t.status === "active" ? "pill on" : "pill off" }, t.status)],
    ["Expires", (t) => when(t.expires_at)],
    ["Created by", (t) => t.created_by],
    [
      "",
      (t) => {
        const path = `${ctx.base}/tokens/${enc(t.id)}`;
        if (t.status === "revoked") return el("span", { class: "actions" });
        return el(
          "span",
          { class: "actions" },
          t.status === "active"
            ? el("button", { type: "button", onclick: act(ctx, refresh, "PATCH", path, { status: "suspended" }, `Suspended ${t.name}.`) }, "Suspend")
            : el("button", { type: "button", onclick: act(ctx, refresh, "PATCH", path, { status: "active" }, `Reactivated ${t.name}.`) }, "Reactivate"),
          can(ctx, "admin")
            ? el(
                "button",
                {
                  type: "button",
                  class: "danger",
                  onclick: () =>
                    confirmFirst(
                      confirm,
                      `Revoke ${t.name}?`,
                      "Would refuse the token from now on, for good.",
                      "Confirm revocation",
                      act(ctx, refresh, "DELETE", path, undefined, `Revoked ${t.name}.`),
                    ),
                },
                "Revoke",
              )
            : null,
        );
      },
    ],
  ];
  await paged(ctx, holder, `${ctx.base}/tokens`, columns, { id: "token-list" }, "No tokens.");
  replace(section, el("h2", {}, "Tokens"), confirm, holder);
}

function createCard(ctx, refresh) {
  const once = el("div", { id: "token-once-box" });
  const name = el("input", { id: "token-name", type: "text", required: true, maxlength: 200 });
  const role = el("select", { id: "token-role" }, ROLES.map((r) => el("option", { value: r }, r)));
  const ttl = el(
    "select",
    { id: "token-ttl" },
    LIFETIMES.map(([seconds, label]) => el("option", { value: seconds, selected: seconds === 30 * 86400 }, label)),
  );
  const form = el(
    "form",
    {
      class: "card",
      id: "token-create",
      onsubmit: async (event) => {
        event.preventDefault();
        let created;
        try {
          created = await call("POST", `${ctx.base}/tokens`, {
            name: name.value,
            role: role.value,
            ttl_seconds: Number(ttl.value),
          });
        } catch (error) {
          ctx.failed(error);
          return;
        }
        form.reset();
        showOnce(once, created);
        ctx.show(`Created ${created.name} (${created.role}).`, "done");
        await refresh().catch(ctx.failed);
      },
    },
    el("h2", {}, "Create a token"),
    once,
    el("label", { for: "token-name" }, "Name"),
    name,
    el("label", { for: "token-role" }, "Role"),
    role,
    el("label", { for: "token-ttl" }, "Valid for"),
    ttl,
    el("button", { type: "submit", class: "primary" }, "Create token"),
  );
  return form;
}

/** The new token, this once: only in the page, gone with "Done" or when the page is left. */
function showOnce(box, created) {
  const value = el("textarea", { id: "token-once", readonly: true, rows: 4, spellcheck: "false" }, created.token);
  replace(
    box,
    el(
      "div",
      { class: "once" },
      el("h3", {}, `The token of ${created.name}`),
      el(
        "p",
        {},
        "Copy it now: it is shown this once, and neither the server nor this console keeps it.",
      ),
      value,
      el("div", { class: "actions" }, el("button", { type: "button", onclick: () => replace(box) }, "Done")),
    ),
  );
  value.select();
  // Gone when the page is left, also from the browser's back/forward cache.
  window.addEventListener("pagehide", () => replace(box), { once: true });
}

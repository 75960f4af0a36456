// The org's blocklist (an operator unblocks an entry) and the CRL held for each of its CAs.

import { ApiError, all, call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { can, paged, when } from "../ui.js";

export async function render(ctx) {
  const cas = await all(`${ctx.base}/ca-certificates`);
  const subjects = new Map(cas.map((ca) => [ca.id, ca.subject]));
  const holder = el("div");
  const crls = el("section", { class: "card", id: "crls" }, el("h2", {}, "CRLs"));
  replace(
    ctx.container,
    el(
      "section",
      { class: "card", id: "blocklist" },
      el("h2", {}, "Blocklist"),
      el("p", { class: "hint" }, "Devices refused at CONNECT whatever their certificate says."),
      holder,
    ),
    crls,
  );
  const show = () =>
    paged(ctx, holder, `${ctx.base}/blocked-devices`, columns(ctx, subjects, () => show()), { id: "block-list" }, "Nothing is blocked.");
  await Promise.all([show(), showCrls(ctx, crls, cas)]);
}

/** What an entry blocks: an identity, a certificate's fingerprint, or a CA's serial. */
function blocks(entry, subjects) {
  if (entry.identity) return entry.identity;
  if (entry.fingerprint_sha256) return `certificate ${entry.fingerprint_sha256}`;
  return `serial ${entry.serial} of ${subjects.get(entry.ca_id) || entry.ca_id}`;
}

function columns(ctx, subjects, refresh) {
  const list = [
    ["Blocks", (b) => blocks(b, subjects)],
    ["Reason", (b) => b.reason],
    ["By", (b) => b.created_by],
    ["Since", (b) => when(b.created_at)],
  ];
  if (can(ctx, "manage")) {
    list.push([
      "",
      (b) =>
        el(
          "button",
          {
            type: "button",
            onclick: async () => {
              try {
                await call("DELETE", `${ctx.base}/blocked-devices/${encodeURIComponent(b.id)}`);
                ctx.show(`Unblocked ${blocks(b, subjects)}.`, "done");
                await refresh();
              } catch (error) {
                ctx.failed(error);
              }
            },
          },
          "Unblock",
        ),
    ]);
  }
  return list;
}

async function showCrls(ctx, section, cas) {
  const held = await Promise.all(
    cas.map((ca) =>
      call("GET", `${ctx.base}/ca-certificates/${encodeURIComponent(ca.id)}/crl`).then(
        (crl) => ({ ca, crl }),
        (error) => {
          if (error instanceof ApiError && error.status === 404) return { ca, crl: null };
          throw error;
        },
      ),
    ),
  );
  replace(
    section,
    el("h2", {}, "CRLs"),
    held.length
      ? table(
          [
            ["CA", ({ ca }) => ca.subject],
            ["Issuer", ({ crl }) => (crl ? crl.issuer : "no CRL held")],
            ["This update", ({ crl }) => (crl ? when(crl.this_update) : "")],
            ["Next update", ({ crl }) => (crl ? when(crl.next_update) : "")],
            ["Revokes", ({ crl }) => (crl ? String(crl.entries) : "")],
            [
              "",
              ({ crl }) =>
                crl && crl.stale ? el("span", { class: "pill expired" }, "stale") : "",
            ],
          ],
          held,
          { id: "crl-list" },
        )
      : el("p", { class: "hint" }, "No CA certificates."),
  );
}

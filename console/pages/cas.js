// An org's CA certificates: the list, and each CA's details (its certificate, settings, grant and
// CRL); for an operator, upload (file picker or drop), activate, deactivate or delete (those two
// shown as their dry run first), the CA's settings (alias, description, CRL URL, OCSP) and
// uploading its CRL.

import { ApiError, all, call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { can, dryRunFirst, plural, when } from "../ui.js";

const enc = encodeURIComponent;

export async function render(ctx) {
  const list = el("section", { class: "card", id: "cas" }, el("h2", {}, "CA certificates"));
  replace(ctx.container, list, can(ctx, "manage") ? uploadCard(ctx, list) : null);
  await showCas(ctx, list);
}

function uploadCard(ctx, list) {
  let picked = null;
  const chosen = el("p", { class: "hint", id: "ca-chosen" });
  const file = el("input", {
    id: "ca-file",
    type: "file",
    accept: ".pem,.crt,.cer,.der,application/x-pem-file,application/pkix-cert",
  });
  const description = el("input", { id: "ca-description", type: "text", maxlength: 1000 });
  const pick = (f) => {
    picked = f || null;
    chosen.textContent = picked ? `Chosen: ${picked.name}` : "";
  };
  file.addEventListener("change", () => pick(file.files[0]));
  const drop = el(
    "div",
    { class: "drop", id: "ca-drop" },
    el("p", {}, "Drop a CA certificate (PEM or DER) here, or choose its file."),
    el("label", { for: "ca-file" }, "CA certificate file"),
    file,
    chosen,
  );
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    pick(event.dataTransfer.files[0]);
  });
  return el(
    "form",
    {
      class: "card",
      id: "upload",
      onsubmit: async (event) => {
        event.preventDefault();
        if (!picked) {
          ctx.show("Choose or drop a certificate file first.");
          return;
        }
        const bytes = new Uint8Array(await picked.arrayBuffer());
        const pem = new TextDecoder().decode(bytes.slice(0, 64)).includes("-----BEGIN");
        try {
          const ca = await call(
            "POST",
            `${ctx.base}/ca-certificates?description=${enc(description.value)}`,
            { raw: bytes, type: pem ? "application/x-pem-file" : "application/pkix-cert" },
          );
          ctx.show(`Uploaded ${ca.subject}.`, "done");
          file.value = "";
          description.value = "";
          pick(null);
          await showCas(ctx, list);
        } catch (error) {
          ctx.failed(error);
        }
      },
    },
    el("h2", {}, "Upload a CA certificate"),
    drop,
    el("label", { for: "ca-description" }, "Description"),
    description,
    el("button", { type: "submit", class: "primary" }, "Upload"),
  );
}

async function showCas(ctx, list) {
  const cas = await all(`${ctx.base}/ca-certificates`);
  const confirm = el("div", { id: "ca-confirm" });
  const details = el("div", { id: "ca-details-box" });
  const columns = [
    [
      "Subject",
      (ca) =>
        el(
          "a",
          {
            href: `#/orgs/${enc(ca.org)}/cas`,
            class: "ca-open",
            onclick: (event) => {
              event.preventDefault();
              showDetails(ctx, list, details, ca.id).catch(ctx.failed);
            },
          },
          ca.subject,
        ),
    ],
    ["Description", (ca) => ca.description],
    [
      "Active",
      (ca) => el("span", { class: ca.active ? "pill on" : "pill off" }, ca.active ? "active" : "inactive"),
    ],
    ["Not after", (ca) => when(ca.not_after)],
  ];
  if (can(ctx, "manage")) columns.push(["", (ca) => caActions(ctx, list, confirm, ca)]);
  replace(
    list,
    el("h2", {}, "CA certificates"),
    confirm,
    details,
    cas.length
      ? table(columns, cas, { id: "ca-list" })
      : el("p", { class: "hint" }, "No CA certificates yet: devices cannot connect."),
  );
}

function caActions(ctx, list, box, ca) {
  const path = `${ctx.base}/ca-certificates/${enc(ca.id)}`;
  const after = () => showCas(ctx, list);
  const activate = async () => {
    try {
      await call("PATCH", path, { active: true });
      ctx.show(`Activated ${ca.subject}.`, "done");
      await after();
    } catch (error) {
      ctx.failed(error);
    }
  };
  const change = (title, confirm, done, method, body) => () =>
    dryRunFirst(ctx, box, {
      question: `${title} ${ca.subject}?`,
      confirm,
      done: `${done} ${ca.subject}.`,
      method,
      path,
      body,
      after,
    });
  return el(
    "span",
    { class: "actions" },
    ca.active
      ? el(
          "button",
          {
            type: "button",
            onclick: change("Deactivate", "Confirm deactivation", "Deactivated", "PATCH", {
              active: false,
            }),
          },
          "Deactivate",
        )
      : el("button", { type: "button", onclick: activate }, "Activate"),
    el(
      "button",
      {
        type: "button",
        class: "danger",
        onclick: change("Delete", "Confirm deletion", "Deleted", "DELETE"),
      },
      "Delete",
    ),
  );
}

/** One CA's details in `box`: its certificate, settings, grant and CRL; for an operator, its
 * settings form and a CRL upload. */
async function showDetails(ctx, list, box, id) {
  const path = `${ctx.base}/ca-certificates/${enc(id)}`;
  const [ca, crl] = await Promise.all([
    call("GET", path),
    call("GET", `${path}/crl`).catch((error) => {
      if (error instanceof ApiError && error.status === 404) return null;
      throw error;
    }),
  ]);
  const fact = (name, value, attrs = {}) => [el("dt", {}, name), el("dd", attrs, value)];
  const grant = ca.grant;
  replace(
    box,
    el(
      "section",
      { class: "card details", id: "ca-details" },
      el(
        "div",
        { class: "actions heading" },
        el("h3", {}, ca.alias || ca.subject),
        el("button", { type: "button", class: "more", onclick: () => replace(box) }, "Close"),
      ),
      el(
        "dl",
        { class: "facts" },
        fact("Subject", ca.subject),
        fact("Alias", ca.alias),
        fact("Description", ca.description),
        fact("Issuer", ca.issuer),
        fact("Serial", ca.serial, { class: "mono" }),
        fact("SHA-256 fingerprint", ca.fingerprint_sha256, { class: "mono" }),
        fact("Not before", when(ca.not_before)),
        fact("Not after", when(ca.not_after)),
        fact("Key", ca.key_type),
        fact("Active", ca.active ? "yes: its devices may connect" : "no"),
        fact("Can issue", ca.can_issue ? "yes (imported with its key)" : "no"),
        fact("Registered", when(ca.registered_at)),
        grant
          ? fact(
              "Grant",
              `${grant.status}: ${grant.uses} of ${grant.max_uses} uses, until ${when(grant.expires_at)}`,
            )
          : null,
        fact("CRL URL", ca.crl_url || "none (uploaded only)"),
        fact(
          "CRL held",
          crl
            ? `issued by ${crl.issuer} at ${when(crl.this_update)}, next ${
                crl.next_update ? when(crl.next_update) : "not said"
              }; revokes ${plural(crl.entries, "certificate")}${crl.stale ? " (stale)" : ""}`
            : "none",
          { id: "ca-crl" },
        ),
        fact("OCSP", ca.ocsp_mode),
        fact("OCSP responder", ca.ocsp_url || "each certificate's own (AIA)"),
      ),
      can(ctx, "manage") ? settingsForm(ctx, list, box, ca, path) : null,
      can(ctx, "manage") ? crlForm(ctx, list, box, ca, path) : null,
    ),
  );
}

function settingsForm(ctx, list, box, ca, path) {
  const field = (id, value, attrs = {}) =>
    el("input", { id, type: "text", value: value || "", ...attrs });
  const alias = field("ca-alias", ca.alias, { maxlength: 200 });
  const description = field("ca-set-description", ca.description, { maxlength: 1000 });
  const crlUrl = field("ca-crl-url", ca.crl_url, { placeholder: "http://… (empty: none)" });
  const ocspMode = el(
    "select",
    { id: "ca-ocsp-mode" },
    [
      ["off", "off: no check"],
      ["soft", "soft: refuse a revoked certificate"],
      ["hard", "hard: also refuse when the responder does not answer"],
    ].map(([mode, label]) => el("option", { value: mode, selected: mode === ca.ocsp_mode }, label)),
  );
  const ocspUrl = field("ca-ocsp-url", ca.ocsp_url, { placeholder: "empty: each certificate's AIA" });
  return el(
    "form",
    {
      id: "ca-settings",
      onsubmit: async (event) => {
        event.preventDefault();
        // Only what changed: setting crl_url fetches the CRL at once.
        const patch = {};
        const url = (input) => input.value.trim() || null;
        if (alias.value !== ca.alias) patch.alias = alias.value;
        if (description.value !== ca.description) patch.description = description.value;
        if (url(crlUrl) !== ca.crl_url) patch.crl_url = url(crlUrl);
        if (ocspMode.value !== ca.ocsp_mode) patch.ocsp_mode = ocspMode.value;
        if (url(ocspUrl) !== ca.ocsp_url) patch.ocsp_url = url(ocspUrl);
        if (!Object.keys(patch).length) {
          ctx.show("Nothing changed.", "done");
          return;
        }
        try {
          await call("PATCH", path, patch);
          ctx.show(`Saved the settings of ${ca.subject}.`, "done");
          await showCas(ctx, list);
          await showDetails(ctx, list, document.getElementById("ca-details-box"), ca.id);
        } catch (error) {
          ctx.failed(error);
        }
      },
    },
    el("h3", {}, "Settings"),
    el("label", { for: "ca-alias" }, "Alias"),
    alias,
    el("label", { for: "ca-set-description" }, "Description"),
    description,
    el("label", { for: "ca-crl-url" }, "CRL URL (fetched at once, then before each next update)"),
    crlUrl,
    el("label", { for: "ca-ocsp-mode" }, "OCSP"),
    ocspMode,
    el("label", { for: "ca-ocsp-url" }, "OCSP responder URL"),
    ocspUrl,
    el("button", { type: "submit", class: "primary" }, "Save settings"),
  );
}

function crlForm(ctx, list, box, ca, path) {
  const file = el("input", {
    id: "crl-file",
    type: "file",
    accept: ".pem,.crl,.der,application/x-pem-file,application/pkix-crl",
  });
  return el(
    "form",
    {
      id: "crl-upload",
      onsubmit: async (event) => {
        event.preventDefault();
        const picked = file.files[0];
        if (!picked) {
          ctx.show("Choose a CRL file first.");
          return;
        }
        const bytes = new Uint8Array(await picked.arrayBuffer());
        const pem = new TextDecoder().decode(bytes.slice(0, 64)).includes("-----BEGIN");
        try {
          const held = await call("PUT", `${path}/crl`, {
            raw: bytes,
            type: pem ? "application/x-pem-file" : "application/pkix-crl",
          });
          ctx.show(
            `Holding ${ca.subject}'s CRL: it revokes ${plural(held.entries, "certificate")}.`,
            "done",
          );
          await showDetails(ctx, list, document.getElementById("ca-details-box"), ca.id);
        } catch (error) {
          ctx.failed(error);
        }
      },
    },
    el("h3", {}, "Upload a CRL"),
    el(
      "p",
      { class: "hint" },
      "PEM or DER, signed by this CA and not older than the one held; the certificates it " +
        "revokes are refused and their sessions closed.",
    ),
    el("label", { for: "crl-file" }, "CRL file"),
    file,
    el("button", { type: "submit", class: "primary" }, "Upload CRL"),
  );
}

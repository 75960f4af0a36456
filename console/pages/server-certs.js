// An org's server certificates (what its devices see in the handshake) and its CSRs. For an
// operator: upload a chain and key (PEM, the key maybe encrypted) or a PKCS#12 file through file
// inputs, generate one from the platform CA, activate one; create a CSR (its PEM shown and
// downloadable), upload the certificate signed for it elsewhere, or request a signature here
// (from the platform CA, self-signed, or a CA of the org held with its key), which may wait for
// an approver (the approval queue).

import { all, call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { can, confirmFirst, when } from "../ui.js";

const enc = encodeURIComponent;
const KEY_TYPES = ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072"];

export async function render(ctx) {
  const certs = el("section", { class: "card", id: "server-certs" }, el("h2", {}, "Server certificates"));
  const csrs = el("section", { class: "card", id: "csrs" }, el("h2", {}, "Certificate signing requests"));
  const refresh = () => Promise.all([showCerts(ctx, certs), showCsrs(ctx, csrs, refresh)]);
  const manage = can(ctx, "manage");
  replace(
    ctx.container,
    certs,
    manage ? el("div", { class: "tiles" }, uploadForms(ctx, refresh), generateCard(ctx, refresh)) : null,
    csrs,
    manage ? csrCard(ctx, csrs, refresh) : null,
  );
  await refresh();
}

/** `items` (a key type, …) as the options of a select. */
function select(id, items, chosen) {
  return el(
    "select",
    { id },
    items.map(([value, label]) => el("option", { value, selected: value === chosen }, label)),
  );
}

/** DNS names, each kept on one line. */
function names(list) {
  return list.flatMap((name, n) => [n ? ", " : null, el("span", { class: "code" }, name)]);
}

/** Bytes as base64 (a PKCS#12 file in a JSON body). */
function base64(bytes) {
  let binary = "";
  for (let at = 0; at < bytes.length; at += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  }
  return btoa(binary);
}

/** A file input with its label. */
function fileField(id, label, accept) {
  return [el("label", { for: id }, label), el("input", { id, type: "file", accept })];
}

/** The file chosen in the input `id` of `form`, or null. */
function chosen(form, id) {
  const input = form.querySelector(`#${id}`);
  return input.files && input.files[0] ? input.files[0] : null;
}

/** A form that calls `submit(form)` and shows what the API refused. */
function form(ctx, id, title, submit, ...fields) {
  const node = el(
    "form",
    {
      class: "card",
      id,
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await submit(node);
        } catch (error) {
          ctx.failed(error);
        }
      },
    },
    el("h2", {}, title),
    ...fields,
  );
  return node;
}

/** The forms uploading a PEM chain and key, and a PKCS#12 file. */
function uploadForms(ctx, refresh) {
  const uploaded = async (node, cert) => {
    node.reset();
    ctx.show(`Uploaded ${cert.alias} (not active yet).`, "done");
    await refresh();
  };
  const pem = form(
    ctx,
    "server-cert-upload-pem",
    "Upload a chain and its key (PEM)",
    async (node) => {
      const chain = chosen(node, "server-chain-file");
      const key = chosen(node, "server-key-file");
      if (!chain || !key) {
        ctx.show("Choose the chain's file and the key's file.");
        return;
      }
      const passphrase = node.querySelector("#server-passphrase").value;
      const body = { certificate_chain: await chain.text(), private_key: await key.text() };
      if (passphrase) body.passphrase = passphrase;
      await uploaded(node, await call("POST", `${ctx.base}/server-certificates`, body));
    },
    el("p", { class: "hint" }, "The chain leaf first; the key in PEM, with its passphrase if it is encrypted."),
    fileField("server-chain-file", "Certificate chain", ".pem,.crt,.cer,application/x-pem-file"),
    fileField("server-key-file", "Private key", ".pem,.key,application/x-pem-file"),
    el("label", { for: "server-passphrase" }, "Key passphrase (if encrypted)"),
    el("input", { id: "server-passphrase", type: "password", autocomplete: "off" }),
    el("button", { type: "submit", class: "primary" }, "Upload PEM"),
  );
  const p12 = form(
    ctx,
    "server-cert-upload-p12",
    "Upload a PKCS#12 file",
    async (node) => {
      const file = chosen(node, "server-p12-file");
      if (!file) {
        ctx.show("Choose the PKCS#12 file.");
        return;
      }
      const body = {
        pkcs12: base64(new Uint8Array(await file.arrayBuffer())),
        password: node.querySelector("#server-p12-password").value,
      };
      await uploaded(node, await call("POST", `${ctx.base}/server-certificates`, body));
    },
    fileField("server-p12-file", "PKCS#12 file", ".p12,.pfx,application/x-pkcs12"),
    el("label", { for: "server-p12-password" }, "Password"),
    el("input", { id: "server-p12-password", type: "password", autocomplete: "off" }),
    el("button", { type: "submit", class: "primary" }, "Upload PKCS#12"),
  );
  return [pem, p12];
}

function generateCard(ctx, refresh) {
  return form(
    ctx,
    "server-cert-generate",
    "Generate one from the platform CA",
    async (node) => {
      const body = {
        dns_name: node.querySelector("#generate-dns-name").value.trim(),
        key_type: node.querySelector("#generate-key-type").value,
      };
      const cert = await call("POST", `${ctx.base}/server-certificates/generate`, body);
      node.reset();
      ctx.show(`Generated ${cert.alias} (not active yet).`, "done");
      await refresh();
    },
    el(
      "p",
      { class: "hint" },
      "Devices that trust the platform CA connect without warnings. The name is one of the org's: ",
      el("span", { class: "code" }, `${ctx.org.id}.messaging.<domain>`),
      ".",
    ),
    el("label", { for: "generate-dns-name" }, "DNS name"),
    el("input", { id: "generate-dns-name", type: "text", required: true, spellcheck: "false" }),
    el("label", { for: "generate-key-type" }, "Key type"),
    select("generate-key-type", KEY_TYPES.map((k) => [k, k]), "ecdsa-p256"),
    el("button", { type: "submit", class: "primary" }, "Generate"),
  );
}

async function showCerts(ctx, section) {
  const certs = await all(`${ctx.base}/server-certificates`);
  const confirm = el("div", { id: "server-cert-confirm" });
  const after = () => showCerts(ctx, section);
  const activate = (id, done) => async () => {
    try {
      await call("PUT", `${ctx.base}/active-server-certificate`, { id });
      ctx.show(done, "done");
      await after();
    } catch (error) {
      ctx.failed(error);
    }
  };
  const columns = [
    ["Alias", (c) => c.alias],
    ["Names", (c) => names(c.dns_names)],
    ["Issuer", (c) => c.issuer],
    ["Not after", (c) => when(c.not_after)],
    [
      "Active",
      (c) => el("span", { class: c.active ? "pill on" : "pill off" }, c.active ? "active" : "inactive"),
    ],
  ];
  if (can(ctx, "manage")) {
    columns.push([
      "",
      (c) =>
        c.active
          ? el("span", { class: "actions" })
          : el(
              "span",
              { class: "actions" },
              el("button", { type: "button", onclick: activate(c.id, `Activated ${c.alias}.`) }, "Activate"),
              el(
                "button",
                {
                  type: "button",
                  class: "danger",
                  onclick: () =>
                    confirmFirst(confirm, `Delete ${c.alias}?`, "Its certificate and key are gone for good.", "Confirm deletion", async () => {
                      try {
                        await call("DELETE", `${ctx.base}/server-certificates/${enc(c.id)}`);
                        ctx.show(`Deleted ${c.alias}.`, "done");
                        await after();
                      } catch (error) {
                        ctx.failed(error);
                      }
                    }),
                },
                "Delete",
              ),
            ),
    ]);
  }
  const active = certs.find((c) => c.active);
  replace(
    section,
    el("h2", {}, "Server certificates"),
    el(
      "p",
      { class: "hint", id: "server-cert-serving" },
      active ? `Devices are served ${active.alias}.` : "Devices are served the platform's default certificate.",
      active && can(ctx, "manage")
        ? el(
            "button",
            { type: "button", class: "more", onclick: activate(null, "Devices are served the platform's default certificate again.") },
            "Use the platform default",
          )
        : null,
    ),
    confirm,
    certs.length
      ? table(columns, certs, { id: "server-cert-list" })
      : el("p", { class: "hint" }, "No server certificates of the org's own."),
  );
}

function csrCard(ctx, csrs, refresh) {
  return form(
    ctx,
    "csr-create",
    "Create a CSR",
    async (node) => {
      const value = (id) => node.querySelector(`#${id}`).value.trim();
      const body = {
        common_name: value("csr-common-name"),
        dns_names: value("csr-dns-names").split(/[\s,]+/).filter(Boolean),
        key_type: value("csr-key-type"),
      };
      if (value("csr-alias")) body.alias = value("csr-alias");
      const csr = await call("POST", `${ctx.base}/csrs`, body);
      node.reset();
      ctx.show(`Created the CSR ${csr.alias}: send its PEM to a CA, or request a signature here.`, "done");
      await refresh();
      showPem(csrs.querySelector("#csr-detail"), csr);
    },
    el("p", { class: "hint" }, "Its key is made and kept (encrypted) here; the request goes to a CA."),
    el("label", { for: "csr-common-name" }, "Common name"),
    el("input", { id: "csr-common-name", type: "text", required: true, maxlength: 64 }),
    el("label", { for: "csr-dns-names" }, "DNS names (separated by commas or spaces)"),
    el("input", { id: "csr-dns-names", type: "text", required: true, spellcheck: "false" }),
    el("label", { for: "csr-key-type" }, "Key type"),
    select("csr-key-type", KEY_TYPES.map((k) => [k, k]), "ecdsa-p256"),
    el("label", { for: "csr-alias" }, "Alias (optional)"),
    el("input", { id: "csr-alias", type: "text", maxlength: 200 }),
    el("button", { type: "submit", class: "primary" }, "Create CSR"),
  );
}

/** What became of a CSR, in words. */
function outcome(csr) {
  const request = csr.signature_request;
  switch (csr.status) {
    case "pending_approval":
      return `waiting for an approver (asked by ${request.requested_by})`;
    case "rejected":
      return `rejected by ${csr.decided_by}: ${csr.decision_reason}`;
    case "completed":
      return csr.decided_by
        ? `signed, approved by ${csr.decided_by}: ${csr.decision_reason}`
        : "signed";
    default:
      return "waiting for its certificate";
  }
}

async function showCsrs(ctx, section, refresh) {
  const list = await all(`${ctx.base}/csrs`);
  const detail = el("div", { id: "csr-detail" });
  const columns = [
    ["Alias", (c) => c.alias],
    ["Names", (c) => names(c.dns_names)],
    ["Key", (c) => el("span", { class: "code" }, c.key_type)],
    ["Status", (c) => el("span", { class: "code" }, c.status)],
    ["Outcome", (c) => outcome(c)],
    ["Created", (c) => when(c.created_at)],
    [
      "",
      (c) =>
        el(
          "span",
          { class: "actions" },
          el("button", { type: "button", onclick: () => showPem(detail, c) }, "Show CSR"),
          can(ctx, "manage") && c.status === "generated"
            ? [
                el("button", { type: "button", onclick: () => uploadSigned(ctx, detail, c, refresh) }, "Upload signed certificate"),
                el("button", { type: "button", onclick: () => requestSignature(ctx, detail, c, refresh) }, "Request signature"),
              ]
            : null,
        ),
    ],
  ];
  replace(
    section,
    el("h2", {}, "Certificate signing requests"),
    detail,
    list.length
      ? table(columns, list, { id: "csr-list" })
      : el("p", { class: "hint" }, "No CSRs."),
  );
}

/** The CSR's PEM, to copy or download (a file made in the page: nothing is fetched). */
function showPem(box, csr) {
  const file = URL.createObjectURL(new Blob([csr.csr_pem], { type: "application/pkcs10" }));
  replace(
    box,
    el(
      "div",
      { class: "confirm detail" },
      el("h3", {}, `CSR ${csr.alias}`),
      el("textarea", { id: "csr-pem", readonly: true, rows: 8, spellcheck: "false" }, csr.csr_pem),
      el(
        "div",
        { class: "actions" },
        el("a", { href: file, download: `${csr.alias}.csr.pem`, id: "csr-download" }, "Download"),
        el("button", { type: "button", onclick: () => { URL.revokeObjectURL(file); replace(box); } }, "Close"),
      ),
    ),
  );
}

/** The certificate a CA signed for `csr`, uploaded from a file. */
function uploadSigned(ctx, box, csr, refresh) {
  const file = el("input", { id: "csr-cert-file", type: "file", accept: ".pem,.crt,.cer,application/x-pem-file" });
  replace(
    box,
    el(
      "form",
      {
        class: "confirm",
        onsubmit: async (event) => {
          event.preventDefault();
          if (!file.files[0]) {
            ctx.show("Choose the signed certificate's file.");
            return;
          }
          try {
            const raw = await file.files[0].text();
            const done = await call("POST", `${ctx.base}/csrs/${enc(csr.id)}/certificate`, {
              raw,
              type: "application/x-pem-file",
            });
            replace(box);
            ctx.show(`The certificate for ${done.alias} is a server certificate now (not active yet).`, "done");
            await refresh();
          } catch (error) {
            ctx.failed(error);
          }
        },
      },
      el("h3", {}, `The signed certificate for ${csr.alias}`),
      el("p", {}, "The chain the CA returned, leaf first (PEM); it must match this CSR's key."),
      el("label", { for: "csr-cert-file" }, "Certificate chain"),
      file,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "submit", class: "primary" }, "Upload certificate"),
        el("button", { type: "button", onclick: () => replace(box) }, "Cancel"),
      ),
    ),
  );
}

/** A signature request: by the platform CA, self-signed, or by a CA of the org with its key. */
async function requestSignature(ctx, box, csr, refresh) {
  let cas;
  try {
    cas = await all(`${ctx.base}/ca-certificates`);
  } catch (error) {
    ctx.failed(error);
    return;
  }
  const issuers = [
    ["platform", "the platform CA"],
    ["self", "self-signed"],
    ...cas.filter((ca) => ca.can_issue).map((ca) => [ca.id, ca.subject]),
  ];
  const issuer = select("signature-issuer", issuers, "platform");
  const reason = el("input", { id: "signature-reason", type: "text", required: true, maxlength: 1000 });
  replace(
    box,
    el(
      "form",
      {
        class: "confirm",
        onsubmit: async (event) => {
          event.preventDefault();
          const self = issuer.value === "self";
          const body = { self_signed: self, reason: reason.value };
          if (!self) body.issuer = issuer.value;
          try {
            const done = await call("POST", `${ctx.base}/csrs/${enc(csr.id)}/signature-request`, body);
            replace(box);
            ctx.show(
              done.status === "pending_approval"
                ? `The signature of ${done.alias} waits for an approver (the approval queue).`
                : `Signed ${done.alias}: it is a server certificate now (not active yet).`,
              "done",
            );
            await refresh();
          } catch (error) {
            ctx.failed(error);
          }
        },
      },
      el("h3", {}, `Request a signature for ${csr.alias}`),
      el("label", { for: "signature-issuer" }, "Signed by"),
      issuer,
      el("label", { for: "signature-reason" }, "Reason"),
      reason,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "submit", class: "primary" }, "Send request"),
        el("button", { type: "button", onclick: () => replace(box) }, "Cancel"),
      ),
    ),
  );
}

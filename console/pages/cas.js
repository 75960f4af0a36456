// An org's CA certificates: the list; for an operator, upload (file picker or drop), activate,
// and deactivate or delete, each of those two shown as its dry run first.

import { all, call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { can, dryRunFirst, when } from "../ui.js";

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
  const columns = [
    ["Subject", (ca) => ca.subject],
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

// The org's approval queue: the signature requests waiting for an approver (those of a role in
// the org's `approval_required_roles`). An approver approves (the CSR is signed) or rejects one,
// with a reason; the API refuses an approver's decision on a request of their own, and says so.

import { ApiError, all, call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { can, when } from "../ui.js";

const enc = encodeURIComponent;

export async function render(ctx) {
  const queue = el("section", { class: "card", id: "approvals" }, el("h2", {}, "Approval queue"));
  replace(ctx.container, queue);
  await showQueue(ctx, queue);
}

async function showQueue(ctx, section) {
  const [pending, cas] = await Promise.all([
    all(`${ctx.base}/csrs?status=pending_approval`),
    all(`${ctx.base}/ca-certificates`),
  ]);
  const subjects = new Map(cas.map((ca) => [ca.id, ca.subject]));
  const signer = (request) => {
    if (request.self_signed) return "self-signed";
    if (request.issuer === "platform") return "the platform CA";
    return subjects.get(request.issuer) || request.issuer;
  };
  const box = el("div", { id: "approval-confirm" });
  const columns = [
    ["CSR", (c) => c.alias],
    ["Names", (c) => c.dns_names.join(", ")],
    ["Signed by", (c) => signer(c.signature_request)],
    [
      "Requested by",
      (c) => `${c.signature_request.requested_by} (${c.signature_request.requested_role})`,
    ],
    ["Reason", (c) => c.signature_request.reason],
    ["Since", (c) => when(c.updated_at)],
  ];
  if (can(ctx, "approve")) {
    const decide = (c, approve) => () =>
      decision(ctx, box, c, signer(c.signature_request), approve, () => showQueue(ctx, section));
    columns.push([
      "",
      (c) =>
        el(
          "span",
          { class: "actions" },
          el("button", { type: "button", onclick: decide(c, true) }, "Approve"),
          el("button", { type: "button", class: "danger", onclick: decide(c, false) }, "Reject"),
        ),
    ]);
  }
  replace(
    section,
    el("h2", {}, "Approval queue"),
    el(
      "p",
      { class: "hint" },
      ctx.org.approval_required_roles.length
        ? `Signature requests of ${ctx.org.approval_required_roles.join(", ")} tokens wait here for an approver.`
        : "No role's signature requests need approval in this organisation.",
    ),
    box,
    pending.length
      ? table(columns, pending, { id: "approval-list" })
      : el("p", { class: "hint" }, "Nothing waits for approval."),
  );
}

/** Asks for the reason of approving (`approve`) or rejecting `csr` (signed by `signer`). */
function decision(ctx, box, csr, signer, approve, after) {
  const reason = el("input", { id: "decision-reason", type: "text", required: true, maxlength: 1000 });
  const verb = approve ? "approve" : "reject";
  replace(
    box,
    el(
      "form",
      {
        class: "confirm",
        role: "dialog",
        "aria-labelledby": "confirm-title",
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            await call("POST", `${ctx.base}/csrs/${enc(csr.id)}/${verb}`, { reason: reason.value });
            replace(box);
            ctx.show(approve ? `Approved: ${csr.alias} is signed.` : `Rejected ${csr.alias}.`, "done");
          } catch (error) {
            // Decided meanwhile: the API's code names the request's status now.
            const conflict = error instanceof ApiError && error.status === 409;
            const now = conflict && error.code.startsWith("csr_") ? error.code.slice(4).replace("_", " ") : null;
            ctx.failed(now ? new ApiError(409, error.code, `${error.message} It is ${now} now.`) : error);
            if (!conflict) return;
            replace(box);
          }
          await after().catch(ctx.failed);
        },
      },
      el("h3", { id: "confirm-title" }, `${approve ? "Approve" : "Reject"} the signature of ${csr.alias}?`),
      el(
        "p",
        {},
        approve
          ? `Signed by ${signer}, it becomes a server certificate of the org (not active).`
          : "The request ends; the CSR stays, rejected.",
      ),
      el("label", { for: "decision-reason" }, "Reason"),
      reason,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "submit", class: "danger" }, approve ? "Confirm approval" : "Confirm rejection"),
        el("button", { type: "button", onclick: () => replace(box) }, "Cancel"),
      ),
    ),
  );
  reason.focus();
}

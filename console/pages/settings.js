// The org's settings (the admin's): its name and whose signature requests wait for approval; its
// topic policy, and deleting it, each shown as its dry run first (the live sessions a new policy
// would close; every session and device of the org, for a deletion).

import { call } from "../api.js";
import { el, replace } from "../dom.js";
import { dryRunFirst, when } from "../ui.js";

/** The roles that request signatures, which `approval_required_roles` is about (the API takes
 * the others too; any the org holds are kept as they are). */
const ROLES = ["operator"];

export async function render(ctx) {
  const org = await call("GET", ctx.base);
  const confirm = el("div", { id: "settings-confirm" });
  const name = el("input", { id: "org-rename", type: "text", maxlength: 200, value: org.name });
  const roles = ROLES.map((role) =>
    el("input", {
      type: "checkbox",
      id: `approval-${role}`,
      value: role,
      checked: org.approval_required_roles.includes(role),
    }),
  );
  const policy = el(
    "select",
    { id: "org-policy" },
    ["iot-2", "open"].map((p) => el("option", { value: p, selected: p === org.topic_policy }, p)),
  );
  const refresh = () => render(ctx);
  replace(
    ctx.container,
    el(
      "form",
      {
        class: "card",
        id: "org-settings",
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            const saved = await call("PATCH", ctx.base, {
              name: name.value,
              approval_required_roles: [
                ...org.approval_required_roles.filter((role) => !ROLES.includes(role)),
                ...roles.filter((box) => box.checked).map((box) => box.value),
              ],
            });
            document.getElementById("org-name").textContent = saved.name;
            ctx.show(`Saved ${saved.id}'s settings.`, "done");
            await refresh();
          } catch (error) {
            ctx.failed(error);
          }
        },
      },
      el("h2", {}, "Organisation"),
      el("p", { class: "hint" }, `${org.id}, created ${when(org.created_at)}.`),
      el("label", { for: "org-rename" }, "Name"),
      name,
      el("fieldset", { class: "choices" },
        el("legend", {}, "Signature requests wait for an approver when made by"),
        ROLES.map((role, n) => el("label", { class: "choice" }, roles[n], ` ${role}`)),
      ),
      el("button", { type: "submit", class: "primary" }, "Save"),
    ),
    el(
      "section",
      { class: "card", id: "org-topics" },
      el("h2", {}, "Topic policy"),
      el(
        "p",
        { class: "hint" },
        "iot-2: the Watson IoT topic space; open: any topic under the org. A change closes the " +
          "live sessions holding a subscription or a will the new policy refuses.",
      ),
      el("p", { id: "org-policy-now" }, `Now: ${org.topic_policy}`),
      el("label", { for: "org-policy" }, "New topic policy"),
      policy,
      el(
        "div",
        { class: "actions" },
        el(
          "button",
          {
            type: "button",
            onclick: () =>
              dryRunFirst(ctx, confirm, {
                question: `Change ${org.id}'s topic policy to ${policy.value}?`,
                confirm: "Confirm topic policy",
                done: `${org.id}'s topic policy is ${policy.value}.`,
                method: "PATCH",
                path: ctx.base,
                body: { topic_policy: policy.value },
                after: refresh,
              }),
          },
          "Change topic policy",
        ),
      ),
    ),
    confirm,
    el(
      "section",
      { class: "card", id: "org-delete" },
      el("h2", {}, "Delete the organisation"),
      el(
        "p",
        { class: "hint" },
        "With its certificates, blocklist and settings; its devices can no longer connect.",
      ),
      el(
        "button",
        {
          type: "button",
          class: "danger",
          onclick: () =>
            dryRunFirst(ctx, confirm, {
              question: `Delete ${org.id} (${org.name})?`,
              confirm: "Confirm deletion",
              done: `Deleted ${org.id}.`,
              method: "DELETE",
              path: ctx.base,
              after: () => {
                location.hash = "#/";
              },
            }),
        },
        "Delete organisation",
      ),
    ),
  );
}

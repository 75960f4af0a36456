// Why devices could not connect: the org's last refusals, newest first, and what the server would
// do now with a certificate chain (its explanation), without a connection.

import { call } from "../api.js";
import { el, replace, table } from "../dom.js";
import { plural, when } from "../ui.js";

export async function render(ctx) {
  const list = el("section", { class: "card", id: "refusals" }, el("h2", {}, "Refusals"));
  replace(ctx.container, list, explainCard(ctx));
  await showRefusals(ctx, list);
}

async function showRefusals(ctx, list) {
  const refusals = await call("GET", `${ctx.base}/refusals`);
  replace(
    list,
    el("h2", {}, "Refusals"),
    el(
      "p",
      { class: "hint" },
      `${plural(refusals.items.length, "refusal")} kept by this node, newest first. `,
      el(
        "button",
        {
          type: "button",
          class: "more",
          onclick: () => showRefusals(ctx, list).catch(ctx.failed),
        },
        "Refresh",
      ),
    ),
    refusals.items.length
      ? table(
          [
            ["Time", (r) => when(r.at)],
            ["Reason", (r) => el("span", { class: "code" }, r.reason || "")],
            ["Stage", (r) => el("span", { class: "code" }, r.stage || "")],
            ["Identity", (r) => r.identity || ""],
            ["Fingerprint", (r) => el("span", { class: "mono" }, r.fingerprint_sha256 || "")],
            ["SNI", (r) => r.sni || ""],
            ["Peer", (r) => el("span", { class: "code" }, r.peer || "")],
            ["Node", (r) => r.node],
          ],
          refusals.items,
          { id: "refusal-list" },
        )
      : null,
  );
}

function explainCard(ctx) {
  const chain = el("textarea", { id: "explain-chain", rows: 6, spellcheck: "false", required: true });
  const clientId = el("input", { id: "explain-client-id", type: "text", spellcheck: "false" });
  const answer = el("div", { id: "explanation" });
  return el(
    "form",
    {
      class: "card",
      id: "explain",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { certificate_chain: chain.value };
        if (clientId.value.trim()) body.client_id = clientId.value.trim();
        try {
          showExplanation(answer, await call("POST", `${ctx.base}/explain`, body));
        } catch (error) {
          replace(answer);
          ctx.failed(error);
        }
      },
    },
    el("h2", {}, "Explain a certificate"),
    el(
      "p",
      { class: "hint" },
      "What the server would do now with a device presenting this chain, without a connection.",
    ),
    el("label", { for: "explain-chain" }, "Certificate chain (PEM, leaf first)"),
    chain,
    el("label", { for: "explain-client-id" }, "Client id (optional)"),
    clientId,
    el("button", { type: "submit", class: "primary" }, "Explain"),
    answer,
  );
}

function showExplanation(answer, e) {
  const item = (term, ...detail) => [el("dt", {}, term), el("dd", {}, ...detail)];
  replace(
    answer,
    el(
      "dl",
      { class: e.accepted ? "verdict accepted" : "verdict refused" },
      item("Verdict", e.accepted ? "accepted" : "refused"),
      e.stage ? item("Stage", e.stage) : null,
      e.reason ? item("Reason", e.reason) : null,
      item("Explanation", e.message),
      e.client_ids.length ? item("May connect as", e.client_ids.join(", ")) : null,
    ),
  );
}

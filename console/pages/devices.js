// The org's device registry (every identity that authenticated, with its certificate), filtered
// as the API's query takes it; an operator blocks an identity, a certificate (its fingerprint) or
// a CA's serial, after the blocklist's dry run showed what it would close and lock out.

import { all } from "../api.js";
import { el, replace } from "../dom.js";
import { can, dryRunFirst, paged, when } from "../ui.js";

export async function render(ctx) {
  const cas = await all(`${ctx.base}/ca-certificates`);
  const subjects = new Map(cas.map((ca) => [ca.id, ca.subject]));
  const confirm = el("div", { id: "device-confirm" });
  const holder = el("div");
  const filters = filterForm(() => show().catch(ctx.failed));
  let latest = 0;
  // A list per query, shown only when it is still the latest (typing fires several).
  const show = async () => {
    const mine = ++latest;
    const list = el("div");
    await paged(
      ctx,
      list,
      `${ctx.base}/devices${filters.query()}`,
      columns(ctx, subjects, confirm, show),
      { id: "device-list" },
      filters.query() ? "No device matches." : "No device has connected yet.",
    );
    if (mine === latest) replace(holder, list);
  };
  replace(
    ctx.container,
    el(
      "section",
      { class: "card", id: "devices" },
      el("h2", {}, "Devices"),
      el("p", { class: "hint" }, "Every identity that authenticated, by first sighting."),
      filters.form,
      confirm,
      holder,
    ),
    can(ctx, "manage") ? blockForm(ctx, cas, confirm, show) : null,
  );
  await show();
}

/** The list's filters: `form`, and `query()` (the API's query string for them, or ""). */
function filterForm(apply) {
  const type = el("input", { id: "filter-type", type: "text", placeholder: "sensor" });
  const prefix = el("input", { id: "filter-id-prefix", type: "text", placeholder: "dev" });
  const expires = el("input", { id: "filter-expires-before", type: "date" });
  const seen = el("input", { id: "filter-seen-after", type: "datetime-local" });
  const query = () => {
    const params = new URLSearchParams();
    if (type.value.trim()) params.set("type", type.value.trim());
    if (prefix.value.trim()) params.set("id_prefix", prefix.value.trim());
    // A date is the start of that day, UTC; a local time is sent as UTC.
    if (expires.value) params.set("expires_before", `${expires.value}T00:00:00Z`);
    if (seen.value) params.set("seen_after", new Date(seen.value).toISOString());
    const text = params.toString();
    return text ? `?${text}` : "";
  };
  const field = (input, label) =>
    el("div", {}, el("label", { for: input.id }, label), input);
  // Applied as they are typed (a pause first), with no button: a viewer is offered none.
  let pause;
  const changed = () => {
    clearTimeout(pause);
    pause = setTimeout(apply, 300);
  };
  const form = el(
    "form",
    {
      class: "filters",
      id: "device-filters",
      oninput: changed,
      onchange: changed,
      onsubmit: (event) => {
        event.preventDefault();
        apply();
      },
    },
    field(type, "Type"),
    field(prefix, "ID starts with"),
    field(expires, "Expiring before"),
    field(seen, "Seen after"),
  );
  return { form, query };
}

function columns(ctx, subjects, confirm, refresh) {
  const list = [
    ["Identity", (d) => el("span", { class: "code" }, d.identity)],
    ["CA", (d) => subjects.get(d.ca_id) || d.ca_id],
    ["Serial", (d) => el("span", { class: "mono" }, d.serial)],
    ["Not after", (d) => when(d.not_after)],
    ["First seen", (d) => when(d.first_seen)],
    ["Last seen", (d) => when(d.last_seen)],
  ];
  if (can(ctx, "manage")) {
    list.push([
      "",
      (d) =>
        el(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: () =>
              block(ctx, confirm, d.identity, { identity: d.identity }, refresh),
          },
          "Block",
        ),
    ]);
  }
  return list;
}

/** Blocks `what` (`target`: the entry's body but its reason) once its dry run was shown and
 * confirmed. */
function block(ctx, confirm, what, target, refresh) {
  const reason = el("input", { id: "block-reason", type: "text", maxlength: 1000 });
  return dryRunFirst(ctx, confirm, {
    question: `Block ${what}?`,
    confirm: "Confirm block",
    done: `Blocked ${what}.`,
    method: "POST",
    path: `${ctx.base}/blocked-devices`,
    body: () => ({ ...target, reason: reason.value }),
    extra: [el("label", { for: "block-reason" }, "Reason"), reason],
    after: refresh,
  });
}

/** Blocks a certificate by its fingerprint, or by its CA and serial (any identity it claims). */
function blockForm(ctx, cas, confirm, refresh) {
  const kind = el(
    "select",
    { id: "block-kind" },
    el("option", { value: "fingerprint" }, "a certificate, by its SHA-256 fingerprint"),
    el("option", { value: "serial" }, "a certificate, by its CA and serial"),
  );
  const fingerprint = el("input", {
    id: "block-fingerprint",
    type: "text",
    class: "mono",
    maxlength: 64,
    placeholder: "64 hex digits",
  });
  const ca = el(
    "select",
    { id: "block-ca" },
    // Its subject, and its alias when that is not the subject's CN (the default).
    cas.map((c) =>
      el(
        "option",
        { value: c.id },
        c.subject === `CN=${c.alias}` ? c.subject : `${c.subject} (${c.alias})`,
      ),
    ),
  );
  const serial = el("input", { id: "block-serial", type: "text", class: "mono", placeholder: "hex" });
  const byFingerprint = el(
    "div",
    {},
    el("label", { for: "block-fingerprint" }, "Fingerprint"),
    fingerprint,
  );
  const bySerial = el(
    "div",
    { hidden: true },
    el("label", { for: "block-ca" }, "CA"),
    ca,
    el("label", { for: "block-serial" }, "Serial"),
    serial,
  );
  kind.addEventListener("change", () => {
    byFingerprint.hidden = kind.value !== "fingerprint";
    bySerial.hidden = kind.value !== "serial";
  });
  return el(
    "form",
    {
      class: "card",
      id: "block-certificate",
      onsubmit: (event) => {
        event.preventDefault();
        confirm.scrollIntoView();
        if (kind.value === "fingerprint") {
          const f = fingerprint.value.trim();
          return block(ctx, confirm, `the certificate ${f}`, { fingerprint_sha256: f }, refresh);
        }
        const s = serial.value.trim();
        const name = ca.selectedOptions[0] ? ca.selectedOptions[0].textContent : ca.value;
        return block(ctx, confirm, `serial ${s} of ${name}`, { ca_id: ca.value, serial: s }, refresh);
      },
    },
    el("h2", {}, "Block a certificate"),
    el(
      "p",
      { class: "hint" },
      "Whatever identity it claims: by its fingerprint, or by the CA that issued it and its serial.",
    ),
    el("label", { for: "block-kind" }, "Block"),
    kind,
    byFingerprint,
    bySerial,
    el("button", { type: "submit", class: "danger" }, "Block…"),
  );
}

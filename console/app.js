// The Portcullis web console (DESIGN §13): sign in with a token, the organisations, and for one
// organisation its sections (`#/orgs/<id>/<section>`, each a module of `pages/`). What the
// caller's role may not do is not offered: `GET /api/v1/whoami` says what it may.

import { ApiError, all, call, forgetToken, keepToken, token } from "./api.js";
import { el, replace, table } from "./dom.js";
import { when } from "./ui.js";

/**
 * An org's sections, in the order of its tabs: `id` (in the route), `title`, `module` (its
 * `render(ctx)`), `may` (the `/whoami` entry needed to see it). The first is the default.
 *
 * `render(ctx)` fills `ctx.container` and may throw (shown by the app); ctx: `org` (the API's
 * org), `base` (its API path, `/orgs/<id>`), `me` (`/whoami`, with `may`), `container`,
 * `signal` (aborts when the page is left: streams and timers stop with it), `show(message,
 * kind)` (kind "error" or "done"), `failed(error)` (an API error shown; a refused token signs
 * out).
 */
const SECTIONS = [
  { id: "overview", title: "Overview", module: () => import("./pages/overview.js"), may: "read" },
  { id: "cas", title: "CA certificates", module: () => import("./pages/cas.js"), may: "read" },
  { id: "devices", title: "Devices", module: () => import("./pages/devices.js"), may: "read" },
  { id: "sessions", title: "Live sessions", module: () => import("./pages/sessions.js"), may: "read" },
  { id: "events", title: "Events", module: () => import("./pages/events.js"), may: "read" },
  { id: "refusals", title: "Refusals", module: () => import("./pages/refusals.js"), may: "read" },
  { id: "blocklist", title: "Blocklist and CRLs", module: () => import("./pages/blocklist.js"), may: "read" },
  { id: "audit", title: "Audit log", module: () => import("./pages/audit.js"), may: "read" },
  { id: "server-certs", title: "Server certificates", module: () => import("./pages/server-certs.js"), may: "read" },
  { id: "approvals", title: "Approval queue", module: () => import("./pages/approvals.js"), may: "read" },
  { id: "tokens", title: "Signing certificates and tokens", module: () => import("./pages/tokens.js"), may: "read" },
  { id: "grants", title: "Access grants", module: () => import("./pages/grants.js"), may: "read" },
  { id: "notifications", title: "Notification settings", module: () => import("./pages/notifications.js"), may: "read" },
  { id: "settings", title: "Organisation", module: () => import("./pages/settings.js"), may: "admin" },
];

const app = document.getElementById("app");
const status = document.getElementById("status");
const who = document.getElementById("who");
const signOut = document.getElementById("sign-out");

/** The caller (`/whoami`), once signed in. */
let me = null;
/** Stops the current page's event stream. */
let leave = new AbortController();
/** Counts renders, so that a slow one does not overwrite a newer page. */
let generation = 0;

const enc = encodeURIComponent;

function show(message, kind = "error") {
  status.textContent = message;
  status.className = `status ${kind}`;
  status.hidden = false;
}

function clearStatus() {
  status.hidden = true;
  status.textContent = "";
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

async function render() {
  leave.abort();
  leave = new AbortController();
  const mine = ++generation;
  if (!token()) {
    me = null;
    return signIn();
  }
  try {
    if (!me) me = await call("GET", "/whoami");
    if (mine !== generation) return;
    header();
    const org = location.hash.match(/^#\/orgs\/([^/]+)(?:\/([a-z-]+))?$/);
    if (org) await orgPage(decodeURIComponent(org[1]), org[2], mine);
    else await orgsPage(mine);
  } catch (error) {
    failed(error);
  }
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    // The page's event stream and refreshes stop with it.
    leave.abort();
    forgetToken();
    me = null;
    signIn();
    show("The token was refused (unknown, expired, suspended or revoked). Sign in again.");
  } else {
    show(error.message || String(error));
  }
}

function header() {
  const name = me.principal === "admin" ? "admin token" : me.name;
  who.textContent = me.org ? `${name} · ${me.role} of ${me.org}` : `${name} · ${me.role}`;
  signOut.hidden = false;
}

function signIn() {
  who.textContent = "";
  signOut.hidden = true;
  // No `name` on the field: even a form sent without this script carries no token.
  const field = el("input", {
    id: "token",
    type: "password",
    // Not "off", which browsers ignore for passwords: a one-time code is not offered for saving.
    autocomplete: "one-time-code",
    spellcheck: "false",
    required: true,
  });
  const form = el(
    "form",
    {
      class: "card sign-in",
      onsubmit: async (event) => {
        event.preventDefault();
        const presented = field.value.trim();
        if (!presented) return;
        try {
          me = await call("GET", "/whoami", undefined, presented);
        } catch (error) {
          show(
            error instanceof ApiError && error.status === 401
              ? "That token was refused."
              : error.message,
          );
          return;
        }
        field.value = "";
        keepToken(presented);
        clearStatus();
        go("#/");
      },
    },
    el("h1", {}, "Sign in"),
    el(
      "p",
      { class: "hint" },
      "An admin token or an organisation's token. It is kept in this browser tab only.",
    ),
    el("label", { for: "token" }, "Token"),
    field,
    el("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  replace(app, form);
  field.focus();
}

async function orgsPage(mine) {
  const orgs =
    me.principal === "admin" ? await all("/orgs") : [await call("GET", `/orgs/${enc(me.org)}`)];
  if (mine !== generation) return;
  replace(
    app,
    el(
      "section",
      { class: "card" },
      el("h1", {}, "Organisations"),
      orgs.length
        ? table(
            [
              ["ID", (o) => el("a", { href: `#/orgs/${enc(o.id)}` }, o.id)],
              ["Name", (o) => o.name],
              ["Topic policy", (o) => o.topic_policy],
              ["Created", (o) => when(o.created_at)],
            ],
            orgs,
            { id: "orgs" },
          )
        : el("p", { class: "hint" }, "No organisations yet."),
    ),
    me.may.includes("admin") ? newOrgForm() : null,
  );
}

/** The admin's form for a new org: id, name, topic policy. */
function newOrgForm() {
  const id = el("input", { id: "new-org-id", type: "text", maxlength: 32, required: true });
  const name = el("input", { id: "new-org-name", type: "text", maxlength: 200, required: true });
  const policy = el(
    "select",
    { id: "new-org-policy" },
    el("option", { value: "iot-2" }, "iot-2 (the Watson IoT topic space)"),
    el("option", { value: "open" }, "open (any topic under the org)"),
  );
  return el(
    "form",
    {
      class: "card",
      id: "new-org",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const org = await call("POST", "/orgs", {
            id: id.value.trim(),
            name: name.value,
            topic_policy: policy.value,
          });
          show(`Created ${org.id}.`, "done");
          render();
        } catch (error) {
          failed(error);
        }
      },
    },
    el("h2", {}, "New organisation"),
    el(
      "p",
      { class: "hint" },
      "Its id is a DNS label of its names (lower-case letters, digits, inner hyphens).",
    ),
    el("label", { for: "new-org-id" }, "ID"),
    id,
    el("label", { for: "new-org-name" }, "Name"),
    name,
    el("label", { for: "new-org-policy" }, "Topic policy"),
    policy,
    el("button", { type: "submit", class: "primary" }, "Create"),
  );
}

async function orgPage(id, wanted, mine) {
  const org = await call("GET", `/orgs/${enc(id)}`);
  if (mine !== generation) return;
  const visible = SECTIONS.filter((s) => me.may.includes(s.may));
  const section = visible.find((s) => s.id === (wanted || "overview"));
  const container = el("div", { id: `section-${section ? section.id : "unknown"}` });
  replace(
    app,
    el(
      "nav",
      { class: "crumbs" },
      el("a", { href: "#/" }, "Organisations"),
      " / ",
      el("span", {}, org.id),
    ),
    el("h1", { id: "org-name" }, org.name),
    el(
      "nav",
      { class: "tabs", id: "sections", "aria-label": "Sections" },
      visible.map((s) =>
        el(
          "a",
          {
            href: `#/orgs/${enc(org.id)}/${s.id}`,
            "aria-current": s === section ? "page" : null,
          },
          s.title,
        ),
      ),
    ),
    container,
  );
  if (!section) {
    show(`No section "${wanted}" here.`);
    return;
  }
  const page = await section.module();
  if (mine !== generation) return;
  await page.render({
    org,
    base: `/orgs/${enc(org.id)}`,
    me,
    container,
    signal: leave.signal,
    show,
    failed,
  });
}

signOut.addEventListener("click", () => {
  forgetToken();
  me = null;
  clearStatus();
  go("#/");
});
window.addEventListener("hashchange", () => {
  clearStatus();
  render();
});
render();

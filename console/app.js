// The Portcullis web console (DESIGN §13): sign in with a token, the organisations, and for one
// organisation its CA certificates (upload, deactivate, delete, each destructive change shown as
// its dry run first) and its live sessions. What the caller's role may not do is not offered:
// `GET /api/v1/whoami` says what it may.

import { ApiError, all, call, follow, forgetToken, keepToken, token } from "./api.js";
import { el, replace, table } from "./dom.js";

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

function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

/** An RFC 3339 time as `2026-12-06 11:40 UTC`. */
function when(time) {
  if (!time) return "";
  return time.endsWith("Z") ? `${time.slice(0, 16).replace("T", " ")} UTC` : time;
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
    const org = location.hash.match(/^#\/orgs\/([^/]+)$/);
    if (org) await orgPage(decodeURIComponent(org[1]), mine);
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
    autocomplete: "off",
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
  );
}

async function orgPage(id, mine) {
  const org = await call("GET", `/orgs/${enc(id)}`);
  if (mine !== generation) return;
  const manage = me.may.includes("manage");
  const base = `/orgs/${enc(org.id)}`;
  const cas = el("section", { class: "card", id: "cas" }, el("h2", {}, "CA certificates"));
  const sessions = el("section", { class: "card", id: "sessions" }, el("h2", {}, "Live sessions"));
  const page = {
    base,
    manage,
    cas,
    sessions,
    subjects: new Map(),
    refresh: async () => {
      await showCas(page);
      await showSessions(page);
    },
  };
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
    cas,
    manage ? uploadCard(page) : null,
    sessions,
  );
  await page.refresh();
  followSessions(org.id, page, leave.signal);
}

/**
 * Refreshes the live sessions on each connect and disconnect of the org's event stream, until
 * `signal` aborts (another page shown); a stream that ended (the server drops a reader that falls
 * behind) is followed again after a pause, the list refreshed for what it missed.
 */
async function followSessions(org, page, signal) {
  let pending = null;
  const refresh = () => {
    // A burst of events is one refresh.
    clearTimeout(pending);
    pending = setTimeout(() => {
      if (!signal.aborted) showSessions(page).catch(failed);
    }, 200);
  };
  while (!signal.aborted) {
    await follow(org, signal, (kind) => {
      if (kind === "connect" || kind === "disconnect") refresh();
    }).catch(() => {});
    await new Promise((resume) => setTimeout(resume, 3000));
    if (!signal.aborted) refresh();
  }
}

function uploadCard(page) {
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
          show("Choose or drop a certificate file first.");
          return;
        }
        const bytes = new Uint8Array(await picked.arrayBuffer());
        const pem = new TextDecoder().decode(bytes.slice(0, 64)).includes("-----BEGIN");
        try {
          const ca = await call(
            "POST",
            `${page.base}/ca-certificates?description=${enc(description.value)}`,
            { raw: bytes, type: pem ? "application/x-pem-file" : "application/pkix-cert" },
          );
          show(`Uploaded ${ca.subject}.`, "done");
          file.value = "";
          description.value = "";
          pick(null);
          await showCas(page);
        } catch (error) {
          failed(error);
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

async function showCas(page) {
  const cas = await all(`${page.base}/ca-certificates`);
  page.subjects = new Map(cas.map((ca) => [ca.id, ca.subject]));
  const columns = [
    ["Subject", (ca) => ca.subject],
    ["Description", (ca) => ca.description],
    [
      "Active",
      (ca) => el("span", { class: ca.active ? "pill on" : "pill off" }, ca.active ? "active" : "inactive"),
    ],
    ["Not after", (ca) => when(ca.not_after)],
  ];
  if (page.manage) columns.push(["", (ca) => caActions(page, ca)]);
  replace(
    page.cas,
    el("h2", {}, "CA certificates"),
    el("div", { id: "ca-confirm" }),
    cas.length
      ? table(columns, cas, { id: "ca-list" })
      : el("p", { class: "hint" }, "No CA certificates yet: devices cannot connect."),
  );
}

function caActions(page, ca) {
  const path = `${page.base}/ca-certificates/${enc(ca.id)}`;
  const activate = async () => {
    try {
      await call("PATCH", path, { active: true });
      show(`Activated ${ca.subject}.`, "done");
      await page.refresh();
    } catch (error) {
      failed(error);
    }
  };
  return el(
    "span",
    { class: "actions" },
    ca.active
      ? el(
          "button",
          {
            type: "button",
            onclick: () =>
              dryRunFirst(page, ca, {
                title: "Deactivate",
                confirm: "Confirm deactivation",
                done: "Deactivated",
                method: "PATCH",
                path,
                body: { active: false },
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
        onclick: () =>
          dryRunFirst(page, ca, {
            title: "Delete",
            confirm: "Confirm deletion",
            done: "Deleted",
            method: "DELETE",
            path,
          }),
      },
      "Delete",
    ),
  );
}

/** Shows what the change would close and lock out (its dry run), and makes it when confirmed. */
async function dryRunFirst(page, ca, change) {
  const box = page.cas.querySelector("#ca-confirm");
  let would;
  try {
    would = await call(change.method, `${change.path}?dry_run=true`, change.body);
  } catch (error) {
    failed(error);
    return;
  }
  const names = (list, total) =>
    el(
      "ul",
      { class: "ids" },
      list.map((name) => el("li", {}, name)),
      total > list.length ? el("li", { class: "hint" }, `… and ${total - list.length} more`) : null,
    );
  const { sessions, client_ids } = would.would_close;
  const { devices, identities } = would.would_refuse;
  replace(
    box,
    el(
      "div",
      { class: "confirm", role: "dialog", "aria-labelledby": "confirm-title" },
      el("h3", { id: "confirm-title" }, `${change.title} ${ca.subject}?`),
      el("p", { id: "would-close" }, `Would close ${plural(sessions, "session")}.`),
      sessions ? names(client_ids, sessions) : null,
      el("p", { id: "would-refuse" }, `Would lock out ${plural(devices, "device")}.`),
      devices ? names(identities, devices) : null,
      el(
        "div",
        { class: "actions" },
        el(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: async () => {
              try {
                await call(change.method, change.path, change.body);
                show(`${change.done} ${ca.subject}.`, "done");
                await page.refresh();
              } catch (error) {
                failed(error);
              }
            },
          },
          change.confirm,
        ),
        el("button", { type: "button", onclick: () => replace(box) }, "Cancel"),
      ),
    ),
  );
}

async function showSessions(page) {
  const sessions = await all(`${page.base}/sessions`);
  replace(
    page.sessions,
    el("h2", {}, "Live sessions"),
    el("p", { class: "hint" }, `${plural(sessions.length, "session")}, updated as devices come and go.`),
    sessions.length
      ? table(
          [
            ["Client id", (s) => s.client_id],
            ["Identity", (s) => s.identity],
            ["CA", (s) => page.subjects.get(s.ca_id) || s.ca_id],
            ["MQTT", (s) => (s.protocol === 5 ? "5" : "3.1.1")],
            ["Peer", (s) => s.peer || ""],
            ["Connected", (s) => when(s.connected_at)],
            ["Node", (s) => s.node],
          ],
          sessions,
          { id: "session-list" },
        )
      : null,
  );
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

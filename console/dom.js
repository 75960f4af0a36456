// Building the page. Text is only ever set with text nodes: a string from the server (a CA's
// subject or description, an org's name, a client id) is shown as text and never parsed as HTML.

/**
 * An element: `el("td", {class: "num"}, "3", child)`. Attributes are set by name; `on*` handlers
 * are attached as listeners (none are ever markup); children are nodes or strings (text).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/** A table: `columns` are [heading, row => cell content]; `body` its tbody, when given. */
export function table(columns, rows, attrs = {}, body = el("tbody")) {
  append(
    body,
    rows.map((item) => row(columns, item)),
  );
  return el(
    "table",
    attrs,
    el("thead", {}, el("tr", {}, columns.map(([heading]) => el("th", { scope: "col" }, heading)))),
    body,
  );
}

/** One row of a table of `columns` (see `table`). */
export function row(columns, item) {
  return el("tr", {}, columns.map(([, cell]) => el("td", {}, cell(item))));
}

"use strict";
// The review page. Served under a Content-Security-Policy without inline script; the session is an
// HttpOnly cookie this script never sees. Every value from the server is set as text (textContent,
// attributes), never parsed as HTML; the one exception is the metrics fragment, which the server
// builds with every value escaped (review/metrics.py).
const state = { queue: "least-wanted", items: [], sel: 0, undo: [], source: null };
const $ = (s) => document.querySelector(s);

async function api(url, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(url, { ...opts, credentials: "same-origin" });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

// el("p", {className: "x"}, "text", child, ...): an element whose strings are text nodes.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

function status(text) { $("#status").textContent = text; }

const LABELS = new Set(["keep", "delete"]);
const score = (v) => Number(v).toFixed(3);

function render() {
  const grid = $("#grid");
  grid.replaceChildren();
  if (!state.items.length) {
    grid.append(el("p", { className: "empty" }, "Nothing in this queue."));
    $("#detail").replaceChildren();
    return;
  }
  let group = null;
  state.items.forEach((it, i) => {
    if (it.group !== undefined && it.group !== group) {
      group = it.group;
      grid.append(el("div", { className: "group-start" }, `Group ${it.group}: ${it.kind}`));
    }
    const t = el("div", { className: "tile" + (i === state.sel ? " sel" : "") },
      el("img", { loading: "lazy", alt: String(it.name), src: "/thumb/" + encodeURIComponent(it.sha256) }),
      LABELS.has(it.label) && el("span", { className: "badge " + it.label }, it.label),
      it.keeper && el("span", { className: "keeper" }, "keeper"),
      it.copy && el("span", { className: "copy" }, "exact copy"),
      el("div", { className: "meta" },
        el("span", { className: "where" },
          el("span", { className: "folder" }, it.folder ? String(it.folder) + "/" : ""),
          el("span", { className: "name", title: String(it.path) }, String(it.name))),
        el("span", {}, score(it.score))));
    t.dataset.index = i;
    t.addEventListener("click", () => select(i));
    grid.append(t);
  });
  showDetail();
}

function select(i) {
  if (!state.items.length) return;
  state.sel = Math.max(0, Math.min(state.items.length - 1, i));
  document.querySelectorAll(".tile").forEach((t) => t.classList.toggle("sel", Number(t.dataset.index) === state.sel));
  const tile = document.querySelector(`.tile[data-index="${state.sel}"]`);
  if (tile) tile.scrollIntoView({ block: "nearest" });
  showDetail();
  if ($("#large").classList.contains("open")) openLarge();
}

const CHOSEN = {  // why the informative queue offers a photo (imgrank.active.choose)
  random: "it was drawn at random: on the benchmarks no queue taught the head more than labels drawn at random",
  uncertain: "the head is unsure about it, and it is unlike the other photos offered in what the head sees",
  representative: "it stands for one kind of photo in the folder (there is no trained head yet)",
};

function whyNodes(why) {
  const out = [];
  if (why.head) out.push(el("p", {}, `Order from the ${why.head}.`));
  if (why.prior) {
    out.push(el("p", {}, `Prior ${score(why.prior.p)}; top prompts:`));
    out.push(el("ul", {}, ...why.prior.prompts.map((p) =>
      el("li", { className: p.kind === "keep" ? "kind-keep" : "kind-delete" }, `${p.prompt} (${(100 * p.share).toFixed(0)}%)`))));
    const cues = Object.entries(why.prior.cues).map(([k, v]) => `${k} ${Number(v).toFixed(2)}`).join(", ");
    if (cues) out.push(el("p", {}, `cues (1 = a sign of delete): ${cues}`));
  } else if (why.prior_error) out.push(el("p", {}, String(why.prior_error)));
  return out;
}

async function showDetail() {
  const it = state.items[state.sel];
  if (!it) return;
  const from = it.source === "head" ? "the trained head" : it.source === "prior" ? "the cold-start prior" : "nothing yet";
  const whyBox = el("div", { id: "why" }, "…");
  $("#detail").replaceChildren(
    el("h2", {}, String(it.path)),
    el("p", {}, "deletion score ", el("b", {}, score(it.score)), ` from ${from}`,
      LABELS.has(it.label) && "; labelled ", LABELS.has(it.label) && el("b", {}, it.label),
      it.p_label !== undefined && `; P(label) ${it.p_label}`),
    CHOSEN[it.why_chosen] ? el("p", { className: "chosen" }, `Offered because ${CHOSEN[it.why_chosen]}.`) : "",
    whyBox);
  try {
    const why = await api("/api/why/" + encodeURIComponent(it.sha256));
    if (state.items[state.sel] !== it) return;
    whyBox.replaceChildren(...whyNodes(why));
  } catch (e) { whyBox.textContent = e.message; }
}

async function load(queue) {
  state.queue = queue;
  document.querySelectorAll("header button[data-queue], header button[data-tab]").forEach((b) => b.classList.toggle("on", b.dataset.queue === queue));
  $("#metrics").style.display = "none";
  $("#review").style.display = "flex";
  status("loading…");
  const data = await api(`/api/queue/${encodeURIComponent(queue)}?n=60`);
  state.items = data.items;
  state.source = data.source;
  state.sel = 0;
  render();
  const c = data.labels.by_label;
  status(`${data.items.length} photos · order from ${data.source || "nothing yet"} · labels: keep ${c.keep || 0}, delete ${c.delete || 0}`);
}

async function label(value) {
  const it = state.items[state.sel];
  if (!it) return;
  const r = await api("/api/label", { sha256: it.sha256, label: value });
  state.undo.push({ index: state.sel, sha256: it.sha256, previous: r.previous });
  it.label = value;
  render();
  select(state.sel + 1);
  status(`labelled ${it.name} ${value} (u to undo)`);
}

async function undo() {
  const last = state.undo.pop();
  if (!last) { status("nothing to undo"); return; }
  await api("/api/label", { sha256: last.sha256, label: last.previous });
  const it = state.items.find((x) => x.sha256 === last.sha256);
  if (it) it.label = last.previous;
  render();
  select(last.index);
  status("undone");
}

function openLarge() {
  const it = state.items[state.sel];
  if (!it) return;
  $("#large img").src = "/large/" + encodeURIComponent(it.sha256);
  $("#large-caption").textContent = `${it.path} · ${score(it.score)}` + (it.label ? ` · ${it.label}` : "");
  $("#large").classList.add("open");
}

function columns() {
  const tiles = [...document.querySelectorAll(".tile")];
  if (tiles.length < 2) return 1;
  const top = tiles[0].offsetTop;
  const n = tiles.findIndex((t) => t.offsetTop !== top);
  return n === -1 ? tiles.length : n;
}

async function showMetrics() {
  document.querySelectorAll("header button[data-queue], header button[data-tab]").forEach((b) => b.classList.toggle("on", b.dataset.tab === "metrics"));
  $("#review").style.display = "none";
  const m = $("#metrics");
  m.style.display = "block";
  // Server-built markup (escaped there), under this page's CSP; no value from the client goes in.
  m.innerHTML = (await api("/api/metrics")).html;
  state.queue = "metrics";
  status("metrics");
}

async function retrain() {
  status("retraining…");
  await api("/api/retrain", {});
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    const s = await api("/api/retrain");
    if (!s.running) {
      status(s.error ? "retrain: " + s.error : "retrained: " + s.note);
      if (state.queue === "metrics") showMetrics(); else load(state.queue);
      return;
    }
  }
}

async function trashDeletes() {
  const { count } = await api("/api/trash");
  if (!count) { status("no photos are marked delete"); return; }
  if (!confirm(`Move the ${count} photos marked delete to the Trash? (imgrank trash --undo puts them back)`)) return;
  const r = await api("/api/trash", { count });
  if (state.queue !== "metrics") await load(state.queue);
  status(`moved ${r.moved} photos to the Trash` + (r.failed.length ? `; ${r.failed.length} could not be moved` : ""));
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || state.queue === "metrics") return;
  const run = (p) => p.catch((err) => status(err.message));
  const key = e.key;
  if (key === "k") run(label("keep"));
  else if (key === "d") run(label("delete"));
  else if (key === "u") run(undo());
  else if (key === "ArrowRight") select(state.sel + 1);
  else if (key === "ArrowLeft") select(state.sel - 1);
  else if (key === "ArrowDown") select(state.sel + columns());
  else if (key === "ArrowUp") select(state.sel - columns());
  else if (key === " ") { if ($("#large").classList.contains("open")) $("#large").classList.remove("open"); else openLarge(); }
  else if (key === "Escape") $("#large").classList.remove("open");
  else return;
  e.preventDefault();
});
$("#large").addEventListener("click", () => $("#large").classList.remove("open"));
document.querySelectorAll("header button[data-queue]").forEach((b) => b.addEventListener("click", () => load(b.dataset.queue).catch((e) => status(e.message))));
$("header button[data-tab=metrics]").addEventListener("click", () => showMetrics().catch((e) => status(e.message)));
$("#retrain").addEventListener("click", () => retrain().catch((e) => status(e.message)));
$("#trash").addEventListener("click", () => trashDeletes().catch((e) => status(e.message)));
load("least-wanted").catch((e) => status(e.message));

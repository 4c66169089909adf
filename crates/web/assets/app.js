// ebpf-profiler UI. Vanilla JS, no dependencies.
//
// The whole state lives in the URL query (range, filters, search, zoom,
// view, baseline), so every view can be bookmarked, and a headless browser
// pointed at a URL renders exactly that view. The flame graph is drawn
// with absolutely positioned DOM boxes (an icicle: root on top): DOM keeps
// text selectable, hover/click trivial and the result inspectable, and
// boxes narrower than half a pixel are not drawn, which bounds the count.
"use strict";

const FILTERS = ["host", "container", "process", "pid", "thread", "frame_type"];
const PRESETS = { "5m": 300e3, "15m": 900e3, "1h": 3600e3, "6h": 6 * 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
const ROW = 18;

const $ = (id) => document.getElementById(id);

let state = {};
let flameData = null;
let diffData = null;
let topData = null;
let topSort = "self";

// ---------- state <-> URL ----------

function readState() {
  const q = new URLSearchParams(location.search);
  const s = {
    view: q.get("view") === "diff" ? "diff" : "flame",
    range: q.get("range") || "",
    from: num(q.get("from")),
    to: num(q.get("to")),
    a_from: num(q.get("a_from")),
    a_to: num(q.get("a_to")),
    search: q.get("search") || "",
    zoom: q.get("zoom") ? q.get("zoom").split(";") : [],
    filters: {},
  };
  for (const f of FILTERS) {
    const v = q.get(f);
    if (v) s.filters[f] = v;
  }
  if (!(s.from && s.to && s.from < s.to)) {
    if (!PRESETS[s.range]) s.range = "1h";
    s.to = Date.now();
    s.from = s.to - PRESETS[s.range];
  } else if (!s.range) {
    s.range = "custom";
  }
  if (!(s.a_from && s.a_to && s.a_from < s.a_to)) {
    s.a_to = s.from;
    s.a_from = s.from - (s.to - s.from);
  }
  return s;
}

function num(v) {
  const n = Number(v);
  return v !== null && v !== "" && Number.isFinite(n) ? Math.round(n) : 0;
}

function stateQuery(s, withUi) {
  const q = new URLSearchParams();
  if (withUi && s.view !== "flame") q.set("view", s.view);
  if (withUi && s.range !== "custom") {
    q.set("range", s.range);
  } else {
    q.set("from", s.from);
    q.set("to", s.to);
  }
  for (const f of FILTERS) if (s.filters[f]) q.set(f, s.filters[f]);
  if (withUi) {
    if (s.search) q.set("search", s.search);
    if (s.zoom.length) q.set("zoom", s.zoom.join(";"));
    if (s.view === "diff") {
      q.set("a_from", s.a_from);
      q.set("a_to", s.a_to);
    }
  }
  return q;
}

// Query string for the API: always absolute times.
function apiQuery(s, extra) {
  const q = new URLSearchParams();
  q.set("from", s.from);
  q.set("to", s.to);
  for (const f of FILTERS) if (s.filters[f]) q.set(f, s.filters[f]);
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  return q.toString();
}

function pushState(replace) {
  const url = "?" + stateQuery(state, true).toString();
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
}

// ---------- helpers ----------

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtCount(n) {
  return n.toLocaleString("en-US");
}

function pct(n, total) {
  return total ? ((100 * n) / total).toFixed(2) + "%" : "–";
}

function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 19);
}

function fromInput(v) {
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? t : 0;
}

function fmtTime(ms) {
  return localInput(ms).replace("T", " ");
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg;
  e.hidden = !msg;
}

function hash(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return (h >>> 0) / 4294967295;
}

// Base hue/saturation per class, lightness varied by name so that
// neighbouring frames stay apart.
const PALETTE = {
  kernel: [28, 85, 55],
  native: [6, 72, 60],
  interpreted: [150, 48, 50],
  error: [220, 8, 66],
};

function colorOf(node) {
  const [h, s, l] = PALETTE[node.k] || PALETTE.native;
  const r = hash(node.n);
  return `hsl(${h + Math.round(r * 14 - 7)}, ${s}%, ${l + Math.round(r * 16)}%)`;
}

function matcher(search) {
  if (!search) return null;
  const m = /^\/(.+)\/([a-z]*)$/.exec(search);
  if (m) {
    try {
      const re = new RegExp(m[1], m[2].includes("i") ? m[2] : m[2] + "i");
      return (name) => re.test(name);
    } catch (e) {
      showError("Invalid regular expression: " + e.message);
      return () => false;
    }
  }
  const needle = search.toLowerCase();
  return (name) => name.toLowerCase().includes(needle);
}

// ---------- controls ----------

function fillSelect(select, values, current) {
  const keep = select.value || current || "";
  select.textContent = "";
  select.appendChild(el("option", { value: "" }, "any"));
  const seen = new Set();
  for (const v of values) {
    const [value, label] = Array.isArray(v) ? v : [v, v];
    seen.add(String(value));
    select.appendChild(el("option", { value: String(value) }, label));
  }
  if (keep && !seen.has(keep)) select.appendChild(el("option", { value: keep }, keep + " (no data)"));
  select.value = keep;
}

function syncControls() {
  $("range").value = state.range;
  $("from").value = localInput(state.from);
  $("to").value = localInput(state.to);
  $("a-from").value = localInput(state.a_from);
  $("a-to").value = localInput(state.a_to);
  $("search").value = state.search;
  for (const f of FILTERS) {
    const sel = $("f-" + f);
    if (state.filters[f] && ![...sel.options].some((o) => o.value === state.filters[f])) {
      sel.appendChild(el("option", { value: state.filters[f] }, state.filters[f]));
    }
    sel.value = state.filters[f] || "";
  }
  $("pprof").href = "/api/pprof?" + apiQuery(state);
  for (const v of ["flame", "diff"]) {
    $("tab-" + v).classList.toggle("active", state.view === v);
    $("view-" + v).hidden = state.view !== v;
    const s = { ...state, view: v, zoom: [] };
    $("tab-" + v).href = "?" + stateQuery(s, true).toString();
  }
}

function readControls() {
  const s = { ...state, filters: {} };
  s.range = $("range").value;
  if (s.range === "custom") {
    s.from = fromInput($("from").value);
    s.to = fromInput($("to").value);
  } else {
    s.to = Date.now();
    s.from = s.to - PRESETS[s.range];
  }
  for (const f of FILTERS) {
    const v = $("f-" + f).value;
    if (v) s.filters[f] = v;
  }
  s.zoom = [];
  return s;
}

async function loadFilters() {
  const k = await getJSON(`/api/filters?from=${state.from}&to=${state.to}`);
  fillSelect($("f-host"), k.hosts, state.filters.host);
  fillSelect($("f-container"), k.containers, state.filters.container);
  fillSelect($("f-process"), k.processes, state.filters.process);
  fillSelect($("f-pid"), k.pids.map((p) => [p.pid, `${p.pid} (${p.name})`]), state.filters.pid);
  fillSelect($("f-thread"), k.threads, state.filters.thread);
  fillSelect($("f-frame_type"), k.frame_types, state.filters.frame_type);
  return k;
}

// ---------- flame graph ----------

// Finds the zoomed node: the path is a list of names from the root.
function zoomChain(root, path) {
  const chain = [root];
  let node = root;
  for (const name of path) {
    const next = (node.c || []).find((c) => c.n === name);
    if (!next) break;
    chain.push(next);
    node = next;
  }
  return chain;
}

// Draws `root` into `box`. opts: value(node), color(node), label(node),
// zoom (names), match (fn or null), onZoom(path).
function drawFlame(box, root, opts) {
  box.textContent = "";
  const width = box.clientWidth || 1200;
  const chain = zoomChain(root, opts.zoom);
  const focus = chain[chain.length - 1];
  const focusValue = opts.value(focus);
  const frag = document.createDocumentFragment();
  let maxDepth = 0;
  let drawn = 0;

  function add(node, x, w, depth, path, extraClass) {
    const d = el("div", { class: `fr k-${node.k}${extraClass}` });
    d.style.left = (100 * x).toFixed(4) + "%";
    d.style.width = (100 * w).toFixed(4) + "%";
    d.style.top = depth * ROW + "px";
    if (depth === 0) d.classList.add("root");
    else d.style.background = opts.color(node);
    d.dataset.path = path.join(";");
    d.dataset.n = node.n;
    d.title = opts.label(node);
    // Like classic flame graphs, no label where not even "ab…" fits.
    if (w * width >= 22) d.textContent = node.n;
    if (opts.match && depth > 0 && opts.match(node.n)) d.classList.add("match");
    frag.appendChild(d);
    drawn++;
    if (depth > maxDepth) maxDepth = depth;
  }

  for (let i = 0; i < chain.length - 1; i++) {
    add(chain[i], 0, 1, i, opts.zoom.slice(0, i), " ancestor");
  }
  const minW = 0.5 / width;
  (function walk(node, x, w, depth, path) {
    add(node, x, w, depth, path, "");
    const v = opts.value(node);
    if (!v) return;
    let cx = x;
    for (const c of node.c || []) {
      const cw = (opts.value(c) / v) * w;
      if (cw >= minW) walk(c, cx, cw, depth + 1, path.concat(c.n));
      cx += cw;
    }
  })(focus, 0, 1, chain.length - 1, opts.zoom.slice(0, chain.length - 1));

  box.appendChild(frag);
  box.style.height = (maxDepth + 1) * ROW + 2 + "px";
  box.classList.toggle("searching", !!opts.match);
  box.dataset.frames = String(drawn);
  box.onclick = (ev) => {
    const t = ev.target.closest(".fr");
    if (t) opts.onZoom(t.dataset.path ? t.dataset.path.split(";") : []);
  };
  box.onmouseover = (ev) => {
    const t = ev.target.closest(".fr");
    if (t && opts.hover) opts.hover.textContent = t.title;
  };
  return focusValue;
}

// Samples under matching frames (outermost match only) below `node`.
function matchedValue(node, match, value) {
  if (match(node.n)) return value(node);
  let sum = 0;
  for (const c of node.c || []) sum += matchedValue(c, match, value);
  return sum;
}

function renderFlame() {
  const box = $("flame");
  if (!flameData) return;
  if (!flameData.total) {
    box.textContent = "";
    box.style.height = "";
    box.appendChild(el("div", { class: "empty" }, "No samples in this range with these filters."));
    $("match-info").textContent = "";
    return;
  }
  const total = flameData.total;
  const match = matcher(state.search);
  const v = (n) => n.v;
  drawFlame(box, flameData.root, {
    value: v,
    color: colorOf,
    label: (n) => `${n.n} [${n.k}] — ${fmtCount(n.v)} samples (${pct(n.v, total)}), self ${fmtCount(n.s)} (${pct(n.s, total)})`,
    zoom: state.zoom,
    match,
    hover: $("hover"),
    onZoom: (path) => {
      state.zoom = path;
      pushState(false);
      renderFlame();
    },
  });
  if (match) {
    const m = matchedValue(flameData.root, match, v);
    $("match-info").textContent = `Matched: ${fmtCount(m)} samples (${pct(m, total)})`;
    $("match-info").dataset.matched = String(m);
  } else {
    $("match-info").textContent = "";
    delete $("match-info").dataset.matched;
  }
  $("reset-zoom").disabled = state.zoom.length === 0;
}

function renderTop() {
  const body = $("top").tBodies[0];
  body.textContent = "";
  if (!topData) return;
  const rows = [...topData.functions];
  if (topSort === "total") rows.sort((a, b) => b.total - a.total || b.self - a.self);
  else if (topSort === "name") rows.sort((a, b) => a.name.localeCompare(b.name));
  else rows.sort((a, b) => b.self - a.self || b.total - a.total);
  for (const th of $("top").tHead.rows[0].cells) th.classList.toggle("sorted", th.dataset.sort === topSort);
  const total = topData.total;
  for (const f of rows) {
    const tr = el("tr");
    const name = el("td", { class: "fn", title: "search for this function" }, f.name);
    name.onclick = () => {
      state.search = f.name;
      $("search").value = f.name;
      pushState(true);
      renderFlame();
    };
    tr.appendChild(name);
    const kind = el("td");
    kind.appendChild(el("span", { class: `kind k-${f.kind}` }, f.kind));
    tr.appendChild(kind);
    tr.appendChild(el("td", { class: "num" }, fmtCount(f.self)));
    tr.appendChild(el("td", { class: "num" }, pct(f.self, total)));
    tr.appendChild(el("td", { class: "num" }, fmtCount(f.total)));
    tr.appendChild(el("td", { class: "num" }, pct(f.total, total)));
    body.appendChild(tr);
  }
}

// ---------- diff ----------

function renderDiff() {
  const box = $("diff-flame");
  if (!diffData) return;
  const at = diffData.a_total;
  const bt = diffData.b_total;
  if (!at && !bt) {
    box.textContent = "";
    box.appendChild(el("div", { class: "empty" }, "No samples in either range."));
    return;
  }
  const share = (c, t) => (t ? c / t : 0);
  const value = (n) => (share(n.v, bt) + share(n.a, at)) / 2;
  const delta = (n) => share(n.v, bt) - share(n.a, at);
  let maxDelta = 1e-9;
  (function scan(n, depth) {
    if (depth > 0) maxDelta = Math.max(maxDelta, Math.abs(delta(n)));
    for (const c of n.c || []) scan(c, depth + 1);
  })(diffData.root, 0);
  const color = (n) => {
    const d = delta(n);
    const t = Math.min(1, Math.abs(d) / maxDelta);
    if (t < 0.01) return "hsl(0, 0%, 93%)";
    const light = Math.round(94 - 44 * t);
    return d >= 0 ? `hsl(0, 78%, ${light}%)` : `hsl(218, 78%, ${light}%)`;
  };
  const p = (x) => (100 * x).toFixed(2) + "%";
  drawFlame(box, diffData.root, {
    value,
    color,
    label: (n) =>
      `${n.n} [${n.k}] — A ${fmtCount(n.a)} (${p(share(n.a, at))}), B ${fmtCount(n.v)} (${p(share(n.v, bt))}), Δ ${(delta(n) >= 0 ? "+" : "") + p(delta(n))}`,
    zoom: state.zoom,
    match: matcher(state.search),
    hover: $("diff-hover"),
    onZoom: (path) => {
      state.zoom = path;
      pushState(false);
      renderDiff();
    },
  });
  const body = $("diff-top").tBodies[0];
  body.textContent = "";
  const sign = (x) => (x > 0 ? "pos" : x < 0 ? "neg" : "");
  const signed = (x) => (x > 0 ? "+" : "") + p(x);
  for (const f of diffData.functions.slice(0, 50)) {
    const tr = el("tr");
    tr.appendChild(el("td", { class: "fn" }, f.name));
    const kind = el("td");
    kind.appendChild(el("span", { class: `kind k-${f.kind}` }, f.kind));
    tr.appendChild(kind);
    tr.appendChild(el("td", { class: "num" }, p(share(f.a_total, at))));
    tr.appendChild(el("td", { class: "num" }, p(share(f.b_total, bt))));
    tr.appendChild(el("td", { class: "num " + sign(f.total_delta) }, signed(f.total_delta)));
    tr.appendChild(el("td", { class: "num" }, p(share(f.a_self, at))));
    tr.appendChild(el("td", { class: "num" }, p(share(f.b_self, bt))));
    tr.appendChild(el("td", { class: "num " + sign(f.self_delta) }, signed(f.self_delta)));
    body.appendChild(tr);
  }
}

// ---------- loading ----------

let loadSeq = 0;

async function load() {
  const seq = ++loadSeq;
  document.body.dataset.state = "loading";
  $("summary").textContent = "Loading…";
  showError("");
  syncControls();
  try {
    const known = await loadFilters();
    if (seq !== loadSeq) return;
    let total = 0;
    if (state.view === "diff") {
      diffData = await getJSON("/api/diff?" + apiQuery(state, { a_from: state.a_from, a_to: state.a_to }));
      if (seq !== loadSeq) return;
      renderDiff();
      total = diffData.b_total;
      $("summary").textContent = `A: ${fmtCount(diffData.a_total)} samples, B: ${fmtCount(diffData.b_total)} samples`;
    } else {
      const [fg, top] = await Promise.all([
        getJSON("/api/flamegraph?" + apiQuery(state)),
        getJSON("/api/top?" + apiQuery(state, { n: 200 })),
      ]);
      if (seq !== loadSeq) return;
      flameData = fg;
      topData = top;
      renderFlame();
      renderTop();
      total = fg.total;
      $("summary").textContent = `${fmtCount(fg.total)} samples, ${fmtTime(state.from)} – ${fmtTime(state.to)}`;
    }
    if (!total && known.bounds) {
      const link = el("a", { href: "#" }, "show the last hour of stored data");
      link.onclick = (ev) => {
        ev.preventDefault();
        state = { ...state, range: "custom", to: known.bounds.to, from: Math.max(known.bounds.from, known.bounds.to - 3600e3), zoom: [] };
        pushState(false);
        load();
      };
      const box = state.view === "diff" ? $("diff-flame") : $("flame");
      const hint = el("div", { class: "empty" }, `Stored data spans ${fmtTime(known.bounds.from)} – ${fmtTime(known.bounds.to)}: `);
      hint.appendChild(link);
      box.appendChild(hint);
    }
    document.body.dataset.total = String(total);
    document.body.dataset.state = "ready";
  } catch (e) {
    if (seq !== loadSeq) return;
    showError(String(e.message || e));
    document.body.dataset.state = "error";
  }
}

function init() {
  state = readState();
  $("controls").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state = readControls();
    if (!(state.from < state.to)) {
      showError("The range start must be before its end.");
      return;
    }
    pushState(false);
    load();
  });
  $("range").addEventListener("change", () => {
    if ($("range").value !== "custom") $("controls").requestSubmit();
  });
  for (const id of ["from", "to"]) {
    $(id).addEventListener("change", () => ($("range").value = "custom"));
  }
  for (const f of FILTERS) {
    $("f-" + f).addEventListener("change", () => $("controls").requestSubmit());
  }
  let timer = 0;
  $("search").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.search = $("search").value.trim();
      showError("");
      pushState(true);
      if (state.view === "diff") renderDiff();
      else renderFlame();
    }, 150);
  });
  $("reset-zoom").addEventListener("click", () => {
    state.zoom = [];
    pushState(false);
    renderFlame();
  });
  $("compare").addEventListener("click", () => {
    state.a_from = fromInput($("a-from").value);
    state.a_to = fromInput($("a-to").value);
    if (!(state.a_from < state.a_to)) {
      showError("The baseline start must be before its end.");
      return;
    }
    pushState(false);
    load();
  });
  for (const v of ["flame", "diff"]) {
    $("tab-" + v).addEventListener("click", (ev) => {
      ev.preventDefault();
      if (state.view === v) return;
      state.view = v;
      state.zoom = [];
      pushState(false);
      load();
    });
  }
  for (const th of $("top").tHead.rows[0].cells) {
    if (th.dataset.sort) th.addEventListener("click", () => {
      topSort = th.dataset.sort;
      renderTop();
    });
  }
  window.addEventListener("popstate", () => {
    state = readState();
    load();
  });
  let resize = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => (state.view === "diff" ? renderDiff() : renderFlame()), 100);
  });
  load();
}

init();

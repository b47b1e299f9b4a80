/* Shared by every page: the API key, same-origin API calls, navigation, the method picker.
   The key lives in this browser only (sessionStorage, or localStorage with "remember") and is
   sent only in the Authorization header of requests to this page's own origin. */
"use strict";
const PAGE = JSON.parse(document.getElementById("page-data").textContent);
const KEY_NAME = "softlabels.key";
const params = new URLSearchParams(location.search);

const Key = {
  get() { return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || ""; },
  set(value, remember) {
    this.clear();
    (remember ? localStorage : sessionStorage).setItem(KEY_NAME, value);
  },
  clear() { sessionStorage.removeItem(KEY_NAME); localStorage.removeItem(KEY_NAME); },
};

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status; this.body = body || {};
  }
}

function sameOrigin(path) {
  // Only paths on this origin: never a full URL, never "//host".
  if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) throw new Error(`refusing to call ${path}`);
  return path;
}

async function api(path, opts) {
  opts = opts || {};
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  const key = Key.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body = opts.body;
  if (opts.json !== undefined) { body = JSON.stringify(opts.json); headers["Content-Type"] = "application/json"; }
  const r = await fetch(sameOrigin(path), { method: opts.method || "GET", headers, body, credentials: "same-origin", cache: "no-store" });
  if (opts.raw) { if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null)); return r; }
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
function fmt(v, digits) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  if (v !== 0 && Math.abs(v) < 0.01) return v.toPrecision(2);
  return v.toFixed(digits === undefined ? 3 : digits);
}
const when = (iso) => iso ? new Date(iso).toLocaleString() : "–";

function flash(message, ok) {
  const f = $("#flash");
  f.textContent = message; f.classList.toggle("ok", !!ok); f.classList.remove("hidden");
}
function clearFlash() { $("#flash").classList.add("hidden"); }
function showError(err) {
  if (err instanceof ApiError && err.status === 401) flash("This page needs an API key: paste one above (it stays in this browser).");
  else if (err instanceof ApiError && err.status === 503 && err.body.error === "fit_pending") flash(err.message + " The page retries on its own.");
  else flash(err instanceof ApiError ? `${err.status} ${err.body.error || ""}: ${err.message}` : String(err));
}

/* --- navigation and the method picker (every view follows the chosen method) --- */
const PROJECT = params.get("project");
// The method lists depend on the project's task type (single choice, multi-label, ordinal),
// read from the API before the page is built (useTaskType); "single" until then.
let TASK_TYPE = "single", METHODS = PAGE.methods.single, ALL_METHODS = [], WORKER_METHODS = [], METHOD = "normalized";
function useTaskType(taskType) {
  TASK_TYPE = PAGE.methods[taskType] ? taskType : "single";
  METHODS = PAGE.methods[TASK_TYPE];
  ALL_METHODS = [...METHODS.count, ...METHODS.worker].map((m) => m.name);
  WORKER_METHODS = METHODS.worker.map((m) => m.name);
  const m = params.get("method") || localStorage.getItem("softlabels.method") || "normalized";
  METHOD = ALL_METHODS.includes(m) ? m : "normalized";
}
useTaskType("single");
function link(page, extra) {
  const q = new URLSearchParams();
  if (PROJECT) q.set("project", PROJECT);
  q.set("method", METHOD);
  for (const [k, v] of Object.entries(extra || {})) if (v !== null && v !== undefined) q.set(k, v);
  return `/ui/${page}?${q}`;
}
function setupNav() {
  if (PROJECT) {
    $("#project-nav").classList.remove("hidden");
    for (const a of $$("[data-nav]")) {
      a.href = link(a.dataset.nav);
      if (a.dataset.nav === PAGE.page || (PAGE.page === "job" && a.dataset.nav === "jobs") || (PAGE.page === "item" && a.dataset.nav === "items") || (PAGE.page === "worker" && a.dataset.nav === "workers")) a.classList.add("active");
    }
    const sel = $("#method-select");
    for (const [group, list] of [["count methods", METHODS.count], ["worker models", METHODS.worker]]) {
      const og = h("optgroup", { label: group });
      for (const m of list) og.append(h("option", { value: m.name, title: m.summary, selected: m.name === METHOD }, m.name));
      sel.append(og);
    }
    $("#method-picker").classList.remove("hidden");
    sel.addEventListener("change", () => {
      localStorage.setItem("softlabels.method", sel.value);
      const q = new URLSearchParams(location.search); q.set("method", sel.value);
      location.search = q.toString();
    });
  }
}

/* --- the key --- */
const Caller = { admin: false, train: true };
async function probeAccess() {
  // What the key can do decides what is shown: admin controls only for admin keys, training
  // only for keys with the train scope on this project.
  try { await api("/v1/keys"); Caller.admin = true; } catch (e) { Caller.admin = false; }
  if (Caller.admin && !Key.get()) {  // the server runs with --no-auth (loopback only)
    $("#key-form").classList.add("hidden");
    $("#key-state").classList.remove("hidden");
    $("#key-desc").textContent = "no key needed (auth off)";
    $("#key-forget").classList.add("hidden");
  }
  for (const e of $$(".admin-only")) e.classList.toggle("hidden", !Caller.admin);
  if (PROJECT) {
    try { await api(`/v1/projects/${encodeURIComponent(PROJECT)}/training-jobs?limit=1`); Caller.train = true; }
    catch (e) { Caller.train = !(e instanceof ApiError && (e.status === 403 || e.status === 404)); }
    for (const e of $$('[data-needs="train"]')) e.classList.toggle("hidden", !Caller.train);
  }
}
function setupKey() {
  const key = Key.get();
  $("#key-form").classList.toggle("hidden", !!key);
  $("#key-state").classList.toggle("hidden", !key);
  $("#key-desc").textContent = key ? `key ${key.slice(0, 6)}…` : "";
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("#key-input").value.trim();
    if (!v) return;
    Key.set(v, $("#key-remember").checked);
    $("#key-input").value = "";
    location.reload();
  });
  $("#key-forget").addEventListener("click", () => { Key.clear(); location.reload(); });
}

function showFieldErrors(form, err) {
  for (const e of $$(".field-error", form)) e.remove();
  for (const e of $$(".invalid", form)) e.classList.remove("invalid");
  const box = $("[data-errors]", form);
  if (!err) { box.textContent = ""; return; }
  const rows = (err.body && err.body.errors) || [];
  box.textContent = err.message + (rows.length ? "\n" + rows.map((r) => `• ${r.field || "body"}: ${r.reason}`).join("\n") : "");
  for (const r of rows) {
    if (!r.field) continue;
    const input = $$("[name]", form).find((i) => r.field === i.name || r.field.startsWith(i.name + "."));
    if (input) {
      input.classList.add("invalid");
      input.closest("label").append(h("span", { class: "field-error" }, r.reason));
    }
  }
}

async function download(path, fallbackName) {
  const r = await api(path, { raw: true });
  const cd = r.headers.get("Content-Disposition") || "";
  const m = /filename="([^"]+)"/.exec(cd);
  const url = URL.createObjectURL(await r.blob());
  const a = h("a", { href: url, download: m ? m[1] : fallbackName });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

const P = () => `/v1/projects/${encodeURIComponent(PROJECT)}`;
const mq = (extra) => { const q = new URLSearchParams(Object.assign({ method: METHOD }, extra || {})); return q.toString(); };

document.addEventListener("DOMContentLoaded", async () => {
  setupKey();
  if (PROJECT) {
    // Without a key (or for a project it cannot see) this fails: the page says so when it runs.
    try { useTaskType((await api(P())).task_type); } catch (e) { /* shown by the page */ }
  }
  setupNav();
  await probeAccess();
  const run = (window.Pages || {})[PAGE.page || "projects"];
  if (run) {
    try { await run(); } catch (e) { showError(e); }
  }
  document.body.dataset.ready = "1";
});

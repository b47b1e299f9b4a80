/* One function per page; app.js runs the one named by the page. */
"use strict";
const TERMINAL = ["succeeded", "failed", "cancelled"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function withFitRetry(fn, tries) {
  // Worker-model methods answer 503 fit_pending while the worker fits a project, and
  // fits_busy while this API process already runs its share of in-request fits (a page that
  // shows every method asks for them all at once): wait and retry.
  for (let i = 0; ; i++) {
    try { return await fn(); } catch (e) {
      const code = e instanceof ApiError && e.status === 503 ? e.body.error : null;
      if (!(code === "fit_pending" || code === "fits_busy") || i >= (tries || 20)) throw e;
      if (code === "fit_pending") showError(e);
      await sleep(code === "fits_busy" ? 500 : 2000);
    }
  }
}
function card(k, v) { return h("div", { class: "card" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k)); }
function itemLink(id) { return h("a", { href: link("item", { id }) }, id); }

const Pages = {};
window.Pages = Pages;

Pages.projects = async () => {
  $("#open-project").addEventListener("submit", (ev) => { ev.preventDefault(); location.href = `/ui/project?project=${encodeURIComponent(ev.target.name.value)}`; });
  $("#create-project-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const body = { name: f.name.value.trim(), classes: f.classes.value.split(",").map((s) => s.trim()).filter(Boolean) };
    if (f.description.value) body.description = f.description.value;
    try { await api("/v1/projects", { method: "POST", json: body }); location.reload(); }
    catch (e) { showFieldErrors(f, e); }
  });
  let data;
  try { data = await api("/v1/projects"); } catch (e) {
    if (e instanceof ApiError && e.status === 403) { $("#open-project").classList.remove("hidden"); $("#projects-table").classList.add("hidden"); return; }
    throw e;
  }
  const tb = $("#projects-table tbody");
  tb.replaceChildren(...data.projects.map((p) => h("tr", {},
    h("td", {}, h("a", { href: `/ui/project?project=${encodeURIComponent(p.name)}` }, p.name)),
    h("td", {}, p.classes.join(", ")), h("td", {}, p.description || ""), h("td", { class: "num" }, p.votes_version), h("td", {}, when(p.created_at)))));
  if (!data.projects.length) tb.append(h("tr", {}, h("td", { colspan: 5 }, "No projects yet. Run `softlabels demo`, or create one.")));
};

Pages.project = async () => {
  const [proj, stats] = await Promise.all([api(P()), withFitRetry(() => api(`${P()}/stats?${mq()}`))]);
  $("#title").textContent = `${proj.name}`;
  $("#description").textContent = `${proj.description || ""}  Classes: ${proj.classes.join(", ")}`;
  $("#stat-cards").replaceChildren(
    card("items", stats.items), card("items with votes", stats.items_with_votes), card("votes", stats.votes), card("workers", stats.workers),
    card("Krippendorff's alpha", fmt(stats.krippendorff_alpha)), card("Fleiss' kappa", fmt(stats.fleiss_kappa)),
    card(`mean entropy (${stats.method})`, fmt(stats.mean_normalized_entropy)));
  $("#stale-note").classList.toggle("hidden", !stats.stale);
  Charts.bars($("#histogram"), stats.votes_per_item.map((b) => b.n_votes), stats.votes_per_item.map((b) => b.items), { xlabel: "votes per item" });
  const top = await withFitRetry(() => api(`${P()}/items?${mq({ sort: "entropy", order: "desc", limit: 10 })}`));
  $("#uncertain-table tbody").replaceChildren(...top.items.map((r) => h("tr", {}, h("td", {}, itemLink(r.item)), h("td", { class: "num" }, r.n_votes), h("td", {}, Charts.mini(r.distribution, top.classes)), h("td", { class: "num" }, fmt(r.entropy)))));
};

Pages.items = async () => {
  const state = { sort: params.get("sort") || "entropy", order: params.get("order") || "desc", cursors: [null], page: 0 };
  $("#item-search").addEventListener("submit", (ev) => { ev.preventDefault(); const id = ev.target.id.value; if (id) location.href = link("item", { id }); });
  const load = async () => {
    const q = { sort: state.sort, order: state.order, limit: $("#page-size").value, min_votes: $("#min-votes").value || 0 };
    const cur = state.cursors[state.page];
    if (cur) q.cursor = cur;
    const data = await withFitRetry(() => api(`${P()}/items?${mq(q)}`));
    $("#total").textContent = `${data.total} items · ${data.method}${data.stale ? " (from an earlier fit; a newer one is being computed)" : ""}`;
    $("#legend").replaceChildren(...data.classes.map((c, i) => { const s = h("span", {}, h("i", {}), c); s.firstChild.style.background = Charts.color(i); return s; }));
    $("#items-table tbody").replaceChildren(...data.items.map((r) => h("tr", {},
      h("td", {}, itemLink(r.item)), h("td", { class: "num" }, r.n_votes), h("td", {}, Charts.mini(r.distribution, data.classes)),
      h("td", {}, r.gold || ""), h("td", { class: "num" }, fmt(r.entropy)), h("td", { class: "num" }, fmt(r.margin)), h("td", { class: "num" }, fmt(r.gold_disagreement)))));
    state.cursors[state.page + 1] = data.next_cursor;
    $("#next-page").disabled = !data.next_cursor;
    $("#prev-page").disabled = state.page === 0;
    $("#page-info").textContent = `page ${state.page + 1}`;
    for (const th of $$("#items-table th[data-sort]")) {
      th.classList.toggle("sorted-asc", th.dataset.sort === state.sort && state.order === "asc");
      th.classList.toggle("sorted-desc", th.dataset.sort === state.sort && state.order === "desc");
    }
    document.body.dataset.itemsLoaded = `${state.sort}:${state.order}:${state.page}`;
  };
  const restart = () => { state.cursors = [null]; state.page = 0; return load().catch(showError); };
  for (const th of $$("#items-table th[data-sort]")) th.addEventListener("click", () => {
    if (state.sort === th.dataset.sort) state.order = state.order === "asc" ? "desc" : "asc";
    else { state.sort = th.dataset.sort; state.order = ["item", "margin"].includes(state.sort) ? "asc" : "desc"; }
    restart();
  });
  $("#next-page").addEventListener("click", () => { state.page++; load().catch(showError); });
  $("#prev-page").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); load().catch(showError); });
  $("#min-votes").addEventListener("change", restart);
  $("#page-size").addEventListener("change", restart);
  await load();
};

// A multi-label vote is the list of classes ticked (empty: none apply).
const voteLabel = (label) => (Array.isArray(label) ? label.join(", ") || "(none apply)" : label);

Pages.item = async () => {
  const id = params.get("id");
  $("#item-id").textContent = id;
  const it = await api(`${P()}/items/${encodeURIComponent(id)}`);
  $("#item-cards").replaceChildren(card("votes", it.n_votes), card("gold", it.gold || "–"), card("counts", it.classes.map((c, i) => `${c} ${it.counts[i]}`).join(" · ")), card("created", when(it.created_at)));
  $("#votes-table tbody").replaceChildren(...it.votes.map((v) => h("tr", {}, h("td", {}, h("a", { href: link("worker", { id: v.worker }) }, v.worker)), h("td", {}, voteLabel(v.label)), h("td", {}, when(v.created_at)), h("td", {}, v.created_at === v.updated_at ? "" : when(v.updated_at)))));
  $("#meta").textContent = it.meta ? JSON.stringify(it.meta, null, 2) : "none";
  $("#features").textContent = it.features ? `[${it.features.map((x) => +x.toFixed(4)).join(", ")}]` : "none";
  // Multi-label: each class's probability that it applies (no sum to 1); ordinal: a
  // distribution over the levels with its mean, median and spread.
  const what = TASK_TYPE === "multi_label" ? "P(applies) per class" : "Distribution";
  const extra = TASK_TYPE === "ordinal" ? [h("th", {}, "mean · median · sd")] : [];
  $("#methods-table thead").replaceChildren(h("tr", {}, h("th", {}, "Method"), h("th", {}, what), ...extra, ...it.classes.map((c) => h("th", {}, c))));
  const tb = $("#methods-table tbody");
  const rows = ALL_METHODS.map((m) => { const tr = h("tr", { "data-method": m, class: m === METHOD ? "diff" : "" }, h("td", {}, m), h("td", {}, "…")); tb.append(tr); return tr; });
  await Promise.all(ALL_METHODS.map(async (m, i) => {
    try {
      const sl = await withFitRetry(() => api(`${P()}/items/${encodeURIComponent(id)}/soft-label?method=${encodeURIComponent(m)}`), 40);
      const summary = TASK_TYPE === "ordinal" ? [h("td", { class: "num" }, `${fmt(sl.mean, 2)} · ${fmt(sl.median, 2)} · ${fmt(sl.spread, 2)}`)] : [];
      rows[i].replaceChildren(h("td", {}, m + (sl.stale ? " (stale)" : "")), h("td", {}, Charts.mini(sl.probs, sl.classes)), ...summary, ...sl.classes.map((_, k) => h("td", { class: "num" }, sl.probs ? fmt(sl.probs[k]) : "–")));
    } catch (e) { rows[i].replaceChildren(h("td", {}, m), h("td", { colspan: it.classes.length + 1 + (TASK_TYPE === "ordinal") }, e.message)); }
  }));
};

const workerMethod = () => (WORKER_METHODS.includes(METHOD) ? METHOD : WORKER_METHODS[0] || "dawid-skene");

Pages.workers = async () => {
  const data = await withFitRetry(() => api(`${P()}/workers?method=${workerMethod()}`));
  $("#skill-note").textContent = `Method ${data.method}${WORKER_METHODS.includes(METHOD) ? "" : " (the chosen method has no worker model)"}: skill is ${data.skill}`;
  $("#spammer-rule").textContent = `Spammer: ${data.spammer_rule}.`;
  let key = "n_votes", desc = true;
  const render = () => {
    const rows = [...data.workers].sort((a, b) => { const x = a[key], y = b[key]; const c = x === y ? 0 : (x === null ? 1 : y === null ? -1 : (x < y ? -1 : 1)); return desc ? -c : c; });
    $("#workers-table tbody").replaceChildren(...rows.map((w) => h("tr", {},
      h("td", {}, h("a", { href: link("worker", { id: w.worker, method: data.method }) }, w.worker)), h("td", { class: "num" }, w.n_votes),
      h("td", { class: "num" }, fmt(w.agreement)), h("td", { class: "num" }, fmt(w.skill)), h("td", {}, w.spammer ? h("span", { class: "flag" }, "spammer") : ""))));
  };
  for (const th of $$("#workers-table th[data-key]")) th.addEventListener("click", () => { if (key === th.dataset.key) desc = !desc; else { key = th.dataset.key; desc = true; } render(); });
  render();
};

Pages.worker = async () => {
  const id = params.get("id");
  $("#worker-id").textContent = id;
  const w = await withFitRetry(() => api(`${P()}/workers/${encodeURIComponent(id)}?method=${workerMethod()}`));
  $("#worker-cards").replaceChildren(card("votes", w.n_votes), card("agreement", fmt(w.agreement)), card(`skill (${w.method})`, fmt(w.skill)), card("spammer", w.spammer ? "yes" : "no"));
  if (w.confusion === null) {  // multi-label: no K x K matrix, a sensitivity and a specificity per class
    $("#confusion-source").parentElement.firstChild.textContent = "Sensitivity per class: P(tick | it applies) ";
    $("#confusion-source").textContent = w.confusion_source === "model" ? `(${w.method} model)` : "(counted against the model's P > 0.5)";
    $("#class-accuracy").previousElementSibling.textContent = "Specificity per class: P(no tick | it does not apply)";
    $("#heatmap").previousElementSibling.classList.add("hidden");  // the matrix's row/column note
    Charts.bars($("#heatmap"), w.classes, w.sensitivity.map((v) => v ?? 0), { max: 1 });
    Charts.bars($("#class-accuracy"), w.classes, w.specificity.map((v) => v ?? 0), { max: 1, color: "#54a24b" });
    return;
  }
  $("#confusion-source").textContent = w.confusion_source === "model" ? `(${w.method} model)` : "(counted against the model's most probable class)";
  Charts.heatmap($("#heatmap"), w.confusion, w.classes, w.classes);
  Charts.bars($("#class-accuracy"), w.classes, w.class_accuracy, { max: 1, color: "#54a24b" });
};

Pages.routing = async () => {
  const f = $("#routing-form");
  const load = async () => {
    const q = { strategy: f.strategy.value, limit: f.limit.value || 50 };
    if (f.max_votes.value) q.max_votes = f.max_votes.value;
    if (f.worker.value) q.worker = f.worker.value;
    const data = await withFitRetry(() => api(`${P()}/items/next?${mq(q)}`));
    $("#routing-table tbody").replaceChildren(...data.items.map((r, i) => h("tr", {}, h("td", { class: "num" }, i + 1), h("td", {}, itemLink(r.item)), h("td", { class: "num" }, r.n_votes), h("td", { class: "num" }, fmt(r.uncertainty)))));
  };
  f.addEventListener("submit", (ev) => { ev.preventDefault(); load().catch(showError); });
  await load();
};

Pages.exports = async () => {
  const tb = $("#exports-table tbody");
  for (const m of ALL_METHODS) {
    tb.append(h("tr", {}, h("td", {}, m), ...["jsonl", "csv", "parquet"].map((fm) => h("td", {}, h("button", {
      type: "button", "data-export": `${m}:${fm}`,
      onclick: () => download(`${P()}/soft-labels?method=${encodeURIComponent(m)}&format=${fm}&min_votes=${$("#export-min-votes").value || 0}`, `${PROJECT}-${m}.${fm}`).catch(showError),
    }, `Download ${fm}`)))));
  }
};

Pages.keys = async () => {
  $("#not-admin").classList.toggle("hidden", Caller.admin);
  if (!Caller.admin) return;
  const load = async () => {
    const data = await api("/v1/keys");
    $("#keys-table tbody").replaceChildren(...data.keys.map((k) => h("tr", {}, h("td", {}, k.id), h("td", {}, k.label), h("td", {}, k.scopes.join(", ")),
      h("td", {}, Array.isArray(k.projects) ? k.projects.join(", ") : k.projects), h("td", {}, when(k.created_at)),
      h("td", {}, h("button", { type: "button", onclick: async () => { if (confirm(`Revoke key ${k.id} (${k.label})?`)) { await api(`/v1/keys/${k.id}`, { method: "DELETE" }).catch(showError); load(); } } }, "Revoke")))));
  };
  $("#key-create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const projects = f.projects.value.trim() === "*" ? "*" : f.projects.value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      const k = await api("/v1/keys", { method: "POST", json: { label: f.label.value, scopes: $$('input[name="scope"]:checked', f).map((i) => i.value), projects } });
      showFieldErrors(f, null);
      const box = $("#new-key");
      box.replaceChildren(`New key ${k.id} (${k.label}). Copy it now; it is not shown again: `, h("code", {}, k.key));
      box.classList.remove("hidden");
      load();
    } catch (e) { showFieldErrors(f, e); }
  });
  await load();
};

/* Training jobs: the list with live progress, the start form, one job's curves, comparison. */
"use strict";
const jobLink = (j) => h("a", { href: link("job", { id: j.id }) }, `#${j.id}`);
// Final figures are on the test split (metrics.test); jobs from before the three-way split had metrics.eval.
const finalMetrics = (j) => (j.metrics ? j.metrics.test || j.metrics.eval || null : null);
const ev = (j, k) => (finalMetrics(j) ? finalMetrics(j)[k] : null);
function progressText(j) {
  const p = j.progress;
  if (!p) return j.status === "queued" ? "waiting for a worker" : "";
  // A job on texts or images encodes (and fetches) its items' content before the epochs.
  if (p.stage) return `${p.stage} ${p.done}/${p.total}`;
  return `epoch ${p.epoch}/${p.epochs}` + (p.train_loss !== undefined ? ` · train loss ${fmt(p.train_loss)}` : "");
}
// Share of the job done: the epochs (encoding counts as none of it).
const progressFrac = (j) => (j.status === "succeeded" ? 1 : j.progress && j.progress.epochs ? j.progress.epoch / j.progress.epochs : 0);
function labelsText(cfg) { const l = cfg.labels || {}; return Object.entries(l).map(([k, v]) => (k === "method" ? v : `${k}=${v}`)).join(" "); }
function modelText(cfg) { const m = cfg.model || {}; return m.kind === "mlp" ? `mlp [${(m.hidden || []).join(",")}]` : m.kind; }

function configFromForm(f) {
  const cfg = {};
  const num = (name) => { const v = f.elements[name].value.trim(); return v === "" ? undefined : Number(v); };
  cfg.labels = { method: f.elements["labels.method"].value };
  for (const p of ["alpha", "temperature"]) if (num(`labels.${p}`) !== undefined) cfg.labels[p] = num(`labels.${p}`);
  cfg.loss = f.elements.loss.value;
  const kind = f.elements["model.kind"].value;
  cfg.model = { kind };
  if (kind === "mlp") {
    cfg.model.hidden = f.elements["model.hidden"].value.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    if (num("model.dropout") !== undefined) cfg.model.dropout = num("model.dropout");
  }
  cfg.optimizer = f.elements.optimizer.value;
  for (const k of ["lr", "weight_decay", "epochs", "batch_size", "seed", "validation_fraction", "test_fraction", "early_stopping"]) if (num(k) !== undefined) cfg[k] = num(k);
  cfg.device = f.elements.device.value;
  const group = (prefix, keys) => {
    const out = {};
    for (const k of keys) if (num(`${prefix}.${k}`) !== undefined) out[k] = num(`${prefix}.${k}`);
    return Object.keys(out).length ? out : undefined;
  };
  const lwr = group("lwr", ["k", "tau"]);
  if (lwr) cfg.lwr = lwr;
  const distill = group("distill", ["teacher_job", "temperature", "alpha"]);
  if (distill) cfg.distill = distill;  // without teacher_job the API names the missing field
  return cfg;
}

// The losses that train each task type (app/training/config.py LOSSES_BY_TASK), the soft one first.
const LOSSES = { single: ["soft-ce", "hard-ce"], ordinal: ["soft-ce", "hard-ce", "squared-emd"], multi_label: ["soft-bce", "hard-bce"] };

Pages.jobs = async () => {
  const sel = $("#job-method");
  for (const m of ALL_METHODS) sel.append(h("option", { selected: m === METHOD }, m));
  $("#job-form select[name=loss]").replaceChildren(...(LOSSES[TASK_TYPE] || LOSSES.single).map((l) => h("option", {}, l)));
  const form = $("#job-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const job = await api(`${P()}/training-jobs`, { method: "POST", json: configFromForm(form) });
      showFieldErrors(form, null);
      location.href = link("job", { id: job.id });
    } catch (err) { showFieldErrors(form, err); }
  });
  const chosen = new Set();
  $("#compare-button").addEventListener("click", () => { location.href = link("compare", { ids: [...chosen].join(",") }); });
  for (;;) {
    const data = await api(`${P()}/training-jobs?limit=100`);
    $("#jobs-table tbody").replaceChildren(...data.jobs.map((j) => {
      const box = h("input", { type: "checkbox", checked: chosen.has(j.id), "aria-label": `select job ${j.id}`, onchange: (x) => { if (x.target.checked) chosen.add(j.id); else chosen.delete(j.id); $("#compare-button").disabled = chosen.size < 2; } });
      const bar = h("div", { class: "progress" }, h("div", { class: "bar" }));
      const frac = progressFrac(j);
      bar.firstChild.style.width = `${Math.round(frac * 100)}%`;
      return h("tr", { "data-job": j.id, "data-status": j.status }, h("td", {}, box), h("td", {}, jobLink(j)), h("td", {}, h("span", { class: `badge ${j.status}` }, j.status)),
        h("td", {}, bar, h("span", { class: "small muted" }, progressText(j))), h("td", {}, labelsText(j.config)), h("td", {}, j.config.loss), h("td", {}, modelText(j.config)),
        h("td", { class: "num" }, fmt(ev(j, "accuracy"))), h("td", { class: "num" }, fmt(ev(j, "ece"))), h("td", { class: "num" }, fmt(ev(j, "kl_human"))), h("td", {}, when(j.created_at)));
    }));
    if (!data.jobs.length) $("#jobs-table tbody").append(h("tr", {}, h("td", { colspan: 11 }, "No jobs yet: start one below.")));
    if (!data.jobs.some((j) => !TERMINAL.includes(j.status))) break;
    await sleep(1500);
  }
};

function historySeries(j, keys) {
  const hist = (j.metrics && j.metrics.history) || [];
  return keys.map((k) => ({ name: k, points: hist.map((r) => [r.epoch, r[k] === undefined ? null : r[k]]) }));
}

Pages.job = async () => {
  const id = params.get("id");
  $("#job-id").textContent = `#${id}`;
  const live = [];  // (epoch, train_loss) seen while the job runs
  $("#job-cancel").addEventListener("click", async () => { await api(`/v1/training-jobs/${id}/cancel`, { method: "POST" }).catch(showError); });
  $("#job-download").addEventListener("click", () => download(`/v1/training-jobs/${id}/model`, `softlabels-job-${id}.pt`).catch(showError));
  for (;;) {
    const j = await api(`/v1/training-jobs/${id}`);
    const st = $("#job-status"); st.textContent = j.status; st.className = `badge ${j.status}`;
    const p = j.progress;
    const frac = progressFrac(j);
    $("#job-progress-bar").style.width = `${Math.round(frac * 100)}%`;
    $("#job-progress-text").textContent = `${progressText(j)}${j.device ? ` · ${j.device}` : ""}${j.started_at ? ` · started ${when(j.started_at)}` : ""}${j.finished_at ? ` · finished ${when(j.finished_at)}` : ""}`;
    $("#job-error").classList.toggle("hidden", !j.error); $("#job-error").textContent = j.error || "";
    $("#job-cancel").classList.toggle("hidden", TERMINAL.includes(j.status));
    $("#job-download").classList.toggle("hidden", j.status !== "succeeded");
    $("#job-config").textContent = JSON.stringify(j.config, null, 2);
    if (p && p.train_loss !== undefined && !live.some((q) => q[0] === p.epoch)) live.push([p.epoch, p.train_loss]);
    if (j.metrics && j.metrics.history) {
      Charts.lines($("#loss-chart"), historySeries(j, ["train_loss", "val_loss"]), { xlabel: "epoch" });
      const e = finalMetrics(j) || {};
      // A multi-label job reports per-class figures (no accuracy); an ordinal one adds the scale's.
      const multi = e.bce_human !== undefined, ordinal = e.rps_human !== undefined;
      const curves = multi ? ["macro_f1", "brier", "kl_human"] : ["accuracy", "accuracy_majority", "ece", "kl_human"];
      const shown = multi ? ["bce_human", "kl_human", "manhattan_human", "macro_f1", "brier", "n_train", "n_eval"]
        : ["accuracy", "accuracy_majority", "nll", "ece", "ce_human", "kl_human", "brier", "macro_f1",
           ...(ordinal ? ["rps_human", "wasserstein_human", "mae_human", "mae"] : []), "n_train", "n_eval"];
      Charts.lines($("#metric-chart"), historySeries(j, curves), { xlabel: "epoch", ymin: 0 });
      $("#job-cards").replaceChildren(...shown.map((k) => card(k, fmt(e[k]))),
        card("best epoch", fmt(j.metrics.best_epoch)), card("seconds", fmt(j.metrics.seconds, 1)));
      const rel = e.reliability || j.metrics.reliability;
      if (rel && rel.length) { $("#reliability-section").classList.remove("hidden"); Charts.reliability($("#reliability"), rel); }
    } else {
      Charts.lines($("#loss-chart"), [{ name: "train_loss", points: live }], { xlabel: "epoch" });
    }
    if (TERMINAL.includes(j.status)) break;
    await sleep(1000);
  }
};

function flatten(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out); else out[key] = Array.isArray(v) ? JSON.stringify(v) : v;
  }
  return out;
}

Pages.compare = async () => {
  const ids = (params.get("ids") || "").split(",").filter(Boolean);
  const jobs = await Promise.all(ids.map((i) => api(`/v1/training-jobs/${encodeURIComponent(i)}`)));
  const configs = jobs.map((j) => flatten(j.config, "", {}));
  const metrics = jobs.map((j) => flatten(finalMetrics(j) || {}, "", {}));
  const rows = [["status", jobs.map((j) => j.status)]];
  const all = [...new Set(configs.flatMap(Object.keys))];
  // "distill" is null in one job and {"teacher_job", ...} in another: show only the leaves.
  const ckeys = all.filter((k) => !all.some((o) => o.startsWith(k + "."))).sort();
  for (const k of ckeys) rows.push([k, configs.map((c) => c[k])]);
  for (const k of [...new Set(metrics.flatMap(Object.keys))]) rows.push([`test.${k}`, metrics.map((m) => m[k])]);
  $("#compare-table thead").replaceChildren(h("tr", {}, h("th", {}, ""), ...jobs.map((j) => h("th", {}, jobLink(j)))));
  $("#compare-table tbody").replaceChildren(...rows.map(([k, vals]) => {
    const differs = new Set(vals.map((v) => JSON.stringify(v))).size > 1;
    return h("tr", { class: differs ? "diff" : "" }, h("th", {}, k), ...vals.map((v) => h("td", { class: "num" }, fmt(v === undefined ? null : v))));
  }));
  const series = (key) => jobs.map((j) => ({ name: `#${j.id}`, points: ((j.metrics && j.metrics.history) || []).map((r) => [r.epoch, r[key] === undefined ? null : r[key]]) }));
  Charts.lines($("#compare-loss"), series("val_loss"), { xlabel: "epoch" });
  Charts.lines($("#compare-acc"), series("accuracy"), { xlabel: "epoch", ymin: 0 });
};

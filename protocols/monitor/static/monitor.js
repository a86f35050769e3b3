// hwloop monitor and report: draws every view from one JSON snapshot as inline SVG.
// No library, no network beyond the page's own snapshot endpoint (live mode). Part of
// the hwloop package (MIT); inlined into every page.
(function () {
  "use strict";
  const body = document.body;
  const MODE = body.dataset.mode;               // "live" or "report"
  const INTERVAL_MS = Number(body.dataset.intervalMs) || 2000;
  const COLORS = ["#175cd3", "#d92d20", "#039855", "#dc6803", "#7a5af8", "#0e9384", "#c11574",
                  "#475467"];

  // ------------------------------------------------------------------ formatting
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
      '"': "&quot;", "'": "&#39;"}[c]));
  }
  function num(x, d) {           // d significant digits, "-" for null
    if (x === null || x === undefined || !isFinite(x)) return "\u2013";
    if (x === 0) return "0";
    const a = Math.abs(x);
    if (a >= 1e-3 && a < 1e6) return String(Number(x.toPrecision(d || 4)));
    return x.toExponential((d || 4) - 1);
  }
  function pct(x, d) {
    if (x === null || x === undefined || !isFinite(x)) return "\u2013";
    return (100 * x).toFixed(d === undefined ? 2 : d) + " %";
  }
  function dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "\u2013";
    s = Math.max(0, s);
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 120) return s.toFixed(0) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  function utc(t) {
    if (!t) return "\u2013";
    return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
  }
  function card(label, value, id) {
    return `<div class="card"><div class="k">${esc(label)}</div>` +
      `<div class="v"${id ? ` id="${id}"` : ""}>${esc(value)}</div></div>`;
  }
  function kvTable(obj, id) {
    const rows = Object.keys(obj || {}).map((k) => {
      let v = obj[k];
      if (v === null || v === undefined) v = "\u2013";
      else if (typeof v === "number") v = num(v, 6);
      else if (typeof v === "object" && v !== null) v = JSON.stringify(v);
      return `<tr><td class="l">${esc(k)}</td><td class="l">${esc(v)}</td></tr>`;
    });
    return `<table${id ? ` id="${id}"` : ""}>${rows.join("")}</table>`;
  }
  function table(head, rows, id, cls) {
    const h = head.map((c, i) => `<th class="${(cls && cls[i]) || (i === 0 ? "l" : "")}">${esc(c)}</th>`).join("");
    const r = rows.map((row) => `<tr class="${row.cls || ""}">` + row.cells.map((c, i) =>
      `<td class="${(cls && cls[i]) || (i === 0 ? "l" : "")}">${esc(c)}</td>`).join("") +
      "</tr>").join("");
    return `<table${id ? ` id="${id}"` : ""}><thead><tr>${h}</tr></thead><tbody>${r}</tbody></table>`;
  }

  // ------------------------------------------------------------------ plotting
  function niceStep(span, n) {
    const raw = span / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = raw / p;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
  }
  function linTicks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    const st = niceStep(hi - lo, n);
    const out = [];
    for (let v = Math.ceil(lo / st) * st; v <= hi + 1e-9 * st; v += st) out.push(+v.toPrecision(12));
    return out;
  }
  // scale: "lin" or "symlog" (linear within +-lin of 0, logarithmic outside)
  function makeScale(kind, lin) {
    if (kind !== "symlog") return {f: (v) => v, ticks: (lo, hi) => linTicks(lo, hi, 5)};
    const f = (v) => Math.sign(v) * Math.log10(1 + Math.abs(v) / lin);
    return {f, ticks: (lo, hi) => {
      const t = [];
      if (lo <= 0 && hi >= 0) t.push(0);
      for (let e = Math.floor(Math.log10(lin)); e <= 12; e++) {
        const v = Math.pow(10, e);
        if (v > hi) break;
        if (v >= lin * 0.999 && v >= lo) t.push(v);
      }
      return t;
    }};
  }
  function finite(v) { return v !== null && v !== undefined && isFinite(v); }

  // opts: {w, h, title, xlabel, ylabel, xscale, xlin, ylim:[lo,hi], series:[{x, y, err, label,
  //        color, dash, width, marker, line, opacity, id}], vlines:[{x, label, color, dash}]}
  function plot(o) {
    const W = o.w || 460, H = o.h || 250, L = 58, R = 12, T = o.title ? 22 : 10, B = 40;
    const xs = makeScale(o.xscale, o.xlin || 1), ys = makeScale("lin");
    let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    for (const s of o.series) {
      s.x.forEach((x, i) => {
        const y = s.y[i];
        if (!finite(x) || !finite(y)) return;
        const e = s.err && finite(s.err[i]) ? s.err[i] : 0;
        xmin = Math.min(xmin, x); xmax = Math.max(xmax, x);
        ymin = Math.min(ymin, y - e); ymax = Math.max(ymax, y + e);
      });
    }
    for (const v of o.vlines || []) if (finite(v.x)) { xmin = Math.min(xmin, v.x); xmax = Math.max(xmax, v.x); }
    if (o.ylim) { ymin = o.ylim[0]; ymax = o.ylim[1]; }
    let parts = [`<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}"${o.id ? ` id="${o.id}"` : ""}>`];
    if (o.title) parts.push(`<text x="${L}" y="14" font-weight="600">${esc(o.title)}</text>`);
    if (!isFinite(xmin) || !isFinite(ymin)) {
      parts.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#667085">${esc(o.empty || "no data yet")}</text></svg>`);
      return parts.join("");
    }
    if (xmax === xmin) { xmax += 0.5; xmin -= 0.5; }
    if (ymax === ymin) { const d = Math.abs(ymax) * 0.05 || 0.5; ymax += d; ymin -= d; }
    const pad = (ymax - ymin) * 0.04; if (!o.ylim) { ymin -= pad; ymax += pad; }
    const fx0 = xs.f(xmin), fx1 = xs.f(xmax);
    const X = (x) => L + (xs.f(x) - fx0) / (fx1 - fx0 || 1) * (W - L - R);
    const Y = (y) => H - B - (y - ymin) / (ymax - ymin) * (H - B - T);
    for (const t of xs.ticks(xmin, xmax)) {
      const px = X(t).toFixed(1);
      parts.push(`<line class="grid" x1="${px}" x2="${px}" y1="${T}" y2="${H - B}"/>` +
        `<text x="${px}" y="${H - B + 14}" text-anchor="middle">${esc(num(t, 3))}</text>`);
    }
    for (const t of ys.ticks(ymin, ymax)) {
      const py = Y(t).toFixed(1);
      parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${py}" y2="${py}"/>` +
        `<text x="${L - 5}" y="${+py + 4}" text-anchor="end">${esc(num(t, 3))}</text>`);
    }
    parts.push(`<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>` +
      `<line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/>`);
    if (o.xlabel) parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">${esc(o.xlabel)}</text>`);
    if (o.ylabel) parts.push(`<text transform="translate(12 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(o.ylabel)}</text>`);
    const legend = [];
    o.series.forEach((s, k) => {
      const c = s.color || COLORS[k % COLORS.length];
      const pts = [];
      s.x.forEach((x, i) => { if (finite(x) && finite(s.y[i])) pts.push([X(x), Y(s.y[i]), i]); });
      const op = s.opacity === undefined ? 1 : s.opacity;
      if (s.err) for (const [px, , i] of pts) if (finite(s.err[i])) {
        parts.push(`<line x1="${px.toFixed(1)}" x2="${px.toFixed(1)}" y1="${Y(s.y[i] - s.err[i]).toFixed(1)}" y2="${Y(s.y[i] + s.err[i]).toFixed(1)}" stroke="${c}"/>`);
      }
      if (s.line !== false && pts.length > 1) {
        parts.push(`<path${s.id ? ` id="${s.id}"` : ""} data-n="${pts.length}" d="M${pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join("L")}" fill="none" stroke="${c}" stroke-width="${s.width || 1.6}" stroke-opacity="${op}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""}/>`);
      }
      if (s.marker || pts.length === 1) {
        const m = s.marker || "o";
        for (const [px, py] of pts) {
          if (m === "v") parts.push(`<path d="M${(px - 6).toFixed(1)},${(py - 6).toFixed(1)}L${(px + 6).toFixed(1)},${(py - 6).toFixed(1)}L${px.toFixed(1)},${(py + 4).toFixed(1)}Z" fill="none" stroke="${c}" stroke-width="1.6"/>`);
          else parts.push(`<circle cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="3.2" fill="${c}" fill-opacity="${op}"/>`);
        }
      }
      if (s.label) legend.push([s.label, c, s.dash, s.marker]);
    });
    for (const v of o.vlines || []) {
      if (!finite(v.x)) continue;
      const px = X(v.x).toFixed(1), c = v.color || "#000";
      parts.push(`<line x1="${px}" x2="${px}" y1="${T}" y2="${H - B}" stroke="${c}" stroke-dasharray="${v.dash || "5,4"}"/>`);
      if (v.label) legend.push([v.label, c, v.dash || "5,4"]);
    }
    if (legend.length) parts.push(`<rect x="${W - R - 162}" y="${T - 2}" width="160" height="${14 * legend.length + 4}" fill="#fff" fill-opacity="0.85" stroke="#eaecf0"/>`);
    legend.forEach(([lab, c, dash, marker], i) => {
      const y = T + 6 + 14 * i, x = W - R - 8;
      parts.push(`<line x1="${x - 150}" x2="${x - 132}" y1="${y}" y2="${y}" stroke="${c}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ""}/>` +
        (marker === "v" ? `<path d="M${x - 145},${y - 4}L${x - 137},${y - 4}L${x - 141},${y + 3}Z" fill="none" stroke="${c}"/>` : "") +
        `<text x="${x - 128}" y="${y + 4}">${esc(lab)}</text>`);
    });
    parts.push("</svg>");
    return parts.join("");
  }

  // step-outline histograms sharing bin edges: {edges, series:[{counts, label, color}]}
  function hist(o) {
    const series = o.series.map((s) => {
      const x = [], y = [];
      s.counts.forEach((c, i) => { x.push(o.edges[i], o.edges[i + 1]); y.push(c, c); });
      return {x, y, label: s.label, color: s.color, dash: s.dash, width: 1.4};
    });
    return plot({w: o.w, h: o.h, title: o.title, xlabel: o.xlabel, ylabel: "edges", series});
  }

  // ------------------------------------------------------------------ run views
  function runView(d) {
    const st = d.status || {}, pr = d.progress || {}, ls = d.last_step || {};
    const ep = d.epochs || {};
    const nEp = (ep.epoch || []).length;
    const lastTest = nEp ? ep.test_accuracy[nEp - 1] : null;
    const out = [];
    const total = pr.total_steps ? ` / ${pr.total_steps}` : "";
    out.push(`<section id="sec-status"><h2>Status</h2><div class="cards">` +
      card("steps done", `${pr.steps_done}${total}`, "v-steps-done") +
      card("epoch", pr.epoch ? `${pr.epoch}${pr.epochs_total ? " / " + pr.epochs_total : ""}` : "\u2013", "v-epoch") +
      card("batch in epoch", pr.batch ? `${pr.batch} / ${pr.steps_per_epoch}` : "\u2013", "v-batch") +
      card("rate", pr.rate_steps_per_s ? `${num(pr.rate_steps_per_s, 3)} steps/s` : "\u2013", "v-rate") +
      card("examples / s", num(pr.examples_per_s, 3), "v-eps") +
      card("ETA", st.shown === "running" ? dur(pr.eta_s) : "\u2013", "v-eta") +
      card("last step", ls.step === null || ls.step === undefined ? "\u2013" : String(ls.step), "v-last-step") +
      card("loss (last step)", num(ls.loss, 6), "v-last-loss") +
      card("accuracy (last step)", pct(ls.accuracy), "v-last-acc") +
      card("test accuracy (last epoch)", pct(lastTest), "v-test-acc") +
      card("last write", MODE === "live" ? dur(st.last_write_age_s) + " ago" :
        utc(d.generated_unix_s - st.last_write_age_s), "v-age") +
      card("resumes", String(st.resumes || 0), "v-resumes") +
      `</div><p class="note">started ${esc(st.started_utc || "")}` +
      (st.stopped_utc ? `, stopped ${esc(st.stopped_utc)}` : "") +
      ` &middot; run ${esc(st.run_id || "")} &middot; seed ${esc(st.seed)} &middot; hwloop ${esc(st.hwloop_version || "")} ${esc((st.git_commit || "").slice(0, 12))}</p></section>`);

    // training curves
    const s = d.steps || {step: []};
    const ends = (ep.epoch || []).map((e) => e * (pr.steps_per_epoch || 1) - 1);
    const binNote = s.bin_steps > 1 ? `; means over ${s.bin_steps} steps per point` : "";
    out.push(`<section id="sec-training"><h2>Training</h2><div class="row">` +
      plot({id: "plot-loss", title: "loss per step", xlabel: "step", ylabel: "loss (V\u00b2)", series: [
        {x: s.step, y: s.loss, label: "per step", color: "#98a2b3", width: 1},
        {x: s.step, y: s.loss_smooth, label: `smoothed (EMA ${s.smooth_span_steps})`, color: COLORS[0], id: "curve-loss"},
        {x: ends, y: ep.train_loss || [], label: "epoch train", color: COLORS[3], marker: "o", line: false},
        {x: ends, y: ep.test_loss || [], label: "epoch test", color: COLORS[2], marker: "o", line: false}]}) +
      plot({id: "plot-acc", title: "accuracy per step", xlabel: "step", ylabel: "accuracy (%)", series: [
        {x: s.step, y: (s.accuracy || []).map((v) => v === null ? null : 100 * v), label: "per step", color: "#98a2b3", width: 1},
        {x: s.step, y: (s.accuracy_smooth || []).map((v) => v === null ? null : 100 * v), label: "smoothed", color: COLORS[0], id: "curve-acc"},
        {x: ends, y: (ep.train_accuracy || []).map((v) => v === null ? null : 100 * v), label: "epoch train", color: COLORS[3], marker: "o"},
        {x: ends, y: (ep.test_accuracy || []).map((v) => v === null ? null : 100 * v), label: "epoch test", color: COLORS[2], marker: "o", id: "curve-test"}]}) +
      `</div><p class="note">per step: the free-phase cost and accuracy of each mini-batch${binNote}; epoch points at the epoch's last step</p>` +
      table(["epoch", "train loss", "train acc", "test acc", "test loss", "time", "examples/s", "pulses", "bound hits"],
        (ep.epoch || []).map((e, i) => ({cells: [String(e), num(ep.train_loss[i], 5), pct(ep.train_accuracy[i]),
          pct(ep.test_accuracy[i]), num(ep.test_loss[i], 5), dur(ep.time_s[i]), num(ep.examples_per_s[i], 4),
          num(ep.pulses[i], 6), num(ep.bound_hits[i], 6)]})), "epochs-table") + "</section>");

    // conductances
    const g = d.conductance || {layers: []};
    let gh = `<section id="sec-conductance"><h2>Conductances</h2>`;
    if (!g.layers.length) gh += `<p class="note">no checkpoint yet</p>`;
    else {
      gh += `<p class="note">last checkpoint after step ${g.last.steps_done} (${g.n_checkpoints} checkpoints; ` +
        `g_min ${num(g.g_min_s, 3)} S, g_max ${num(g.g_max_s, 3)} S)</p>`;
      for (const L of g.layers) {
        const hs = g.history.steps_done;
        gh += `<h3>${esc(L.name)} (${L.n_edges} edges)</h3><div class="row">` +
          hist({title: "distribution", xlabel: "conductance (S)", edges: L.edges_s, series: [
            {counts: L.hist_first, label: "first checkpoint", color: "#98a2b3", dash: "4,3"},
            {counts: L.hist_last, label: `after step ${g.last.steps_done}`, color: COLORS[0]}]}) +
          plot({title: "how it moved", xlabel: "steps done", ylabel: "conductance (S)", series: [
            {x: hs, y: L.history.p95_s, label: "95th percentile", color: COLORS[3]},
            {x: hs, y: L.history.mean_s, label: "mean", color: COLORS[0]},
            {x: hs, y: L.history.p50_s, label: "median", color: COLORS[2]},
            {x: hs, y: L.history.p05_s, label: "5th percentile", color: COLORS[4]}]}) +
          kvTable({"mean (S)": L.mean_s, "std (S)": L.std_s, "median (S)": L.p50_s,
            "at g_min": L.frac_at_min === null ? "\u2013" : pct(L.frac_at_min),
            "at g_max": L.frac_at_max === null ? "\u2013" : pct(L.frac_at_max),
            "mean |\u0394g| since previous checkpoint (S)": L.mean_abs_change_vs_prev_s,
            "mean |\u0394g| since first checkpoint (S)": L.mean_abs_change_vs_first_s}) + "</div>";
      }
    }
    out.push(gh + "</section>");

    // read noise and flags
    const nz = d.noise || {phases: []};
    const w = nz.window_steps;
    out.push(`<section id="sec-noise"><h2>Read noise and flags</h2><p class="note">` +
      (w ? `steps ${w[0]}\u2013${w[1]} (the last ${w[1] - w[0] + 1}); ` : "no step yet; ") +
      `spread: standard deviation of a node's ${nz.samples_mode === "raw" ? "samples" : "samples (from the logged standard error)"} in a phase, ` +
      `median and 90th percentile over nodes and examples (needs \u2265 2 samples; ${nz.max_samples} per phase at most)</p><div class="row">` +
      table(["phase", "\u03b2 (S)", "samples", "spread median (V)", "spread p90 (V)", "overrange", "compliance", "readings"],
        nz.phases.map((p) => ({cls: (p.overrange || p.compliance) ? "warning" : "",
          cells: [p.name, num(p.beta_s, 3), num(p.n_samples_mean, 3), num(p.spread_median_v, 4), num(p.spread_p90_v, 4),
            String(p.overrange), String(p.compliance), String(p.readings)]})), "noise-table") +
      plot({title: "spread per step", xlabel: "step", ylabel: "median spread (V)",
        empty: nz.max_samples < 2 ? "one sample per phase: no spread" : "no data yet",
        series: (nz.series ? nz.series.spread_median_v : []).map((y, p) => ({x: nz.series.step, y, label: nz.phases[p].name}))}) +
      "</div></section>");

    // programming
    const pg = nz.programming || {};
    let reasons = "";
    if (pg.reasons) reasons = table(["outcome (last steps)", "edges"], Object.keys(pg.reasons).map((k) => ({cells: [k, String(pg.reasons[k])]})), "reasons-table");
    else reasons = `<p class="note">programming records are off in this file (--log-programming); counts per step only</p>`;
    out.push(`<section id="sec-programming"><h2>Programming</h2><div class="row">` +
      kvTable({"pulses per step (mean, last steps)": pg.pulses_per_step_mean, "pulses per step (max)": pg.pulses_per_step_max,
        "bound hits per step (mean)": pg.bound_hits_per_step_mean, "pulses (run)": pg.pulses_total,
        "bound hits (run)": pg.bound_hits_total, "write-verify converged": pg.converged_fraction === undefined ? "\u2013" : pct(pg.converged_fraction),
        "median |achieved \u2212 target| (S)": pg.abs_error_median_s === undefined ? "\u2013" : pg.abs_error_median_s}, "prog-table") +
      reasons +
      plot({title: "per step", xlabel: "step", ylabel: "count", series: [
        {x: s.step, y: s.pulses, label: "pulses"}, {x: s.step, y: s.bound_hits, label: "bound hits"}]}) +
      "</div></section>");

    // events
    const ev = (d.events || []).slice().reverse();
    out.push(`<section id="sec-events"><h2>Events</h2><div class="scroll">` +
      table(["time (UTC)", "step", "kind", "message"], ev.map((e) => ({cls: e.kind,
        cells: [utc(e.t_unix_s), String(e.step), e.kind, e.message]})), "events-table", ["l", "", "l", "l"]) +
      "</div></section>");

    // board and configuration
    const b = d.board || {};
    out.push(`<section id="sec-board"><h2>Board and configuration</h2><div class="row"><div>` +
      `<h3>${esc(b.name || "")} (backend ${esc(b.backend || "")})</h3>` + kvTable(Object.fromEntries(Object.entries(b.summary || {}).filter(([k]) => k !== "limits" && k !== "info")), "board-table") +
      `</div><div><h3>safety limits</h3>` + kvTable(b.limits) + `<h3>backend options</h3>` + kvTable(b.backend_options) +
      `<h3>logging</h3>` + kvTable(b.log_options) + `</div><div><h3>configuration</h3>` +
      `<p class="note">${esc(b.defaults_source || "")}</p><pre id="config">${esc(b.config_toml || "")}</pre>` +
      (b.info && Object.keys(b.info).length ? `<details id="det-info"><summary>board info</summary>${kvTable(b.info)}</details>` : "") +
      "</div></div></section>");
    return out.join("");
  }

  // ------------------------------------------------------------------ sweep views
  function sweepView(d) {
    const out = [];
    const c = d.counts || {};
    out.push(`<section id="sec-status"><h2>Grid</h2><div class="cards">` +
      card("points", String((d.points || []).length), "v-points") +
      ["completed", "running", "pending", "failed"].map((k) => card(k, String(c[k] || 0), "v-" + k)).join("") +
      card("predicted limit", d.predicted_limit_v === null ? "\u2013" : num(d.predicted_limit_v, 3) + " V", "v-predicted") +
      `</div>` + kvTable({"read noise \u03c3 (V)": (d.grid.read_noise || []).map((v) => num(v, 3)).join(", "),
        "samples N": (d.grid.samples || []).join(", "), "datasets": (d.grid.dataset || []).join(", "),
        "seeds": (d.grid.seed || []).join(", "), "fixed options": d.fixed}, "grid-table") +
      (d.predicted_note ? `<p class="note">prediction: ${esc(d.predicted_note)}</p>` : "") + "</section>");
    out.push(`<section id="sec-points"><h2>Points</h2><div class="scroll">` +
      table(["point", "status", "\u03c3 (V)", "N", "\u03c3/\u221aN (V)", "progress", "final test acc", "time"],
        (d.points || []).map((p) => ({cls: p.status === "failed" ? "safety" : "",
          cells: [p.point, p.status, num(p.read_noise, 3), String(p.samples), num(p.sigma_eff_v, 3),
            p.progress ? `${p.progress.steps_done}${p.progress.total_steps ? " / " + p.progress.total_steps : ""} steps` : "",
            pct(p.final_test_accuracy), dur(p.wall_time_s)]})), "points-table", ["l", "l"]) + "</div></section>");
    const agg = d.aggregate || [];
    const datasets = [...new Set(agg.map((a) => a.dataset))];
    let ph = `<section id="sec-plots"><h2>Accuracy versus read noise</h2>`;
    if (!datasets.length) ph += `<p class="note">no completed point yet</p>`;
    for (const ds of datasets) {
      const rows = agg.filter((a) => a.dataset === ds);
      const pos = rows.map((a) => a.sigma_eff).concat(rows.map((a) => a.read_noise)).filter((v) => v > 0);
      const lin = pos.length ? Math.min(...pos) : 1e-6;
      const ns = [...new Set(rows.map((a) => a.samples))].sort((a, b) => a - b);
      const byN = (n) => rows.filter((a) => a.samples === n).sort((a, b) => a.read_noise - b.read_noise);
      const lims = (d.measured_limits || []).filter((l) => l.dataset === ds);
      const s1 = ns.map((n) => { const r = byN(n); return {x: r.map((a) => a.read_noise), y: r.map((a) => 100 * a.acc_mean), err: r.map((a) => 100 * a.acc_std), label: `N = ${n}`, marker: "o"}; });
      const s2 = ns.map((n) => { const r = byN(n); return {x: r.map((a) => a.sigma_eff), y: r.map((a) => 100 * a.acc_mean), err: r.map((a) => 100 * a.acc_std), label: `N = ${n}`, marker: "o", line: false}; });
      lims.forEach((l) => { if (l.limit_sigma_eff_v !== null) s2.push({x: [l.limit_sigma_eff_v], y: [100 * l.threshold_acc], marker: "v", line: false, color: "#000", label: `measured, N = ${l.samples}: ${num(l.limit_sigma_eff_v, 2)} V`}); });
      const pv = d.predicted_limit_v;
      ph += `<h3>${esc(ds)}</h3><div class="row">` +
        plot({w: 520, h: 300, title: "accuracy vs \u03c3", xlabel: "read noise \u03c3 per sample (V)", ylabel: "final test accuracy (%)", xscale: "symlog", xlin: lin, series: s1,
          vlines: pv === null ? [] : [{x: pv, label: "limit (N = 1)", dash: "2,3"}]}) +
        plot({w: 520, h: 300, title: "accuracy vs \u03c3/\u221aN", xlabel: "\u03c3 / \u221aN (V)", ylabel: "final test accuracy (%)", xscale: "symlog", xlin: lin, series: s2,
          vlines: pv === null ? [] : [{x: pv, label: `predicted limit ${num(pv, 2)} V`}]}) + "</div>" +
        table(["N", "reference", "threshold acc", "measured limit \u03c3/\u221aN (V)", "\u03c3 (V)", "note"],
          lims.map((l) => ({cells: [String(l.samples), `${pct(l.reference_acc)} (${l.reference})`, pct(l.threshold_acc),
            num(l.limit_sigma_eff_v, 3), num(l.limit_sigma_v, 3), l.note || ""]})), "limits-table");
    }
    out.push(ph + `<p class="note">measured limit: where the seed-mean accuracy falls ${num(100 * d.limit_drop, 3)} points below the reference (hwloop sweep --limit-drop)</p></section>`);
    return out.join("");
  }

  // ------------------------------------------------------------------ page
  let rendered = 0;
  function render(d) {
    const open = [...document.querySelectorAll("details[open]")].map((e) => e.id);
    const main = document.getElementById("main");
    const chip = document.getElementById("v-status");
    const note = document.getElementById("v-note");
    if (d.kind === "sweep") {
      main.innerHTML = sweepView(d);
      const c = d.counts || {};
      const shown = c.running ? "running" : c.failed ? "failed" : (c.pending ? "stopped" : "completed");
      chip.textContent = c.running ? "running" : ((d.points || []).length ? shown : "empty");
      chip.className = "chip " + shown;
      note.textContent = "sweep directory " + d.path;
    } else if (d.empty) {
      main.innerHTML = `<p class="note">waiting for a readable session file</p>`;
      chip.textContent = "waiting"; chip.className = "chip";
    } else {
      main.innerHTML = runView(d);
      chip.textContent = d.status.shown;
      chip.className = "chip " + d.status.shown;
      note.textContent = d.status.note || "";
    }
    for (const id of open) { const e = document.getElementById(id); if (e) e.open = true; }
    const banner = document.getElementById("banner");
    banner.textContent = d.error || "";
    banner.className = "banner" + (d.error ? " on" : "");
    rendered += 1;
    body.dataset.rendered = String(rendered);
    body.dataset.generated = String(d.generated_unix_s);
    document.getElementById("footer").textContent = (MODE === "live" ? "live: refreshed every " +
      (INTERVAL_MS / 1000) + " s from the file; last read " : "report generated ") + utc(d.generated_unix_s) +
      " \u00b7 hwloop monitor (read-only)";
  }

  function poll() {
    fetch("api/snapshot", {cache: "no-store"}).then((r) => {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then((d) => { render(d); }).catch((e) => {
      const banner = document.getElementById("banner");
      banner.textContent = "monitor unreachable (" + e.message + "); retrying";
      banner.className = "banner on";
    }).finally(() => { setTimeout(poll, INTERVAL_MS); });
  }

  const embedded = document.getElementById("hwloop-data").textContent.trim();
  if (embedded && embedded !== "null") render(JSON.parse(embedded));
  if (MODE === "live") poll();
})();

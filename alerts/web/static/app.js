// megawatch live page: renders Snapshot JSON pushed over server-sent events.
// No external assets, no frameworks; every value goes in with textContent.
"use strict";
(function () {
  const COLORS = ["#4cc2ff", "#f5b942", "#3ecf8e", "#c792ea", "#ff8c69", "#7aa2f7"];
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let lastAt = 0, windowMs = 1000;

  function fmt(v, d) {
    if (v === undefined || v === null || !isFinite(v)) return "—";
    return v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }
  function set(id, text) { const e = $(id); if (e && e.textContent !== text) e.textContent = text; }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // Colours and flags with hysteresis: a value hovering at a threshold does
  // not flip them every second. A level is entered at its threshold and left
  // only a margin below it; the state is kept per key (domain).
  const sticky = new Map();
  function hyst(key, v, levels, margin) {
    // levels: [[threshold, name], ...] highest first; v above → name
    const prev = sticky.get(key) || "";
    let next = "";
    for (const [thr, name] of levels) {
      if (v >= thr || (prev === name && v >= thr - margin)) { next = name; break; }
    }
    sticky.set(key, next);
    return next;
  }
  // A degraded flag stays shown for 5 s after the last degraded window.
  const lastOn = new Map();
  function holdOn(key, flag) {
    const now = Date.now();
    if (flag) lastOn.set(key, now);
    const t = lastOn.get(key);
    return flag || (t !== undefined && now - t < 5000);
  }
  function levelClass(frac, key) { return hyst("lvl:" + key, frac, [[0.95, "crit"], [0.85, "warn"]], 0.01); }
  // Coverage is "low" below 95 %, and stays low until it is back above 96 %.
  function lowCoverage(cov, key) { return hyst("cov:" + key, -cov, [[-0.95 + 1e-9, "low"]], 0.01) === "low"; }
  function bar(power, cap, key) {
    const b = el("div", "bar"), f = el("div", "bar-fill"), m = el("div", "bar-mark");
    const frac = cap > 0 ? power / cap : 0;
    f.style.width = Math.min(100, Math.max(0, frac * 100)).toFixed(1) + "%";
    const c = levelClass(frac, key); if (c) f.classList.add(c);
    b.append(f, m);
    return b;
  }
  function ago(iso, now) {
    const t = Date.parse(iso);
    if (!isFinite(t) || t <= 0) return "—";
    let s = Math.max(0, Math.round((now - t) / 1000));
    if (s < 60) return s + "s ago";
    const m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + "m " + s + "s ago";
    return Math.floor(m / 60) + "h " + (m % 60) + "m ago";
  }

  // Facility power (W in the snapshot): a domain has it when the aggregator
  // says where its figure comes from; an older aggregator sends GPU power
  // only, and the page shows that as before.
  const hasFacility = (d) => !!d.facility_source;
  const hasMeter = (d) => typeof d.metered_w === "number";
  // shownMW is what the page puts against capacity: the facility figure
  // (what the capacity rules evaluate), else the GPU estimate.
  const shownMW = (d) => hasFacility(d) ? d.facility_w / 1e6 : d.power_est_mw;
  const headroomMW = (d) => hasFacility(d) ? d.capacity_mw - d.facility_w / 1e6 : d.headroom_mw;
  // shownDegraded: the figure against capacity is partly estimated (the
  // facility figure's own flag: a fresh meter is measured whatever the
  // node coverage).
  const shownDegraded = (d) => hasFacility(d) ? !!d.facility_degraded : !!d.degraded;
  function sourceText(d) {
    const s = String(d.facility_source || "").toLowerCase();
    if (s.includes("meter")) return "meter";
    if (s.includes("node")) return "node sum";
    return s || "—";
  }

  function campus(sites) {
    const c = { power_mw: 0, power_est_mw: 0, capacity_mw: 0, headroom_mw: 0, nodes_reporting: 0, nodes_expected: 0,
      ramp_mw_per_s: 0, swing_mw: 0, osc_mw: 0, osc_freq_hz: 0, osc_found: false, degraded: false, lag_s: 0,
      shown_mw: 0, gpu_mw: 0, facility: sites.length > 0, metered: sites.length > 0 };
    for (const s of sites) {
      c.power_mw += s.power_mw; c.power_est_mw += s.power_est_mw; c.capacity_mw += s.capacity_mw;
      c.headroom_mw += headroomMW(s); c.nodes_reporting += s.nodes_reporting; c.nodes_expected += s.nodes_expected;
      c.ramp_mw_per_s += s.ramp_mw_per_s; c.swing_mw += s.swing_mw;
      c.degraded = c.degraded || shownDegraded(s); c.lag_s = Math.max(c.lag_s, s.lag_s || 0);
      if (s.osc_found && s.osc_mw > c.osc_mw) { c.osc_mw = s.osc_mw; c.osc_freq_hz = s.osc_freq_hz; c.osc_found = true; }
      c.shown_mw += shownMW(s); c.gpu_mw += hasFacility(s) ? s.gpu_w / 1e6 : s.power_est_mw;
      c.facility = c.facility && hasFacility(s); c.metered = c.metered && hasMeter(s);
    }
    c.coverage = c.nodes_expected > 0 ? c.nodes_reporting / c.nodes_expected : 0;
    return c;
  }

  function renderKPIs(snap) {
    // A hall-scoped alerts instance has halls but no site: sum the halls.
    const top = (snap.sites || []).length ? snap.sites : (snap.halls || []);
    const c = campus(top);
    // The headline is the estimate (silent nodes at their last known power):
    // missing reports never show as "0 MW" or as headroom.
    // With facility power it is the facility figure (what the breakers
    // carry, what the capacity rules evaluate); the foot says which.
    set("site-mw", fmt(c.shown_mw, 1));
    set("site-capacity", fmt(c.capacity_mw, 1));
    set("site-basis", c.facility ? (c.metered ? "metered" : "node sum") + " · GPU " + fmt(c.gpu_mw, 1) + " MW" : "GPU power");
    const frac = c.capacity_mw > 0 ? c.shown_mw / c.capacity_mw : 0;
    set("site-util", fmt(frac * 100, 1) + "% used");
    const b = $("site-bar");
    b.style.width = Math.min(100, frac * 100).toFixed(1) + "%";
    b.className = "bar-fill " + levelClass(frac, "campus");
    const deg = holdOn("campus", c.degraded);
    const dm = $("site-degraded");
    dm.classList.toggle("hidden", !deg && !(c.lag_s > 5));
    set("site-degraded", deg ? "⚠ telemetry degraded: partly estimated, " + fmt(c.coverage * 100, 1) + "% of nodes report" :
      c.lag_s > 5 ? "⚠ aggregator " + fmt(c.lag_s, 0) + " s behind" : "");
    $("site-mw").parentElement.classList.toggle("degraded", deg);
    set("site-headroom", fmt(c.headroom_mw, 1) + (deg ? "?" : ""));
    $("site-headroom").className = c.headroom_mw < 0 ? "bad" : "";
    set("site-est", fmt(c.power_mw, 1));
    set("site-coverage", fmt(c.coverage * 100, 1));
    $("site-coverage").className = lowCoverage(c.coverage, "campus") ? "low" : "";
    set("site-nodes", c.nodes_reporting.toLocaleString("en-US") + " / " + c.nodes_expected.toLocaleString("en-US"));
    set("site-ramp", (c.ramp_mw_per_s > 0 ? "+" : "") + fmt(c.ramp_mw_per_s, 2));
    set("site-swing", fmt(c.swing_mw, 1));
    set("osc-mw", c.osc_found ? fmt(c.osc_mw, 1) : "—");
    set("osc-freq", c.osc_found ? fmt(c.osc_freq_hz, 2) : "—");
  }

  function domainRow(d, cls) {
    const tr = el("tr", cls);
    tr.dataset.key = d.key;
    tr.dataset.testid = cls;
    const name = el("td", "name", d.path && d.path.length ? d.path[d.path.length - 1] : d.key);
    name.title = d.key;
    const deg = holdOn(d.key, shownDegraded(d));
    if (deg) { name.append(el("span", "deg-tag", "degraded")); name.title = d.key + ": telemetry degraded, figures partly estimated"; }
    const barTd = el("td"), mw = shownMW(d), headroom = headroomMW(d);
    barTd.append(bar(mw, d.capacity_mw, d.key), el("div", "cap-text", fmt(mw, 1) + " / " + fmt(d.capacity_mw, 1) + " MW" + (deg ? " (est.)" : "")));
    const head = el("td", "num" + (headroom < 0 ? " bad" : ""), fmt(headroom, 1));
    const cov = el("td", "num" + (lowCoverage(d.coverage, d.key) ? " low" : ""), fmt(d.coverage * 100, 1) + "%");
    cov.title = d.nodes_reporting + " / " + d.nodes_expected + " nodes";
    const osc = el("td", "num", d.osc_found && d.osc_mw >= 0.05 ? fmt(d.osc_mw, 1) + " MW @ " + fmt(d.osc_freq_hz, 2) + " Hz" : "—");
    const temp = el("td", "num", d.gpu_temp_max_c > 0 ? fmt(d.gpu_temp_max_c, 0) + (d.throttled_gpus > 0 ? " · " + d.throttled_gpus + " thr" : "") : "—");
    tr.append(name, barTd, el("td", "num mw", fmt(mw, 1)), head, cov, el("td", "num", fmt(d.ramp_mw_per_s, 2)), osc, temp);
    return tr;
  }

  // facilityRow: the three figures side by side, and what the meters see
  // beyond the reporting nodes.
  function facilityRow(d, cls) {
    const tr = el("tr", "fac-row " + cls);
    tr.dataset.key = d.key;
    tr.dataset.testid = "fac-row";
    const name = el("td", "name", d.path && d.path.length ? d.path[d.path.length - 1] : d.key);
    name.title = d.key;
    if (!hasFacility(d)) {
      // An aggregator without facility power: GPU power only.
      tr.append(name, el("td", "num fac-gpu", fmt(d.power_est_mw, 1)), el("td", "num fac-node", "—"), el("td", "num fac-meter", "—"),
        el("td", "num fac-unacc", "—"), el("td", "num", "—"), el("td", "fac-src", "GPU only"), el("td", "num fac-mw", fmt(d.power_est_mw, 1)));
      return tr;
    }
    const stale = d.meters_stale > 0;
    const meter = el("td", "num fac-meter" + (stale ? " low" : ""), hasMeter(d) ? fmt(d.metered_w / 1e6, 1) + (stale ? " ⚠" : "") : stale ? "stale" : "—");
    if (stale) meter.title = d.meters_stale + " meter(s) without a fresh reading";
    const un = typeof d.unaccounted_w === "number" ? d.unaccounted_w / 1e6 : undefined;
    const ratio = un !== undefined && hasMeter(d) && d.metered_w > 0 ? un / (d.metered_w / 1e6) : undefined;
    // No colour of its own: what is normal (losses, non-IT load) differs
    // per domain; the divergence rules say when it is not.
    tr.append(name, el("td", "num fac-gpu", fmt(d.gpu_w / 1e6, 1)), el("td", "num fac-node", fmt(d.node_w / 1e6, 1)), meter,
      el("td", "num fac-unacc", un !== undefined ? fmt(un, 2) : "—"),
      el("td", "num fac-ratio", ratio !== undefined ? fmt(ratio * 100, 1) + "%" : "—"),
      el("td", "fac-src", sourceText(d) + (d.facility_degraded ? " (est.)" : "")), el("td", "num fac-mw", fmt(d.facility_w / 1e6, 1)));
    return tr;
  }

  function renderDomains(snap) {
    const body = $("domains");
    const rows = [];
    const halls = snap.halls || [];
    for (const s of snap.sites || []) {
      rows.push(domainRow(s, "site-row"));
      for (const h of halls) if (h.path && h.path[0] === s.path[0]) rows.push(domainRow(h, "hall-row"));
    }
    const siteNames = new Set((snap.sites || []).map((s) => s.path && s.path[0]));
    for (const h of halls) if (!h.path || !siteNames.has(h.path[0])) rows.push(domainRow(h, "hall-row"));
    body.replaceChildren(...rows);
    const fac = [];
    for (const s of snap.sites || []) {
      fac.push(facilityRow(s, "fac-site"));
      for (const h of halls) if (h.path && h.path[0] === s.path[0]) fac.push(facilityRow(h, "fac-hall"));
    }
    for (const h of halls) if (!h.path || !siteNames.has(h.path[0])) fac.push(facilityRow(h, "fac-hall"));
    $("facility").replaceChildren(...fac);
  }

  const SEV_ORDER = { critical: 0, page: 0, warning: 1, info: 2 };
  // A pending alert that went away stays listed (greyed) for a few seconds,
  // so a value hovering at a threshold does not make rows and counts blink.
  const LINGER_MS = 5000;
  const recent = new Map();
  function renderAlerts(snap) {
    const nowMs = Date.now(), seen = new Set();
    for (const a of snap.alerts || []) { const k = a.rule + "|" + a.domain; seen.add(k); recent.set(k, { a: a, at: nowMs }); }
    const list = (snap.alerts || []).slice();
    for (const [k, r] of recent) {
      if (seen.has(k)) continue;
      if (nowMs - r.at > LINGER_MS || r.a.state !== "pending") { recent.delete(k); continue; }
      list.push(Object.assign({}, r.a, { state: "pending", lingering: true }));
    }
    const alerts = list.sort((a, b) =>
      (SEV_ORDER[a.severity] ?? 3) - (SEV_ORDER[b.severity] ?? 3) || Date.parse(a.active_since) - Date.parse(b.active_since));
    const now = Date.parse(snap.at) || Date.now();
    const rows = alerts.map((a) => {
      const tr = el("tr", "alert-row " + (a.state || "") + (a.lingering ? " lingering" : ""));
      tr.dataset.testid = "alert-row";
      tr.dataset.rule = a.rule; tr.dataset.domain = a.domain;
      const sev = el("td"); sev.append(el("span", "sev sev-" + a.severity, a.severity));
      const rule = el("td", "rule"); rule.append(document.createTextNode(a.rule));
      if (a.state && a.state !== "firing") rule.append(el("span", "state", a.state));
      if (a.held) rule.append(el("span", "state", "held: telemetry degraded"));
      if (a.summary) rule.append(el("div", "summary", a.summary));
      const dom = el("td", "domain", a.domain); if (a.level) dom.title = a.level;
      const val = el("td", "num value", fmt(a.value, 2) + " / " + fmt(a.threshold, 2));
      tr.append(sev, rule, dom, val, el("td", "since", ago(a.active_since, now).replace(" ago", "")));
      return tr;
    });
    $("alerts").replaceChildren(...rows);
    $("no-alerts").classList.toggle("hidden", rows.length > 0);
    const firing = alerts.filter((a) => a.state === "firing").length;
    set("alert-count", String(firing));
    set("alert-firing", String(alerts.length - firing));
    $("alert-count").className = firing > 0 ? "bad" : "";
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function renderChart(snap) {
    const chart = $("chart"), legend = $("legend");
    const W = 1000, H = 260, L = 58, R = 8, T = 10, B = 22;
    const series = snap.site_series || {};
    const keys = Object.keys(series).sort();
    const end = Date.parse(snap.at) || Date.now(), start = end - 60000;
    let lo = Infinity, hi = -Infinity;
    for (const k of keys) for (const p of series[k]) { if (p.t >= start) { lo = Math.min(lo, p.mw); hi = Math.max(hi, p.mw); } }
    const caps = (snap.sites || []).filter((s) => keys.includes(s.key) && s.capacity_mw > 0).map((s) => s.capacity_mw);
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    for (const c of caps) if (c <= hi * 1.2) hi = Math.max(hi, c);
    const pad = Math.max((hi - lo) * 0.1, 0.5);
    lo = Math.max(0, lo - pad); hi = hi + pad;
    const x = (t) => L + (t - start) / 60000 * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    const nodes = [];
    const step = niceStep((hi - lo) / 4);
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      nodes.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      nodes.push(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v, step < 1 ? 1 : 0)));
    }
    for (let s = 0; s <= 60; s += 10) {
      nodes.push(svg("text", { x: x(start + s * 1000), y: H - 6, "text-anchor": s === 0 ? "start" : s === 60 ? "end" : "middle" },
        s === 60 ? "now" : "−" + (60 - s) + " s"));
    }
    for (const c of caps) if (c <= hi) nodes.push(svg("line", { class: "cap", x1: L, x2: W - R, y1: y(c), y2: y(c) }));
    legend.replaceChildren();
    keys.forEach((k, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = series[k].filter((p) => p.t >= start);
      if (pts.length > 1) {
        let d = "";
        for (const p of pts) d += (d ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p.mw).toFixed(1);
        nodes.push(svg("path", { class: "series", d: d, stroke: color, "data-site": k }));
      }
      const item = el("span"), sw = el("i");
      sw.style.background = color;
      item.append(sw, document.createTextNode(k));
      legend.append(item);
    });
    if (caps.some((c) => c <= hi)) {
      const item = el("span", "muted"), sw = el("i"); sw.style.background = "#ff5c5c";
      item.append(sw, document.createTextNode("capacity")); legend.append(item);
    }
    chart.replaceChildren(...nodes);
  }
  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
  }

  function render(snap) {
    lastAt = Date.now();
    windowMs = snap.window_ms || 1000;
    if (!(Date.parse(snap.at) > 0) || !((snap.sites || []).length + (snap.halls || []).length)) {
      // alerts has not aggregated its first window yet
      setConn("wait", "waiting for the first window");
      return;
    }
    renderKPIs(snap);
    renderDomains(snap);
    renderAlerts(snap);
    renderChart(snap);
    const at = new Date(snap.at);
    set("updated", isFinite(at) ? at.toISOString().substring(11, 19) + " UTC" : "—");
    setConn("ok", "live");
  }
  function setConn(state, text) { const c = $("conn"); c.className = "conn conn-" + state; c.textContent = text; }

  function connect() {
    const es = new EventSource("events");
    es.addEventListener("snapshot", (ev) => {
      try { render(JSON.parse(ev.data)); } catch (e) { console.error("megawatch: bad snapshot", e); }
    });
    es.onerror = () => setConn("down", "disconnected — retrying");
  }
  setInterval(() => {
    if (lastAt && Date.now() - lastAt > Math.max(5000, 5 * windowMs)) setConn("down", "stale — no update for " + Math.round((Date.now() - lastAt) / 1000) + " s");
  }, 1000);
  connect();
})();

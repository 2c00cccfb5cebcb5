// spillway console: read-only. Every data request is an ordinary API call, SigV4-signed in this
// browser (sigv4.js) with the key typed into the sign-in form; with [auth] mode = "none" the
// calls go unsigned. Nothing here changes anything on the server.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const STORE = "spillway.console.credentials";
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7", "#9c755f", "#bab0ac"];
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- credentials and calls

  let creds = null; // { accessKeyId, secret, region } | null
  let authOff = false; // the server answered an unsigned call: [auth] mode = "none"
  let skewMs = 0; // server clock minus ours, from the Date header (for countdowns)

  function loadCreds() {
    try {
      const c = JSON.parse(sessionStorage.getItem(STORE) || "null");
      return c && c.accessKeyId && c.secret ? c : null;
    } catch (_) {
      return null;
    }
  }

  /** An API error, with AWS's code and message. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code || `HTTP ${status}`);
      this.status = status;
      this.code = code || "";
    }
    toString() {
      return this.code ? `${this.code}: ${this.message}` : this.message;
    }
  }

  async function send(req, service) {
    const signed = creds && !authOff ? await SigV4.sign(req, creds, service) : SigV4.unsigned(req);
    let resp;
    try {
      resp = await fetch(signed.url, {
        method: req.method,
        headers: signed.headers,
        body: req.method === "GET" ? undefined : req.body,
        credentials: "omit",
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "NetworkError", `spillway did not answer (${e.message})`);
    }
    const date = Date.parse(resp.headers.get("date") || "");
    if (!Number.isNaN(date)) {
      const skew = date - Date.now();
      skewMs = Math.abs(skew) > 2000 ? skew : 0;
    }
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : {};
    } catch (_) {
      body = { message: text };
    }
    if (!resp.ok) {
      const type = (body && (body.__type || body.code || body.Code)) || resp.headers.get("x-amzn-errortype") || "";
      const code = String(type).split("#").pop().split(":")[0];
      const message = body && (body.message || body.Message);
      throw new ApiError(resp.status, code, message || `HTTP ${resp.status}`);
    }
    return body;
  }

  const api = {
    sagemaker(op, input) {
      return send(
        {
          method: "POST",
          segments: [],
          headers: { "content-type": "application/x-amz-json-1.1", "x-amz-target": "SageMaker." + op },
          body: JSON.stringify(input || {}),
        },
        "sagemaker"
      );
    },
    cloudwatch(op, input) {
      return send(
        {
          method: "POST",
          segments: [],
          headers: { "content-type": "application/x-amz-json-1.0", "x-amz-target": "GraniteServiceVersion20100801." + op },
          body: JSON.stringify(input || {}),
        },
        "monitoring"
      );
    },
    admin(segments, query) {
      return send({ method: "GET", segments: ["_spillway"].concat(segments), query: query || [] }, "spillway");
    },
  };

  // ---------------------------------------------------------------- small helpers

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c.nodeType ? c : String(c));
    return e;
  }

  function show(id, on) {
    $(id).classList.toggle("hidden", !on);
  }

  function setError(id, err) {
    const node = $(id);
    if (!err) {
      node.textContent = "";
      node.classList.add("hidden");
    } else {
      node.textContent = String(err);
      node.classList.remove("hidden");
    }
  }

  function statusClass(s) {
    if (s === "InService") return "ok";
    if (s === "Failed" || s === "OutOfService") return "bad";
    if (s === "RollingBack" || s === "Deleting" || s === "UpdateRollbackFailed") return "warn";
    return "busy";
  }

  function badge(s) {
    return el("span", { class: "badge " + statusClass(s), text: s || "?" });
  }

  function epochOf(t) {
    if (typeof t === "number") return t;
    const p = Date.parse(t);
    return Number.isNaN(p) ? null : p / 1000;
  }

  function clock(t) {
    const s = epochOf(t);
    if (s === null) return "";
    const d = new Date(s * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    // The browser's local time, with its offset from UTC (the CLI and the API speak UTC).
    const off = -d.getTimezoneOffset();
    const zone = off === 0 ? "UTC" : `UTC${off < 0 ? "−" : "+"}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone}`;
  }

  function duration(sec) {
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return `${sec} s`;
    const m = Math.floor(sec / 60);
    if (m < 60) return `${m} min ${sec % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  const money = (v) => (v === null || v === undefined ? "—" : "$" + Number(v).toFixed(Number(v) < 10 ? 3 : 2));

  // A stable colour per instance type, in the order types are first seen on this page.
  const colorIndex = new Map();
  function colorOf(type) {
    if (!colorIndex.has(type)) colorIndex.set(type, colorIndex.size % PALETTE.length);
    return colorIndex.get(type);
  }

  function swatch(type) {
    return el("span", { class: "sw c" + colorOf(type) });
  }

  function notAvailable(err) {
    // The API is not served by this server (an older spillway): 404 UnknownOperationException.
    return err && err.status === 404 && err.code === "UnknownOperationException";
  }

  // ---------------------------------------------------------------- state and routing

  let endpoints = []; // [{name, status, lastModified, describe, instances}]
  let capacity = null;
  let lastUpdate = 0;
  let refreshing = false;
  let timer = null;

  function route() {
    const m = location.hash.match(/^#\/endpoints\/([^/]+)$/);
    return m ? { endpoint: decodeURIComponent(m[1]) } : {};
  }

  // ---------------------------------------------------------------- the endpoint list

  async function loadEndpoints() {
    const names = [];
    let token;
    do {
      const page = await api.sagemaker("ListEndpoints", Object.assign({ MaxResults: 100 }, token ? { NextToken: token } : {}));
      for (const e of page.Endpoints || []) names.push(e);
      token = page.NextToken;
    } while (token && names.length < 500);
    names.sort((a, b) => a.EndpointName.localeCompare(b.EndpointName));
    const out = await Promise.all(
      names.map(async (e) => {
        const row = { name: e.EndpointName, status: e.EndpointStatus, lastModified: e.LastModifiedTime, describe: null, instances: null, error: null };
        try {
          const [d, i] = await Promise.all([
            api.sagemaker("DescribeEndpoint", { EndpointName: e.EndpointName }),
            api.admin(["endpoints", e.EndpointName, "instances"]),
          ]);
          row.describe = d;
          row.status = d.EndpointStatus;
          row.instances = i.instances || [];
        } catch (err) {
          row.error = err;
        }
        return row;
      })
    );
    return out;
  }

  // { type: {InService: n, other: n} } of an endpoint's instances.
  function typeCounts(instances) {
    const c = {};
    for (const i of instances || []) {
      const t = (c[i.instanceType] = c[i.instanceType] || { inService: 0, other: 0 });
      if (i.state === "InService") t.inService++;
      else t.other++;
    }
    return c;
  }

  function typeChips(instances) {
    const span = el("span", { class: "types" });
    const counts = typeCounts(instances);
    for (const t of Object.keys(counts).sort()) {
      const { inService, other } = counts[t];
      span.append(
        el("span", { class: "chip", "data-type": t, "data-in-service": inService, "data-other": other }, swatch(t), `${t} ×${inService}` + (other ? ` (+${other} starting/stopping)` : ""))
      );
    }
    if (!Object.keys(counts).length) span.append(el("span", { class: "muted", text: "no instances" }));
    return span;
  }

  function renderList() {
    const ul = $("endpoint-list");
    const current = route().endpoint;
    ul.replaceChildren(
      ...endpoints.map((e) =>
        el(
          "li",
          { "data-endpoint": e.name },
          el(
            "a",
            { href: "#/endpoints/" + encodeURIComponent(e.name), class: e.name === current ? "current" : "" },
            el("span", { class: "name" }, el("span", { text: e.name }), badge(e.status)),
            typeChips(e.instances)
          )
        )
      )
    );
    if (!endpoints.length) ul.append(el("li", { class: "muted", text: "No endpoints yet." }));
  }

  function renderOverview() {
    const tbody = $("overview-table").querySelector("tbody");
    tbody.replaceChildren(
      ...endpoints.map((e) => {
        const variants = (e.describe && e.describe.ProductionVariants) || [];
        return el(
          "tr",
          { "data-endpoint": e.name },
          el("td", {}, el("a", { href: "#/endpoints/" + encodeURIComponent(e.name), text: e.name })),
          el("td", {}, badge(e.status)),
          el("td", { text: variants.map((v) => `${v.VariantName} (${v.CurrentInstanceCount ?? 0}/${v.DesiredInstanceCount ?? "?"})`).join(", ") }),
          el("td", {}, e.error ? el("span", { class: "error", text: String(e.error) }) : typeChips(e.instances)),
          el("td", { text: clock(e.lastModified) })
        );
      })
    );
    show("overview-empty", endpoints.length === 0);
  }

  // ---------------------------------------------------------------- capacity

  function renderCapacity() {
    const tbody = $("capacity-table").querySelector("tbody");
    const rows = (capacity && capacity.instanceTypes) || [];
    tbody.replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          { "data-type": r.instanceType, "data-availability": r.availability || "" },
          el("td", {}, swatch(r.instanceType), r.instanceType),
          el("td", { class: "num", text: r.slots === null || r.slots === undefined ? "host" : r.slots }),
          el("td", { class: "num", text: r.inUse ?? 0 }),
          el("td", {}, el("span", { class: "badge " + (r.availability === "Available" ? "ok" : r.availability === "BackingOff" ? "warn" : "busy"), text: r.availability || "?" })),
          el("td", { class: "countdown", "data-next-probe": r.nextProbe ?? "" }),
          el("td", { class: "num", text: r.consecutiveFailures ?? "" }),
          el("td", { class: "muted", text: r.reason || "" })
        )
      )
    );
    $("capacity-note").textContent = rows.length ? "" : "No instance type is pinned, in use or backing off.";
    show("capacity-note", !rows.length);
    tick();
  }

  // Countdowns tick here, every second, between refreshes.
  function tick() {
    const now = (Date.now() + skewMs) / 1000;
    for (const td of document.querySelectorAll("td.countdown")) {
      const at = parseFloat(td.getAttribute("data-next-probe"));
      td.textContent = Number.isNaN(at) ? "" : at > now ? duration(at - now) : "probe due";
    }
    if (lastUpdate) $("updated").textContent = `updated ${duration(Date.now() / 1000 - lastUpdate)} ago`;
  }

  // ---------------------------------------------------------------- one endpoint

  let detailFor = null;
  const charts = {}; // id -> {plot, key}

  function renderVariants(d) {
    const tbody = $("variants-table").querySelector("tbody");
    tbody.replaceChildren(
      ...(d.ProductionVariants || []).map((v) => {
        const pools = v.InstancePools
          ? el("span", { class: "types" }, ...v.InstancePools.map((p, i) => el("span", { class: "chip", "data-type": p.InstanceType }, swatch(p.InstanceType), `${i + 1}. ${p.InstanceType}: ${p.CurrentInstanceCount ?? 0}`)))
          : el("span", { class: "muted", text: v.InstanceType || "single type" });
        const st = (v.VariantStatus || []).map((s) => `${s.Status}: ${s.StatusMessage || ""}`).join("; ");
        return el(
          "tr",
          { "data-variant": v.VariantName },
          el("td", { text: v.VariantName }),
          el("td", { class: "num", text: `${v.CurrentInstanceCount ?? 0} / ${v.DesiredInstanceCount ?? "?"}` }),
          el("td", {}, pools),
          el("td", { class: "muted", text: st })
        );
      })
    );
  }

  function renderEvents(events) {
    const iceOnly = $("ice-only").checked;
    const list = (events || [])
      .slice()
      .sort((a, b) => (epochOf(b.time) || 0) - (epochOf(a.time) || 0))
      .filter((e) => !iceOnly || /Launch|Capacity|Migration|Rebalanc/.test(e.kind) || e.result === "InsufficientCapacity")
      .slice(0, 300);
    const tbody = $("events-table").querySelector("tbody");
    tbody.replaceChildren(
      ...list.map((e) =>
        el(
          "tr",
          {
            class: e.result === "InsufficientCapacity" ? "ice" : e.result === "Failed" ? "fail" : "",
            "data-kind": e.kind,
            "data-result": e.result || "",
            "data-type": e.instanceType || "",
          },
          el("td", { text: clock(e.time) }),
          el("td", { text: e.kind }),
          el("td", { text: e.variantName || "" }),
          el("td", {}, e.instanceType ? swatch(e.instanceType) : null, e.instanceType || ""),
          el("td", { text: e.result || "" }),
          el("td", { text: e.message || "" })
        )
      )
    );
    $("events-note").textContent = list.length ? "" : "No events.";
    show("events-note", !list.length);
  }

  function renderExplain(result) {
    const box = $("explain");
    if (result instanceof Error) {
      box.replaceChildren(el("p", { class: notAvailable(result) ? "muted" : "error", text: notAvailable(result) ? "Not available: this server has no explain API (GET /_spillway/endpoints/{name}/explain)." : String(result) }));
      return;
    }
    const summary = result.summary || [];
    box.replaceChildren(
      el("ul", { id: "explain-summary" }, ...summary.map((s) => el("li", { text: s }))),
      el("details", {}, el("summary", { text: "evidence" }), el("pre", { text: JSON.stringify(result.variants || [], null, 2) }))
    );
  }

  function renderCost(result) {
    const box = $("cost");
    if (result instanceof Error) {
      box.replaceChildren(el("p", { class: notAvailable(result) ? "muted" : "error", text: notAvailable(result) ? "Not available: this server has no cost API (GET /_spillway/cost)." : String(result) }));
      return;
    }
    const ep = (result.endpoints || [])[0];
    if (!ep) {
      box.replaceChildren(el("p", { class: "muted", text: "No cost recorded for this endpoint." }));
      return;
    }
    const rows = (ep.types || []).map((t) =>
      el(
        "tr",
        { "data-type": t.instanceType },
        el("td", {}, swatch(t.instanceType), t.instanceType),
        el("td", { class: "num", text: t.current ?? 0 }),
        el("td", { class: "num", text: money(t.priceUsdPerHour) }),
        el("td", { class: "num", text: t.priceUsdPerHour === null || t.priceUsdPerHour === undefined ? "—" : money((t.current || 0) * t.priceUsdPerHour) }),
        el("td", { class: "num", text: Number(t.instanceHours || 0).toFixed(2) }),
        el("td", { class: "num", text: money(t.costUsd) })
      )
    );
    const ceiling = ep.maxHourlyCostUsd === null || ep.maxHourlyCostUsd === undefined ? "none" : money(ep.maxHourlyCostUsd) + "/h";
    box.replaceChildren(
      el("p", {}, el("strong", { text: money(ep.hourlyCostUsd) + " per hour now" }), el("span", { class: "muted", text: ` · ceiling ${ceiling}` })),
      el(
        "table",
        { class: "grid" },
        el("thead", {}, el("tr", {}, ...["Type", "Now", "Price/h", "Cost/h now", "Instance-hours (24 h)", "Cost (24 h)"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows)
      ),
      el("p", { class: "muted small", text: `Last 24 h: ${money(ep.costUsd)}; on preferred types only ${money(ep.allPreferredCostUsd)}; fallback cost ${ep.fallbackCostUsd < 0 ? "−" : "+"}${money(Math.abs(ep.fallbackCostUsd))}.` })
    );
  }

  // ---- charts

  function metricQuery(id, name, endpoint, variant, type, stat, period) {
    return {
      Id: id,
      MetricStat: {
        Metric: {
          Namespace: "AWS/SageMaker",
          MetricName: name,
          Dimensions: [
            { Name: "EndpointName", Value: endpoint },
            { Name: "VariantName", Value: variant },
            { Name: "InstanceType", Value: type },
          ],
        },
        Period: period,
        Stat: stat,
      },
      ReturnData: true,
    };
  }

  // The {variant, type} series of an endpoint's fleet metric.
  async function fleetSeries(endpoint) {
    const out = [];
    let token;
    do {
      const page = await api.cloudwatch(
        "ListMetrics",
        Object.assign({ Namespace: "AWS/SageMaker", MetricName: "InstanceCount", Dimensions: [{ Name: "EndpointName", Value: endpoint }] }, token ? { NextToken: token } : {})
      );
      for (const m of page.Metrics || []) {
        const dim = Object.fromEntries((m.Dimensions || []).map((d) => [d.Name, d.Value]));
        if (dim.InstanceType && dim.VariantName) out.push({ variant: dim.VariantName, type: dim.InstanceType });
      }
      token = page.NextToken;
    } while (token && out.length < 200);
    return out;
  }

  async function metricData(queries, start, end) {
    const results = {};
    for (let i = 0; i < queries.length; i += 500) {
      let token;
      do {
        const page = await api.cloudwatch(
          "GetMetricData",
          Object.assign({ MetricDataQueries: queries.slice(i, i + 500), StartTime: start, EndTime: end, ScanBy: "TimestampAscending" }, token ? { NextToken: token } : {})
        );
        for (const r of page.MetricDataResults || []) {
          const acc = (results[r.Id] = results[r.Id] || { t: [], v: [] });
          (r.Timestamps || []).forEach((t, k) => {
            acc.t.push(epochOf(t));
            acc.v.push(r.Values[k]);
          });
        }
        token = page.NextToken;
      } while (token);
    }
    return results;
  }

  // Per type: {time: value} summed over variants (how = "sum") or averaged ("avg").
  function byType(series, results, prefix, how) {
    const types = {};
    series.forEach((s, i) => {
      const r = results[prefix + i];
      if (!r) return;
      const acc = (types[s.type] = types[s.type] || {});
      r.t.forEach((t, k) => {
        const cur = acc[t] || { sum: 0, n: 0 };
        cur.sum += r.v[k];
        cur.n += 1;
        acc[t] = cur;
      });
    });
    const out = {};
    for (const [type, points] of Object.entries(types)) {
      out[type] = {};
      for (const [t, { sum, n }] of Object.entries(points)) out[type][t] = how === "avg" ? sum / n : sum;
    }
    return out;
  }

  function plotWidth(id) {
    return Math.max(300, $(id).clientWidth || 600);
  }

  function drawChart(id, key, opts, data) {
    const holder = $(id);
    const existing = charts[id];
    if (existing && existing.key === key) {
      existing.plot.setData(data);
      if (existing.plot.width !== plotWidth(id)) existing.plot.setSize({ width: plotWidth(id), height: existing.plot.height });
      return;
    }
    if (existing) existing.plot.destroy();
    holder.replaceChildren();
    const plot = new uPlot(Object.assign({ width: plotWidth(id), legend: { show: false }, cursor: { drag: { x: false, y: false } } }, opts), data, holder);
    charts[id] = { plot, key };
  }

  function clearChart(id, noteId, note) {
    if (charts[id]) {
      charts[id].plot.destroy();
      delete charts[id];
    }
    $(id).replaceChildren();
    $(id).removeAttribute("data-x-min");
    $(id).removeAttribute("data-x-max");
    $(noteId).textContent = note;
    show(noteId, !!note);
  }

  // Local clock time on the x axis: HH:MM, with seconds when the span is under 10 minutes.
  function timeTicks(u, splits) {
    const span = (u.scales.x.max || 0) - (u.scales.x.min || 0);
    const pad = (n) => String(n).padStart(2, "0");
    return splits.map((v) => {
      const d = new Date(v * 1000);
      return `${pad(d.getHours())}:${pad(d.getMinutes())}` + (span < 600 ? `:${pad(d.getSeconds())}` : "");
    });
  }

  // x spans exactly the samples (what the fleet chart's data-x-min/-max say); one sample gets
  // a minute either side.
  const xScale = { time: true, range: (u, min, max) => (min === max ? [min - 60, max + 60] : [min, max]) };

  const axes = (label) => [
    { stroke: "#8b949e", grid: { stroke: "#21262d" }, ticks: { stroke: "#30363d" }, values: timeTicks, space: 70 },
    { stroke: "#8b949e", grid: { stroke: "#21262d" }, ticks: { stroke: "#30363d" }, label, size: 50 },
  ];

  function renderFleet(order, perType, times, ranked = []) {
    // Stacked: series k is the sum of types 0..k; drawn from the top (all types) down, each
    // filled to 0 in its type's colour, so each band shows the colour of the type it counts.
    const rows = order.map((t) => times.map((x) => perType[t][x] || 0));
    const cum = [];
    rows.forEach((r, k) => cum.push(r.map((v, i) => v + (k ? cum[k - 1][i] : 0))));
    const series = [{}];
    const data = [times];
    for (let k = order.length - 1; k >= 0; k--) {
      const c = PALETTE[colorOf(order[k])];
      series.push({ label: order[k], stroke: c, fill: c, width: 1, points: { show: false }, paths: uPlot.paths.stepped({ align: 1 }) });
      data.push(cum[k]);
    }
    drawChart(
      "fleet-chart",
      "fleet:" + order.join(","),
      {
        height: 240,
        series,
        axes: axes("instances"),
        scales: {
          // y starts at 0
          x: xScale,
          y: { range: (u, min, max) => [0, Math.max(1, Math.ceil(max))] },
        },
      },
      data
    );
    $("fleet-chart").setAttribute("data-x-min", String(times[0]));
    $("fleet-chart").setAttribute("data-x-max", String(times[times.length - 1]));
    const legend = $("fleet-legend");
    legend.replaceChildren(
      ...order.map((t, k) => {
        const last = rows[k].length ? rows[k][rows[k].length - 1] : 0;
        // Each type with its pool priority, so the preferred one (1) and the fallbacks read at a glance.
        const rank = ranked.indexOf(t);
        const label = rank < 0 ? t : `${rank + 1}. ${t}${rank === 0 ? " (preferred)" : ""}`;
        return el("span", { class: "item", "data-type": t, "data-color": PALETTE[colorOf(t)], "data-latest": last }, swatch(t), `${label}: ${Number(last.toFixed(2))}`);
      })
    );
  }

  // Lines per type on the fleet chart's time axis (`times`), so the three charts line up.
  function renderLines(id, noteId, perType, order, unit, scale, times) {
    const any = order.some((t) => Object.keys(perType[t] || {}).length);
    if (!any || !times.length) {
      clearChart(id, noteId, "No data in this window.");
      return;
    }
    show(noteId, false);
    const series = [{}];
    const data = [times];
    for (const t of order) {
      const c = PALETTE[colorOf(t)];
      const values = times.map((x) => (perType[t] && perType[t][x] !== undefined ? perType[t][x] * scale : null));
      const n = values.filter((v) => v !== null).length;
      // points where there are few of them (an isolated sample draws no line)
      series.push({ label: t, stroke: c, width: 2, points: { show: n < 40, size: 5 }, spanGaps: false });
      data.push(values);
    }
    drawChart(id, id + ":" + order.join(","), { height: 180, series, axes: axes(unit), scales: { x: xScale } }, data);
  }

  async function loadMetrics(name, describe) {
    const windowS = Number($("window").value) || 900;
    const period = windowS <= 900 ? 5 : windowS <= 3600 ? 20 : 60;
    const end = Math.ceil((Date.now() + skewMs) / 1000);
    const start = end - windowS;
    const series = await fleetSeries(name);
    if (!series.length) {
      clearChart("fleet-chart", "fleet-note", "No fleet samples yet.");
      $("fleet-legend").replaceChildren();
      clearChart("inv-chart", "inv-note", "No data yet.");
      clearChart("lat-chart", "lat-note", "No data yet.");
      return;
    }
    const queries = [];
    series.forEach((s, i) => {
      queries.push(metricQuery("f" + i, "InstanceCount", name, s.variant, s.type, "Average", period));
      queries.push(metricQuery("i" + i, "Invocations", name, s.variant, s.type, "Sum", period));
      queries.push(metricQuery("l" + i, "ModelLatency", name, s.variant, s.type, "Average", period));
    });
    const results = await metricData(queries, start, end);
    // Order types as the endpoint ranks them (preferred first, at the bottom of the stack),
    // then any other type that served.
    const ranked = [];
    for (const v of describe.ProductionVariants || []) for (const p of v.InstancePools || []) if (!ranked.includes(p.InstanceType)) ranked.push(p.InstanceType);
    const types = Array.from(new Set(series.map((s) => s.type)));
    const order = ranked.filter((t) => types.includes(t)).concat(types.filter((t) => !ranked.includes(t)).sort());
    const fleet = byType(series, results, "f", "sum");
    const times = Array.from(new Set(order.flatMap((t) => Object.keys(fleet[t] || {}).map(Number)))).sort((a, b) => a - b);
    for (const t of order) fleet[t] = fleet[t] || {};
    if (!times.length) {
      clearChart("fleet-chart", "fleet-note", "No fleet samples in this window.");
      $("fleet-legend").replaceChildren();
    } else {
      show("fleet-note", false);
      renderFleet(order, fleet, times, ranked);
    }
    const invocations = byType(series, results, "i", "sum");
    const latency = byType(series, results, "l", "avg");
    const all = new Set(times);
    for (const per of [invocations, latency]) for (const t of order) for (const x of Object.keys(per[t] || {})) all.add(Number(x));
    const axis = Array.from(all).sort((a, b) => a - b);
    renderLines("inv-chart", "inv-note", invocations, order, "requests", 1, axis);
    renderLines("lat-chart", "lat-note", latency, order, "ms", 0.001, axis);
  }

  async function loadDetail(name) {
    if (detailFor !== name) {
      detailFor = name;
      for (const id of Object.keys(charts)) clearChart(id, id.replace("chart", "note"), "");
      $("fleet-legend").replaceChildren();
      $("explain").replaceChildren(el("p", { class: "muted", text: "loading…" }));
      $("cost").replaceChildren(el("p", { class: "muted", text: "loading…" }));
      $("events-table").querySelector("tbody").replaceChildren();
    }
    $("ep-name").textContent = name;
    const d = await api.sagemaker("DescribeEndpoint", { EndpointName: name });
    if (detailFor !== name) return;
    const st = $("ep-status");
    st.textContent = d.EndpointStatus;
    st.className = "badge " + statusClass(d.EndpointStatus);
    $("ep-failure").textContent = d.FailureReason || "";
    show("ep-failure", !!d.FailureReason);
    renderVariants(d);
    const settle = (p) => p.then((v) => v, (e) => (e instanceof Error ? e : new Error(String(e))));
    const [events, explain, cost, metrics] = await Promise.all([
      settle(api.admin(["endpoints", name, "events"])),
      settle(api.admin(["endpoints", name, "explain"])),
      settle(api.admin(["cost"], [["since", 86400], ["endpoint", name]])),
      settle(loadMetrics(name, d)),
    ]);
    if (detailFor !== name) return;
    if (events instanceof Error) {
      $("events-table").querySelector("tbody").replaceChildren();
      $("events-note").textContent = String(events);
      show("events-note", true);
    } else {
      renderEvents(events.events);
    }
    renderExplain(explain);
    renderCost(cost);
    if (metrics instanceof Error) {
      clearChart("fleet-chart", "fleet-note", "Metrics: " + String(metrics));
    }
  }

  // ---------------------------------------------------------------- refresh loop

  async function refresh() {
    if (refreshing) return;
    refreshing = true;
    try {
      const r = route();
      let failure = null;
      const [eps, cap] = await Promise.all([
        loadEndpoints().catch((e) => ((failure = e), null)),
        api.admin(["capacity"]).catch((e) => e),
      ]);
      if (failure) {
        setError("list-error", failure);
        if (failure.status === 403 || failure.status === 400 || failure.status === 401) setError("main-error", failure);
      } else {
        setError("list-error", null);
        setError("main-error", null);
        endpoints = eps;
      }
      renderList();
      if (cap instanceof Error) {
        capacity = null;
        renderCapacity();
        $("capacity-note").textContent = String(cap);
        show("capacity-note", true);
      } else {
        capacity = cap;
        renderCapacity();
      }
      show("overview", !r.endpoint);
      show("detail", !!r.endpoint);
      // The capacity view: under the overview, or above an endpoint's event timeline.
      if (r.endpoint) $("events-panel").before($("capacity-panel"));
      else $("overview").after($("capacity-panel"));
      if (!r.endpoint) {
        detailFor = null;
        renderOverview();
      } else {
        try {
          await loadDetail(r.endpoint);
        } catch (e) {
          setError("main-error", e);
        }
      }
      if (!failure) lastUpdate = Date.now() / 1000;
      document.body.setAttribute("data-refreshed", String(Date.now()));
    } finally {
      refreshing = false;
      tick();
    }
  }

  function start() {
    show("signin", false);
    show("app", true);
    show("signout", !authOff);
    $("whoami").textContent = authOff ? "authentication is off on this server ([auth] mode = \"none\")" : `signed in as ${creds.accessKeyId} · ${creds.region}`;
    if (timer) clearInterval(timer);
    timer = setInterval(refresh, REFRESH_MS);
    refresh();
  }

  function signInForm(message) {
    if (timer) clearInterval(timer);
    timer = null;
    show("app", false);
    show("signout", false);
    show("signin", true);
    $("whoami").textContent = "";
    $("updated").textContent = "";
    setError("signin-error", message || null);
    endpoints = [];
    capacity = null;
    renderList();
  }

  async function signIn(event) {
    event.preventDefault();
    const c = { accessKeyId: $("akid").value.trim(), secret: $("secret").value, region: $("region").value.trim() || "us-east-1" };
    if (!window.crypto || !crypto.subtle) {
      setError("signin-error", "This browser offers no WebCrypto here: open the console over https, or on 127.0.0.1 / localhost.");
      return;
    }
    $("signin-button").disabled = true;
    creds = c;
    authOff = false;
    try {
      await api.sagemaker("ListEndpoints", { MaxResults: 1 });
      sessionStorage.setItem(STORE, JSON.stringify(c));
      $("secret").value = "";
      start();
    } catch (e) {
      creds = null;
      signInForm(String(e));
    } finally {
      $("signin-button").disabled = false;
    }
  }

  function signOut() {
    sessionStorage.removeItem(STORE);
    creds = null;
    signInForm(null);
  }

  async function boot() {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    $("window").addEventListener("change", () => {
      for (const id of Object.keys(charts)) clearChart(id, id.replace("chart", "note"), "");
      refresh();
    });
    $("ice-only").addEventListener("change", refresh);
    window.addEventListener("hashchange", refresh);
    window.addEventListener("resize", () => {
      for (const [id, c] of Object.entries(charts)) c.plot.setSize({ width: plotWidth(id), height: c.plot.height });
    });
    setInterval(tick, 1000);
    creds = loadCreds();
    if (creds) {
      $("region").value = creds.region;
      start();
      return;
    }
    // No key: does this server answer unsigned calls ([auth] mode = "none")?
    try {
      await api.sagemaker("ListEndpoints", { MaxResults: 1 });
      authOff = true;
      start();
    } catch (e) {
      signInForm(null);
    }
  }

  document.addEventListener("DOMContentLoaded", boot);
})();

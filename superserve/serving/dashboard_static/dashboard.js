// superserve live dashboard: polls /v2/dashboard/data?since=SEQ and draws on plain canvases.
// No library and no build step: the server ships this file as it is (superserve/serving/dashboard.py).
// What a test reads: #status carries data-polls, data-last-seq, data-batches, data-seconds and
// data-errors; every chart canvas carries data-points (points drawn); #chart-subnets also
// data-distinct (SubNets drawn), data-acc-min and data-acc-max (their accuracy range).
"use strict";

(() => {
  const POLL_MS = 500;
  const MAX_BATCHES = 40000; // the page's own history, beyond the server's ring
  const MAX_SECONDS = 900;
  const TOKEN_KEY = "superserve-dashboard-token";

  const state = {
    since: 0, polls: 0, errors: 0, now: 0, batchesSeen: 0,
    model: null, rank: [], batches: [], seconds: [], S: null, last: null,
    token: sessionStorage.getItem(TOKEN_KEY),
  };
  const $ = (id) => document.getElementById(id);
  // The charts' colours, read once from the style sheet (reading styles per draw forces a
  // style recalculation).
  const palette = getComputedStyle(document.documentElement);
  const colours = {};
  const css = (name) => colours[name] || (colours[name] = palette.getPropertyValue(name).trim());

  // A token in the address's fragment (/dashboard#token=...) never reaches the server's logs;
  // keep it for this tab only and take it out of the address bar.
  const fromHash = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (fromHash) {
    state.token = decodeURIComponent(fromHash[1]);
    sessionStorage.setItem(TOKEN_KEY, state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("token-form").hidden = true;
  });
  // ?window=SECONDS preselects one of the window's choices (a link to a 30-s view, say).
  const asked = new URLSearchParams(location.search).get("window");
  if (asked && [...$("window").options].some((o) => o.value === asked)) $("window").value = asked;
  $("window").addEventListener("change", render);
  window.addEventListener("resize", render);

  function fieldIndex(names) {
    const out = {};
    names.forEach((n, i) => { out[n] = i; });
    return out;
  }

  function ingest(d) {
    if (d.reset) { // a new server behind the same address: its records start over
      state.batches = []; state.seconds = [];
    }
    if (d.model) {
      state.model = d.model;
      const order = d.model.subnets.map((s, i) => i).sort((a, b) => d.model.subnets[a].accuracy - d.model.subnets[b].accuracy);
      state.rank = new Array(order.length);
      order.forEach((subnet, r) => { state.rank[subnet] = r; });
      $("model").textContent = `${d.model.name} · SLO ${d.model.slo_ms} ms · ${d.model.subnets.length} SubNets`;
    }
    const W = fieldIndex(d.batch_fields); // the wire's batch fields
    state.S = fieldIndex(d.second_fields);
    state.now = d.now;
    state.since = d.last_seq;
    state.last = d;
    state.batchesSeen += d.batches.length;
    for (const b of d.batches) state.batches.push([b[W.t_ms] / 1000, b[W.subnet], b[W.size], b[W.queue]]);
    for (const s of d.seconds) state.seconds.push(s);
    if (state.batches.length > MAX_BATCHES * 1.1) state.batches.splice(0, state.batches.length - MAX_BATCHES);
    if (state.seconds.length > MAX_SECONDS * 1.1) state.seconds.splice(0, state.seconds.length - MAX_SECONDS);
  }

  // The page's own batch rows: [time (s, the server's monotonic clock), SubNet, size, queue].
  const B = { t: 0, subnet: 1, size: 2, queue: 3 };

  // --- drawing ----------------------------------------------------------------------------
  const PAD = { left: 52, right: 8, top: 6, bottom: 18 };

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  // Draws every series of `spec` on `canvas`; returns the number of points drawn.
  // spec: {x0, x1, y0, y1, yfmt, yticks?: [[value, label]], series: [{kind: "line"|"dots", xs, ys, color | colors}]}
  function draw(canvas, spec) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pw = w - PAD.left - PAD.right, ph = h - PAD.top - PAD.bottom;
    const y0 = spec.y0, y1 = spec.y1 > spec.y0 ? spec.y1 : spec.y0 + 1;
    const X = (x) => PAD.left + (x - spec.x0) / (spec.x1 - spec.x0) * pw;
    const Y = (y) => PAD.top + (1 - (y - y0) / (y1 - y0)) * ph;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#566270";
    ctx.strokeStyle = "#e6e9ed";
    ctx.lineWidth = 1;
    const yticks = spec.yticks || (() => {
      const step = niceStep(y1 - y0, 4), out = [];
      for (let v = Math.ceil(y0 / step) * step; v <= y1 + 1e-9; v += step) out.push([v, spec.yfmt(v)]);
      return out;
    })();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const [v, label] of yticks) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(PAD.left, y); ctx.lineTo(w - PAD.right, y); ctx.stroke();
      ctx.fillText(label, PAD.left - 4, y);
    }
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const span = spec.x1 - spec.x0, xstep = niceStep(span, 6);
    for (let ago = 0; ago <= span + 1e-9; ago += xstep) {
      const x = Math.round(X(spec.x1 - ago)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, PAD.top); ctx.lineTo(x, PAD.top + ph); ctx.stroke();
      ctx.fillText(ago === 0 ? "now" : `-${ago} s`, Math.min(Math.max(x, PAD.left + 12), w - 16), PAD.top + ph + 3);
    }
    ctx.save();
    ctx.beginPath(); ctx.rect(PAD.left, PAD.top - 2, pw, ph + 4); ctx.clip();
    let points = 0;
    for (const s of spec.series) {
      if (s.kind === "line") {
        ctx.strokeStyle = s.color; ctx.lineWidth = 1.6; ctx.beginPath();
        let open = false;
        for (let i = 0; i < s.xs.length; i++) {
          if (s.ys[i] === null || s.xs[i] < spec.x0) { open = false; continue; }
          const x = X(s.xs[i]), y = Y(s.ys[i]);
          if (open) ctx.lineTo(x, y); else ctx.moveTo(x, y);
          open = true; points++;
        }
        ctx.stroke();
      } else {
        for (let i = 0; i < s.xs.length; i++) {
          if (s.xs[i] < spec.x0) continue;
          ctx.fillStyle = s.colors ? s.colors[i] : s.color;
          ctx.fillRect(X(s.xs[i]) - 2, Y(s.ys[i]) - 2, 4, 4);
          points++;
        }
      }
    }
    ctx.restore();
    canvas.dataset.points = String(points);
    return points;
  }

  function column(rows, i) { return rows.map((r) => r[i]); }

  // Largest / smallest non-null value of several arrays and plain numbers (no spread: a
  // window can hold tens of thousands of batches).
  function extreme(better, parts) {
    let m = null;
    for (const p of parts) for (const v of (Array.isArray(p) ? p : [p])) if (v !== null && (m === null || better(v, m))) m = v;
    return m;
  }
  const maxOf = (...parts) => extreme((a, b) => a > b, parts);
  const minOf = (...parts) => extreme((a, b) => a < b, parts);

  function render() {
    if (!state.last || !state.model) return;
    const span = Number($("window").value);
    const x1 = state.now, x0 = x1 - span;
    const S = state.S;
    const batches = state.batches.filter((b) => b[B.t] >= x0);
    const seconds = state.seconds.filter((s) => s[S.t] >= x0 - 1);
    const bt = column(batches, B.t), st = column(seconds, S.t);
    const maxBatch = state.model.max_batch;
    const palette = [];
    for (let n = 1; n <= maxBatch; n++) palette[n] = `hsl(${220 - 220 * (n - 1) / Math.max(1, maxBatch - 1)}, 70%, 45%)`;

    // The SubNet timeline: one dot per batch at its SubNet's accuracy rank.
    const subnets = state.model.subnets, k = subnets.length;
    const byRank = []; subnets.forEach((s, i) => { byRank[state.rank[i]] = s; });
    const tickRanks = [...new Set([0, Math.round((k - 1) / 4), Math.round((k - 1) / 2), Math.round(3 * (k - 1) / 4), k - 1])];
    const canvas = $("chart-subnets");
    draw(canvas, {
      x0, x1, y0: -0.5, y1: k - 0.5,
      yticks: tickRanks.map((r) => [r, `${(100 * byRank[r].accuracy).toFixed(1)} %`]),
      series: [{ kind: "dots", xs: bt, ys: batches.map((b) => state.rank[b[B.subnet]]),
        colors: batches.map((b) => palette[Math.min(maxBatch, b[B.size])]) }],
    });
    const seen = new Set(batches.map((b) => b[B.subnet]));
    const accs = [...seen].map((i) => subnets[i].accuracy);
    canvas.dataset.distinct = String(seen.size);
    canvas.dataset.accMin = accs.length ? String(minOf(accs)) : "";
    canvas.dataset.accMax = accs.length ? String(maxOf(accs)) : "";

    const col = (name) => seconds.map((s) => s[S[name]]);
    const failed = seconds.map((s) => s[S.shed] + s[S.rejected] + s[S.other]);
    const arrivals = col("arrivals"), inTime = col("in_time"), late = col("late");
    draw($("chart-rate"), {
      x0, x1, y0: 0, y1: maxOf(10, arrivals, inTime, failed) * 1.05, yfmt: (v) => v.toFixed(0),
      series: [{ kind: "line", xs: st, ys: arrivals, color: css("--arrivals") },
        { kind: "line", xs: st, ys: inTime, color: css("--in-time") },
        { kind: "line", xs: st, ys: late, color: css("--late") },
        { kind: "line", xs: st, ys: failed, color: css("--shed") }],
    });
    const bq = column(batches, B.queue), qmax = col("queue_max");
    draw($("chart-queue"), {
      x0, x1, y0: 0, y1: maxOf(4, qmax, bq) * 1.05, yfmt: (v) => v.toFixed(0),
      series: [{ kind: "dots", xs: bt, ys: bq, color: css("--dots") },
        { kind: "line", xs: st, ys: qmax, color: css("--queue") }],
    });
    const attainment = seconds.map((s) => {
      const answered = s[S.in_time] + s[S.late] + s[S.shed] + s[S.rejected] + s[S.other];
      return answered ? s[S.in_time] / answered : null;
    });
    const lowest = minOf(0.9, attainment);
    draw($("chart-attainment"), {
      x0, x1, y0: Math.max(0, Math.floor(lowest * 20) / 20), y1: 1.0, yfmt: (v) => v.toFixed(2),
      series: [{ kind: "line", xs: st, ys: attainment, color: css("--in-time") }],
    });
    const accLo = minOf(subnets.map((s) => s.accuracy)), accHi = maxOf(subnets.map((s) => s.accuracy));
    draw($("chart-accuracy"), {
      x0, x1, y0: accLo * 100, y1: accHi * 100, yfmt: (v) => `${v.toFixed(1)} %`,
      series: [{ kind: "line", xs: st, ys: col("accuracy").map((a) => (a === null ? null : 100 * a)), color: css("--arrivals") }],
    });
    draw($("chart-batch"), {
      x0, x1, y0: 0, y1: maxBatch + 0.5, yfmt: (v) => v.toFixed(0),
      series: [{ kind: "dots", xs: bt, ys: column(batches, B.size), colors: batches.map((b) => palette[Math.min(maxBatch, b[B.size])]) }],
    });
    const speed = col("speed").map((v) => (v > 0 ? v : null));
    draw($("chart-speed"), {
      x0, x1, y0: minOf(0.8, speed) * 0.95, y1: maxOf(1.2, speed) * 1.05, yfmt: (v) => v.toFixed(2),
      series: [{ kind: "line", xs: st, ys: speed, color: css("--speed") }],
    });
    const overhead = col("overhead_ms"), margin = col("margin_ms");
    draw($("chart-margin"), {
      x0, x1, y0: 0, y1: maxOf(1, overhead, margin) * 1.1, yfmt: (v) => v.toFixed(1),
      series: [{ kind: "line", xs: st, ys: overhead, color: css("--overhead") },
        { kind: "line", xs: st, ys: margin, color: css("--margin") }],
    });
    renderTiles(seconds, batches);
    renderTables();
  }

  function renderTiles(seconds, batches) {
    const S = state.S, d = state.last;
    const s = seconds.length ? seconds[seconds.length - 1] : null;
    const b = batches.length ? batches[batches.length - 1] : null;
    const answered = s ? s[S.in_time] + s[S.late] + s[S.shed] + s[S.rejected] + s[S.other] : 0;
    $("tile-rate").textContent = s ? String(s[S.arrivals]) : "-";
    $("tile-queue").textContent = String(d.queue);
    $("tile-attainment").textContent = answered ? (s[S.in_time] / answered).toFixed(4) : "-";
    $("tile-accuracy").textContent = s && s[S.accuracy] !== null ? `${(100 * s[S.accuracy]).toFixed(2)} %` : "-";
    $("tile-subnet").textContent = b ? `${state.model.subnets[b[B.subnet]].id} ×${b[B.size]}` : "-";
    $("tile-speed").textContent = typeof d.calibration.latency_speed_factor === "number" ? d.calibration.latency_speed_factor.toFixed(3) : "-";
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  // Tables are rebuilt only when what they show changed: a DOM change re-lays out the page.
  let shownTables = "";

  function renderTables() {
    const d = state.last;
    const key = JSON.stringify([d.workers, d.calibration, d.policy]);
    if (key === shownTables) return;
    shownTables = key;
    const body = $("workers").tBodies[0];
    body.replaceChildren();
    for (const w of d.workers) {
      const tr = document.createElement("tr");
      cell(tr, String(w.index)); cell(tr, w.state); cell(tr, w.pid === null ? "-" : String(w.pid)); cell(tr, String(w.deaths));
      cell(tr, w.subnet === null ? "" : `${w.subnet} ×${w.batch} for ${w.running_ms} ms`);
      body.appendChild(tr);
    }
    const cal = $("calibration").tBodies[0];
    cal.replaceChildren();
    $("policy").textContent = d.policy;
    for (const [key, value] of Object.entries(d.calibration)) {
      const tr = document.createElement("tr");
      cell(tr, key); cell(tr, String(value));
      cal.appendChild(tr);
    }
  }

  // --- polling ----------------------------------------------------------------------------
  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
    el.dataset.polls = String(state.polls);
    el.dataset.lastSeq = String(state.since);
    el.dataset.batches = String(state.batchesSeen);
    el.dataset.seconds = String(state.seconds.length);
    el.dataset.errors = String(state.errors);
  }

  async function poll() {
    let wait = POLL_MS;
    try {
      const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
      const r = await fetch(`/v2/dashboard/data?since=${state.since}`, { headers, cache: "no-store" });
      if (r.status === 401) {
        $("token-form").hidden = false;
        state.errors++;
        setStatus("this server needs its bearer token (or open /dashboard#token=...)", true);
        wait = 2000;
      } else if (!r.ok) {
        throw new Error(`HTTP ${r.status}`);
      } else {
        ingest(await r.json());
        state.polls++;
        render();
        const d = state.last;
        setStatus(`${d.ready ? "ready" : "not ready"} · ${state.batchesSeen} batches · updated ${new Date().toLocaleTimeString()}`
          + (d.truncated ? " · some records were skipped (polled too rarely)" : ""), false);
      }
    } catch (err) {
      state.errors++;
      setStatus(`no data: ${err.message}; retrying`, true);
      wait = 2000;
    }
    setTimeout(poll, wait);
  }

  poll();
})();

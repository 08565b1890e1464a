// The topology page: plan a pasted cluster (POST /plan) or watch a deployment
// (GET /deployments/{name}), and draw its nodes, links, shares, memory and agents.
// Plain script, no build step, no network beyond this service. Every text from the service or
// the user goes into the DOM as text (textContent / text nodes), never as markup.
"use strict";

(() => {
  const GB = 1e9;
  const POLL_MS = 1500;
  const TOKEN_KEY = "asymtp.token";
  // Link bandwidth where a link leaves it out, Gb/s: as LINK_DEFAULTS in planner/topology.py.
  const LINK_DEFAULTS = { rdma: 80, thunderbolt: 40, ethernet: 10 };
  const LINK_KINDS = Object.keys(LINK_DEFAULTS);
  const STATES = ["idle", "loading", "joining", "ready", "failed"];
  const DEFAULT_CONSTRAINTS = {
    sharding: "auto", parallelism: "auto", context_tokens: 8192, headroom: 0.1, batch_size: 1,
    allow_unused_nodes: true,
  };

  const node = (id, memory_gb, bandwidth_gbps, chip, address) =>
    Object.assign({ id, memory_gb, bandwidth_gbps }, chip ? { chip } : {}, address ? { address } : {});
  const mesh = (ids, kind) =>
    ids.flatMap((a, i) => ids.slice(i + 1).map((b) => ({ a, b, kind })));

  // Presets: the example requests of planner/examples and deploy/examples; their configs are
  // served from /examples/configs.
  const PRESETS = [
    {
      label: "Qwen3-235B 4-bit on M5 Max 128 GB + 48 GB laptop (an equal split does not fit)",
      config: "qwen3-235b-a22b-4bit",
      topology: {
        nodes: [
          node("m5-max", 128, 614, "M5 Max", "169.254.20.1"),
          node("laptop-48", 48, 273, "M4 Pro", "169.254.20.2"),
        ],
        links: [{ a: "m5-max", b: "laptop-48", kind: "thunderbolt", bandwidth_gbps: 40, latency_us: 50 }],
      },
      constraints: { sharding: "auto", context_tokens: 8192 },
    },
    {
      label: "Llama 3.1 70B bf16 on a 96 GB Studio + 64 GB mini + 48 GB laptop",
      config: "llama-3.1-70b-bf16",
      topology: {
        nodes: [
          node("studio-96", 96, 800, "M3 Ultra"),
          node("mini-64", 64, 273, "M4 Pro"),
          node("laptop-48", 48, 300, "M3 Max"),
        ],
        links: [
          { a: "studio-96", b: "mini-64", kind: "thunderbolt", bandwidth_gbps: 40 },
          { a: "studio-96", b: "laptop-48", kind: "thunderbolt", bandwidth_gbps: 40 },
          { a: "mini-64", b: "laptop-48", kind: "ethernet", bandwidth_gbps: 10 },
        ],
      },
      constraints: { context_tokens: 8192 },
    },
    {
      label: "Qwen3-235B 4-bit on M1 Ultra 192 GB + M5 Max 128 GB over RDMA",
      config: "qwen3-235b-a22b-4bit",
      topology: {
        nodes: [
          node("m1-ultra", 192, 800, "M1 Ultra", "169.254.10.1"),
          node("m5-max", 128, 614, "M5 Max", "169.254.10.2"),
        ],
        links: [{ a: "m1-ultra", b: "m5-max", kind: "rdma", bandwidth_gbps: 80, latency_us: 5 }],
      },
      constraints: { context_tokens: 32768 },
    },
    {
      label: "Llama 3.1 70B bf16 on four mixed Macs over RDMA",
      config: "llama-3.1-70b-bf16",
      topology: {
        nodes: [
          node("studio-ultra", 192, 800, "M2 Ultra", "10.0.0.11"),
          node("mbp-m5max", 128, 614, "M5 Max", "10.0.0.12"),
          node("mini-m4pro", 64, 273, "M4 Pro", "10.0.0.13"),
          node("mbp-m3max", 48, 300, "M3 Max", "10.0.0.14"),
        ],
        links: mesh(["studio-ultra", "mbp-m5max", "mini-m4pro", "mbp-m3max"], "rdma"),
      },
      constraints: { context_tokens: 16384 },
    },
    {
      label: "Qwen3-Next 80B 8-bit on M5 Max 128 GB + 48 GB laptop",
      config: "qwen3-next-80b-a3b-8bit",
      topology: {
        nodes: [node("m5-max", 128, 614, "M5 Max"), node("laptop-48", 48, 273, "M4 Pro")],
        links: [{ a: "m5-max", b: "laptop-48", kind: "thunderbolt" }],
      },
      constraints: { allow_unused_nodes: false },
    },
    {
      label: "Llama 3.1 70B bf16 on 32 GB + 16 GB minis (does not fit)",
      config: "llama-3.1-70b-bf16",
      topology: {
        nodes: [node("mini-a", 32, 273), node("mini-b", 16, 120)],
        links: [{ a: "mini-a", b: "mini-b", kind: "ethernet" }],
      },
      constraints: {},
    },
  ];

  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const statusLine = $("status");
  let generation = 0; // bumped by every new plan or watch: late answers of older ones are dropped
  let watchTimer = null;
  let linkLayouts = [];

  // -- DOM helpers ---------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c)); // a string becomes a text node
    }
  }

  function setStatus(text, kind) {
    statusLine.textContent = text;
    statusLine.className = "status" + (kind ? " " + kind : "");
  }

  // -- formatting ----------------------------------------------------------------------------
  const count = (r) => (r ? r[1] - r[0] : 0);
  const span = (r) => `${r[0]}–${r[1]}`;
  const pct = (share) => `${Math.round(share * 100)}%`;
  const ms = (x) => `${x.toFixed(1)} ms`;

  function gb(bytes) {
    const v = bytes / GB;
    const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
    return `${Number(v.toFixed(digits))} GB`;
  }

  function nodeMemory(n) {
    const bytes = (b, g) => (b != null ? b : g != null ? g * GB : null);
    const total = bytes(n.memory_bytes, n.memory_gb) || 0;
    const available = bytes(n.available_bytes, n.available_gb);
    return { total, available: available != null ? available : total };
  }

  /** "57% · 36 q-heads · 74 experts": this rank's share of the model. */
  function shareText(rank, model) {
    const parts = [pct(rank.share), `${count(rank.q_heads)} q-heads`];
    if (rank.experts && (!model || model.experts > 0)) {
      parts.push(`${count(rank.experts)} experts`);
    } else if (count(rank.ffn) > 0 || (model && model.ffn_dim > 0)) {
      parts.push(`${count(rank.ffn)} FFN cols`);
    }
    return parts.join(" · ");
  }

  function rangesText(rank) {
    return [
      ["q-heads", rank.q_heads], ["kv-heads", rank.kv_heads], ["experts", rank.experts],
      ["FFN", rank.ffn], ["linear k", rank.linear_k_heads], ["linear v", rank.linear_v_heads],
    ]
      .filter(([, r]) => r && r[1] > r[0])
      .map(([name, r]) => `${name} ${span(r)}`)
      .join(" · ");
  }

  // A plan's pipeline stages (ranks with the same `layers`), in pipeline order; one for a
  // tensor-parallel plan. Stage 0 holds the embeddings and the output head (protocol/plan.py).
  const stageCount = (plan) => new Set((plan.ranks || []).map((r) => r.stage || 0)).size;
  const layersText = (r) => `layers ${span(r)} (${count(r)})`;

  /** "ranks 0, 1 split 59/41%" or "rank 2 alone": who runs a stage and how it is cut. */
  function stageRanksText(stage, ranks) {
    const members = ranks.filter((r) => stage.ranks.includes(r.rank));
    const total = members.reduce((sum, r) => sum + r.share, 0);
    if (members.length < 2 || total <= 0) return `rank ${stage.ranks.join(", ")} alone`;
    const split = members.map((r) => Math.round((100 * r.share) / total)).join("/");
    return `ranks ${stage.ranks.join(", ")} split ${split}%`;
  }

  /** One stage's line: "stage 0 · layers 0–56 (56) · ranks 0, 1 split 59/41% · 61.3 ms …". */
  function stageText(stage, ranks) {
    return [`stage ${stage.stage}`, layersText(stage.layers), stageRanksText(stage, ranks),
      `${ms(stage.compute_ms)} compute + ${ms(stage.allreduce_ms)} all-reduce + ` +
      `${ms(stage.transfer_ms)} transfer`].join(" · ");
  }

  function linkBandwidth(link) {
    if (link.bandwidth_gbps != null) return `${link.bandwidth_gbps} Gb/s`;
    const d = LINK_DEFAULTS[link.kind || "ethernet"];
    return d ? `${d} Gb/s (default)` : "";
  }

  // Where a figure comes from (`source` on nodes and links): measured by the agents, assumed
  // (a default: the chip table, the link kind's figures), or given by whoever wrote the topology.
  function sourceText(item, given) {
    if (item.source === "measured" || item.source === "assumed") return item.source;
    return item.source === "user" || given ? "given" : "assumed";
  }

  function linkText(link) {
    const given = link.bandwidth_gbps != null || link.latency_us != null;
    const latency = link.source === "measured" && link.latency_us != null ? `${link.latency_us} µs` : "";
    return [link.kind || "ethernet", linkBandwidth(link), latency, sourceText(link, given)]
      .filter(Boolean).join(" · ");
  }

  function errorLines(status, data) {
    const detail = data && data.detail;
    if (Array.isArray(detail)) {
      return detail.map((e) => {
        const loc = (e.loc || []).filter((p) => p !== "body").join(".");
        return loc ? `${loc}: ${e.msg}` : String(e.msg);
      });
    }
    if (typeof detail === "string") return [detail];
    return [`the service answered ${status}`];
  }

  // -- the service ---------------------------------------------------------------------------
  async function call(method, url, body, headers) {
    const init = { method, headers: Object.assign({}, headers), cache: "no-store" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch (e) {
      return { ok: false, status: 0, lines: ["cannot reach the planner service"] };
    }
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (res.ok) return { ok: true, status: res.status, data };
    return { ok: false, status: res.status, data, lines: errorLines(res.status, data) };
  }

  function authHeaders() {
    const token = $("token").value.trim();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  // -- drawing -------------------------------------------------------------------------------
  function alertBox(kind, title, lines, id) {
    return h("div", { class: `alert ${kind}`, id },
      h("h3", {}, title),
      lines.length ? h("ul", {}, lines.map((l) => h("li", {}, l))) : null);
  }

  const SEGMENTS = [
    ["weights", "weights"], ["kv", "KV cache"], ["overhead", "overhead"],
    ["free", "free within budget"], ["headroom", "headroom"],
  ];

  function legend() {
    return h("div", { class: "legend" },
      SEGMENTS.map(([cls, label]) => h("span", {}, h("i", { class: `seg seg-${cls}` }), label)));
  }

  function memoryBar(memory, rank) {
    const m = rank.memory_bytes;
    const values = {
      weights: m.weights, kv: m.kv_cache, overhead: m.overhead,
      free: Math.max(0, rank.budget_bytes - m.total),
      headroom: Math.max(0, memory.total - Math.max(rank.budget_bytes, m.total)),
    };
    const whole = Math.max(memory.total, m.total, rank.budget_bytes) || 1;
    const bar = h("div", { class: "bar", role: "img",
      "aria-label": SEGMENTS.map(([k, label]) => `${label} ${gb(values[k])}`).join(", ") });
    for (const [key, label] of SEGMENTS) {
      const seg = h("span", { class: `seg seg-${key}`, title: `${label}: ${gb(values[key])}` });
      seg.style.width = `${(100 * values[key]) / whole}%`;
      bar.append(seg);
    }
    return h("div", { class: "memory" }, bar,
      h("div", { class: "caption" },
        `${gb(m.total)} used of ${gb(rank.budget_bytes)} budget · node ${gb(memory.total)}`));
  }

  function agentPanel(agent) {
    if (!agent) return h("div", { class: "agent" }, h("span", { class: "state state-none" }, "no report yet"));
    const state = STATES.includes(agent.state) ? agent.state : "unknown";
    const ago = Math.max(0, Date.now() / 1000 - agent.seen_at);
    const panel = h("div", { class: `agent agent-${state}` },
      h("div", {}, h("span", { class: `state state-${state}` }, state),
        h("span", { class: "seen" }, ` seen ${ago < 90 ? `${Math.round(ago)} s` : `${Math.round(ago / 60)} min`} ago`),
        agent.rank != null ? h("span", { class: "seen" }, ` · rank ${agent.rank}`) : null));
    if (state === "loading" || state === "joining") {
      const p = agent.progress != null ? agent.progress : 0;
      const fill = h("span", {});
      fill.style.width = `${100 * p}%`;
      panel.append(h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0,
        "aria-valuemax": 100, "aria-valuenow": Math.round(p * 100) }, fill),
        h("div", { class: "progress-text" }, agent.progress != null ? `${Math.round(p * 100)}%` : "…"));
    }
    if (agent.detail) panel.append(h("div", { class: "detail" }, agent.detail));
    const m = agent.facts && agent.facts.measurements;
    if (m) {
      const memory = m.memory_bandwidth_gbps != null ? `memory ${m.memory_bandwidth_gbps} GB/s` : "memory not measured";
      const at = new Date(m.measured_at * 1000).toLocaleTimeString();
      panel.append(h("div", { class: "measured" },
        `measured ${at}: ${memory} · ${m.links.length} link(s) in ${m.took_s} s`));
    }
    if (state === "ready" && agent.serving) {
      const safe = /^https?:\/\//i.test(agent.serving);
      panel.append(h("div", { class: "serving" }, "serving ",
        safe ? h("a", { href: agent.serving, target: "_blank", rel: "noopener noreferrer" }, agent.serving)
          : h("code", {}, agent.serving)));
    }
    if (state === "failed") panel.append(h("div", { class: "reason" }, agent.reason || "failed (no reason given)"));
    if (agent.restarts) panel.append(h("div", { class: "detail" }, `restarted ${agent.restarts}×`));
    if (agent.last_failure && agent.last_failure !== agent.reason) {
      panel.append(h("div", { class: "detail" }, `last failure: ${agent.last_failure}`));
    }
    return panel;
  }

  const rankBadge = (rank, plan) =>
    stageCount(plan) > 1 ? `rank ${rank.rank} · stage ${rank.stage}` : `rank ${rank.rank}`;

  function nodeBox(n, rank, plan, agents) {
    const memory = nodeMemory(n);
    const est = plan.estimates;
    const box = h("div", { class: "node" + (rank ? "" : " unused"), "data-node": n.id },
      h("div", { class: "node-head" },
        h("strong", { class: "node-id" }, n.id),
        h("span", { class: "badge" }, rank ? rankBadge(rank, plan) : "not used")),
      h("div", { class: "meta" },
        [n.chip, gb(memory.total), `${n.bandwidth_gbps} GB/s ${sourceText(n, true)}`, n.address]
          .filter(Boolean).join(" · ")),
      memory.available !== memory.total ? h("div", { class: "meta" }, `${gb(memory.available)} available`) : null);
    if (rank) {
      const bottleneck = est && est.bottleneck_rank === rank.rank;
      box.append(
        stageCount(plan) > 1 ? h("div", { class: "layers" }, layersText(rank.layers)) : null,
        h("div", { class: "share" }, shareText(rank, plan.model)),
        h("div", { class: "ranges" }, rangesText(rank)),
        memoryBar(memory, rank),
        h("div", { class: "decode" + (bottleneck ? " bottleneck" : "") },
          `reads its weights in ${ms(rank.decode_ms)} per token${bottleneck ? " (slowest)" : ""}`));
    } else {
      box.append(h("div", { class: "share muted" },
        plan.feasible ? "no share: faster without it" : "no plan"));
    }
    if (agents) box.append(agentPanel(agents[n.id]));
    return box;
  }

  /** The cluster: node boxes (ring or pipeline order first) sized by memory, links beneath. */
  function cluster(topology, plan, agents) {
    const nodes = topology.nodes || [];
    const links = topology.links || [];
    const ranks = new Map((plan.ranks || []).map((r) => [r.node_id, r]));
    // A pipeline in rank order (stage after stage), a single stage in its ring order.
    const ring = stageCount(plan) > 1 ? [...(plan.ranks || [])].sort((a, b) => a.rank - b.rank)
      .map((r) => r.node_id) : plan.ring || [];
    const ordered = [
      ...ring.map((id) => nodes.find((n) => n.id === id)).filter(Boolean),
      ...nodes.filter((n) => !ring.includes(n.id)),
    ];
    const largest = Math.max(1, ...ordered.map((n) => nodeMemory(n).total));
    const row = h("div", { class: "nodes" });
    for (const n of ordered) {
      const box = nodeBox(n, ranks.get(n.id), plan, agents);
      box.style.flexGrow = String(Math.max(0.05, nodeMemory(n).total / largest));
      row.append(box);
    }
    const drawing = svg("svg", { class: "links", "aria-hidden": "true" });
    linkLayouts.push({ row, drawing, links });
    const list = h("ul", { class: "link-list" },
      links.map((l) => h("li", { "data-source": sourceText(l, l.bandwidth_gbps != null) },
        h("b", {}, `${l.a} ⇄ ${l.b}`), ` ${linkText(l)}`,
        l.latency_us != null && l.source !== "measured" ? ` · ${l.latency_us} µs` : "")));
    return h("section", { class: "cluster" }, legend(), row, drawing,
      links.length ? list : h("p", { class: "muted" }, "no links"));
  }

  /** Arcs under the boxes, one per link, labelled by kind and bandwidth (one row of boxes). */
  function layoutLinks({ row, drawing, links }) {
    drawing.replaceChildren();
    const boxes = [...row.querySelectorAll(".node")];
    const where = new Map(boxes.map((el, i) => [el.getAttribute("data-node"), i]));
    const oneRow = new Set(boxes.map((el) => el.offsetTop)).size === 1;
    const drawn = links.filter((l) => where.has(l.a) && where.has(l.b));
    if (!oneRow || !drawn.length) {
      drawing.style.display = "none";
      return;
    }
    drawing.style.display = "";
    const base = row.getBoundingClientRect();
    const cx = (i) => {
      const r = boxes[i].getBoundingClientRect();
      return r.left - base.left + r.width / 2;
    };
    const step = 26;
    const widest = Math.max(...drawn.map((l) => Math.abs(where.get(l.a) - where.get(l.b))));
    const height = 24 + widest * step;
    drawing.setAttribute("width", String(base.width));
    drawing.setAttribute("height", String(height));
    drawing.setAttribute("viewBox", `0 0 ${base.width} ${height}`);
    for (const l of drawn) {
      const [i, j] = [where.get(l.a), where.get(l.b)];
      const x1 = cx(i), x2 = cx(j);
      const apex = Math.abs(i - j) * step - 6;
      const kind = LINK_KINDS.includes(l.kind) ? l.kind : "ethernet";
      const depth = apex / 0.75; // a cubic with both controls at `depth` peaks at 3/4 of it
      drawing.append(
        svg("path", { class: `link link-${kind}`, d: `M ${x1} 0 C ${x1} ${depth}, ${x2} ${depth}, ${x2} 0` }),
        svg("text", { class: "link-label", x: (x1 + x2) / 2, y: apex + 14, "text-anchor": "middle" }, linkText(l)));
    }
  }

  function relayout() {
    linkLayouts = linkLayouts.filter((l) => l.row.isConnected);
    linkLayouts.forEach(layoutLinks);
  }

  /** A pipeline's stages, one line each, and what the hops between them cost. */
  function stageList(plan, est) {
    const stages = est.stages || [];
    return h("section", { id: "stages", class: "stages" },
      h("h3", {}, `${stages.length} pipeline stages`),
      h("ul", {}, stages.map((s) => h("li", { class: "stage" }, stageText(s, plan.ranks)))),
      h("p", { class: "muted" },
        `${ms(est.transfer_ms)} of activation transfers per token (the last stage sends back to ` +
        `stage 0, which holds the output head); bound ${ms(est.fluid_bound_ms)}`));
  }

  function planSummary(plan) {
    const parts = [];
    const est = plan.estimates;
    if (!plan.feasible) {
      parts.push(alertBox("error", "Does not fit", plan.reasons || [], "reasons"));
    } else {
      const head = [`${plan.sharding} split`, plan.status];
      if (stageCount(plan) > 1) head.splice(1, 0, `${stageCount(plan)} stages`);
      if (est) head.unshift(`${ms(est.decode_ms_per_token)}/token · ${est.tokens_per_s.toFixed(1)} tokens/s`);
      parts.push(h("h2", { class: "headline" }, head.join(" · ")));
      if (est && stageCount(plan) > 1) {
        parts.push(stageList(plan, est));
      } else if (est) {
        parts.push(h("p", { class: "muted" },
          `slowest rank ${est.bottleneck_rank}: ${ms(est.compute_ms)} reading weights + ${ms(est.allreduce_ms)} all-reduce; ` +
          `bound ${ms(est.fluid_bound_ms)}`));
      }
      if (plan.ring && plan.ring.length > 1 && stageCount(plan) === 1) {
        parts.push(h("p", { class: "ring" }, "ring ", [...plan.ring, plan.ring[0]].join(" → ")));
      }
    }
    if (plan.warnings && plan.warnings.length) parts.push(alertBox("warn", "Warnings", plan.warnings));
    if (plan.model) {
      const m = plan.model;
      parts.push(h("p", { class: "muted" },
        `${m.model_type}: ${m.num_layers} layers, ${m.q_heads} q-heads / ${m.kv_heads} kv-heads` +
        (m.experts ? `, ${m.experts} experts` : "") + `, ${gb(m.weight_bytes)} of weights` +
        (m.bits ? ` (${m.bits}-bit)` : "")));
    }
    parts.push(h("p", { class: "plan-id" }, `plan ${plan.plan_id.slice(0, 12)} · solved in ${Math.round(plan.solver.wall_ms)} ms`));
    return parts;
  }

  function equalSplit(plan) {
    const est = plan.estimates;
    if (!plan.feasible || plan.sharding === "equal" || !est) return null;
    if (est.equal_split_decode_ms != null) {
      return h("div", { class: "alert info", id: "equal-split" },
        h("h3", {}, "An equal split fits too"),
        h("p", {}, `${ms(est.equal_split_decode_ms)}/token evenly, ${ms(est.decode_ms_per_token)}/token with this plan`));
    }
    return h("div", { class: "alert info", id: "equal-split" }, h("h3", {}, "Checking an equal split…"));
  }

  function show(...children) {
    view.replaceChildren(...children.flat().filter(Boolean));
    relayout();
  }

  // -- plan a pasted cluster -----------------------------------------------------------------
  function readJSON(id, what) {
    const text = $(id).value.trim();
    if (!text) throw new Error(`${what}: paste it first`);
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Error(`${what} is not JSON: ${e.message}`);
    }
  }

  function readRequest() {
    let topology = readJSON("topology", "Topology");
    if (topology && typeof topology === "object" && topology.topology) topology = topology.topology;
    const model = readJSON("model", "config.json");
    const constraints = { sharding: $("sharding").value, parallelism: $("parallelism").value };
    const number = (id, key) => {
      const v = $(id).value.trim();
      if (v !== "") constraints[key] = Number(v);
    };
    number("context-tokens", "context_tokens");
    number("headroom", "headroom");
    number("batch-size", "batch_size");
    constraints.allow_unused_nodes = $("allow-unused").checked;
    return { topology, model, constraints };
  }

  async function submitPlan(event) {
    event.preventDefault();
    stopWatch();
    const gen = ++generation;
    let body;
    try {
      body = readRequest();
    } catch (e) {
      setStatus(e.message, "error");
      show(alertBox("error", "Cannot plan this", [e.message]));
      return;
    }
    setStatus("Planning…");
    $("plan-button").disabled = true;
    const res = await call("POST", "/plan", body);
    $("plan-button").disabled = false;
    if (gen !== generation) return;
    if (!res.ok) {
      setStatus(`The request was refused (${res.status}).`, "error");
      show(alertBox("error", "The planner refused this request", res.lines));
      return;
    }
    const plan = res.data;
    setStatus(plan.feasible ? "Planned." : "No plan fits these nodes.", plan.feasible ? "" : "error");
    const pending = equalSplit(plan);
    show(planSummary(plan), pending, cluster(body.topology, plan, null));
    if (!pending || plan.estimates.equal_split_decode_ms != null) return;
    const equalBody = Object.assign({}, body, { constraints: Object.assign({}, body.constraints, { sharding: "equal" }) });
    const eq = await call("POST", "/plan", equalBody);
    if (gen !== generation) return;
    let box;
    if (!eq.ok) box = alertBox("warn", "Could not check an equal split", eq.lines);
    else if (eq.data.feasible) box = alertBox("info", "An equal split fits too", []);
    else box = alertBox("warn", "Why an equal split fails", eq.data.reasons || []);
    box.id = "equal-split";
    pending.replaceWith(box);
  }

  async function pickPreset() {
    const preset = PRESETS[Number($("preset").value)];
    if (!preset) return;
    const res = await call("GET", `/examples/configs/${encodeURIComponent(preset.config)}.json`);
    if (!res.ok) {
      setStatus(`Could not load ${preset.config}.json (${res.status}).`, "error");
      return;
    }
    $("topology").value = JSON.stringify(preset.topology, null, 2);
    $("model").value = JSON.stringify(res.data, null, 2);
    const c = Object.assign({}, DEFAULT_CONSTRAINTS, preset.constraints);
    $("sharding").value = c.sharding;
    $("parallelism").value = c.parallelism;
    $("context-tokens").value = String(c.context_tokens);
    $("headroom").value = String(c.headroom);
    $("batch-size").value = String(c.batch_size);
    $("allow-unused").checked = c.allow_unused_nodes;
    setStatus(`Loaded: ${preset.label}. Plan it, or edit it first.`);
  }

  // -- the doctor: what an RDMA mesh needs (GET /deployments/{name}/doctor) -------------------
  const doctorPanel = h("section", { id: "doctor", class: "doctor" });

  function doctorFindings(report) {
    const items = report.findings.map((f) =>
      h("li", { class: `finding finding-${f.severity}` },
        h("span", { class: "severity" }, f.severity), ` ${f.message}`,
        f.fix ? h("div", { class: "fix" }, `fix: ${f.fix}`) : null));
    const verdict = report.rdma_possible
      ? "RDMA can work"
      : "RDMA cannot work: the plan will use the TCP ring";
    return [h("ul", { class: "findings" }, items),
      h("p", { class: "verdict" }, report.cost ? `${verdict}: ${report.cost.message}` : verdict)];
  }

  async function refreshDoctor(name, gen) {
    doctorPanel.replaceChildren(h("h3", {}, "Doctor: RDMA mesh"), h("p", { class: "muted" }, "checking…"));
    const res = await call("GET", `/deployments/${encodeURIComponent(name)}/doctor`, undefined, authHeaders());
    if (gen !== generation) return;
    const again = h("button", { type: "button", class: "measure-again" }, "Measure again");
    again.addEventListener("click", async () => {
      await call("POST", `/deployments/${encodeURIComponent(name)}/measure`, undefined, authHeaders());
      setTimeout(() => refreshDoctor(name, gen), 12000); // agents measure within 10 s
    });
    const body = res.ok ? doctorFindings(res.data)
      : [h("p", { class: "muted" }, res.status === 404 ? "no agent has reported its facts yet" : res.lines.join("; "))];
    doctorPanel.replaceChildren(h("h3", {}, "Doctor: RDMA mesh"), ...body, again);
  }

  // -- watch a deployment --------------------------------------------------------------------
  function stopWatch() {
    if (watchTimer !== null) clearTimeout(watchTimer);
    watchTimer = null;
    $("stop-button").disabled = true;
  }

  async function poll(name, gen) {
    const res = await call("GET", `/deployments/${encodeURIComponent(name)}`, undefined, authHeaders());
    if (gen !== generation) return;
    if (res.status === 401 || res.status === 403) {
      stopWatch();
      setStatus(`Not allowed to read ${name}: check the token.`, "error");
      show(alertBox("error", `Not allowed (${res.status})`, res.lines));
      return;
    }
    if (res.ok) {
      const d = res.data;
      const updated = new Date(d.updated_at * 1000).toLocaleTimeString();
      setStatus(`Watching ${d.name}: refreshed ${new Date().toLocaleTimeString()}.`);
      const strays = Object.keys(d.agents || {}).filter((id) => !d.spec.topology.nodes.some((n) => n.id === id));
      show(
        h("h2", { class: "deployment-title" }, `${d.name} · revision ${d.revision}`),
        h("p", { class: "muted" }, `model ${d.spec.model_path} · published ${updated}`),
        planSummary(d.plan),
        cluster(d.spec.topology, d.plan, d.agents || {}),
        strays.length ? h("section", { class: "strays" }, h("h3", {}, "Agents outside this topology"),
          h("div", { class: "nodes" }, strays.map((id) =>
            h("div", { class: "node unused", "data-node": id },
              h("div", { class: "node-head" }, h("strong", { class: "node-id" }, id)),
              agentPanel(d.agents[id]))))) : null,
        doctorPanel);
    } else if (res.status === 404) {
      setStatus(`No deployment named ${name} yet; still looking.`, "error");
      show(alertBox("warn", `No deployment named ${name}`, res.lines));
    } else {
      setStatus(`The service answered ${res.status}; retrying.`, "error");
    }
    watchTimer = setTimeout(() => poll(name, gen), POLL_MS);
  }

  function startWatch(name) {
    stopWatch();
    const gen = ++generation;
    $("stop-button").disabled = false;
    setStatus(`Loading ${name}…`);
    history.replaceState(null, "", `#deployment=${encodeURIComponent(name)}`);
    poll(name, gen);
    refreshDoctor(name, gen);
  }

  async function fillDeploymentNames() {
    const res = await call("GET", "/deployments", undefined, authHeaders());
    if (!res.ok || !Array.isArray(res.data)) return;
    $("deployment-names").replaceChildren(...res.data.map((d) => h("option", { value: d.name })));
  }

  // -- wiring --------------------------------------------------------------------------------
  function init() {
    PRESETS.forEach((p, i) => $("preset").append(h("option", { value: i }, p.label)));
    $("preset").addEventListener("change", pickPreset);
    $("plan-form").addEventListener("submit", submitPlan);
    $("watch-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("deployment-name").value.trim();
      if (name) startWatch(name);
    });
    $("stop-button").addEventListener("click", () => {
      generation++;
      stopWatch();
      setStatus("Stopped watching.");
    });
    try {
      $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
      $("token").addEventListener("change", () => {
        sessionStorage.setItem(TOKEN_KEY, $("token").value);
        fillDeploymentNames();
      });
    } catch (e) {
      // no sessionStorage (a locked-down browser): the token lives in the field only
    }
    window.addEventListener("resize", relayout);
    fillDeploymentNames();
    const wanted = /^#deployment=([a-z0-9-]{1,63})$/.exec(location.hash);
    if (wanted) {
      $("deployment-name").value = wanted[1];
      startWatch(wanted[1]);
    }
  }

  init();
})();

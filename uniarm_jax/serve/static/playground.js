// The playground: one slider per objective (kept on the simplex), the guided answer beside the base
// alone's, both streamed from this server's own OpenAI API. Plain JS, no external code.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { guided: null, base: null, objectives: [], weights: [], running: {}, asked: false };

function render() {
  state.weights.forEach((w, i) => {
    $(`slider-${i}`).value = w.toFixed(2);
    $(`value-${i}`).textContent = w.toFixed(2);
  });
  $("guided-pref").textContent = state.guided ? `α = (${state.weights.map((w) => w.toFixed(2)).join(", ")})` : "";
}

// Slider i moved to v: the others share 1 - v in their old proportions (equally when they were all 0).
function moveSlider(i, v) {
  const w = state.weights, k = w.length;
  if (k === 1) { w[0] = 1; return; }
  v = Math.min(1, Math.max(0, v));
  const rest = w.reduce((s, x, j) => (j === i ? s : s + x), 0);
  for (let j = 0; j < k; j++) {
    if (j !== i) w[j] = rest > 1e-9 ? (w[j] / rest) * (1 - v) : (1 - v) / (k - 1);
  }
  w[i] = v;
}

function preference() {
  const total = state.weights.reduce((s, x) => s + x, 0);
  return state.weights.map((x) => x / total);
}

async function stream(kind) {
  const model = state[kind];
  const out = $(`${kind}-output`), status = $(`${kind}-status`);
  if (state.running[kind]) state.running[kind].abort(); // frees its slot on the server
  const control = new AbortController();
  state.running[kind] = control;
  const body = {
    model, stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: $("prompt").value }],
    max_tokens: Number($("max-tokens").value), temperature: Number($("temperature").value),
  };
  if (kind === "guided") body.preference = preference();
  out.textContent = "";
  out.dataset.state = "streaming";
  status.textContent = "streaming…";
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      signal: control.signal,
    });
    if (!res.ok) {
      const err = await res.json();
      throw new Error(err.error ? err.error.message : res.statusText);
    }
    const reader = res.body.getReader(), decoder = new TextDecoder();
    let buffer = "", usage = null, finish = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const event = JSON.parse(line.slice(6));
        if (event.error) throw new Error(event.error.message);
        if (event.usage) usage = event.usage;
        for (const choice of event.choices) {
          if (choice.delta && choice.delta.content) out.textContent += choice.delta.content;
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
    if (state.running[kind] !== control) return; // a newer request took over this pane
    out.dataset.state = "done";
    status.textContent = `done: ${usage ? usage.completion_tokens : "?"} tokens, finish ${finish}`;
  } catch (e) {
    if (control.signal.aborted) return;
    out.dataset.state = "error";
    status.textContent = `error: ${e.message}`;
  }
}

function generate() {
  state.asked = true;
  if (state.guided) stream("guided");
  stream("base");
}

async function start() {
  const res = await fetch("/v1/models");
  const models = (await res.json()).data;
  const guided = models.find((m) => m.kind === "guided"), base = models.find((m) => m.kind === "base");
  state.base = base.id;
  const sliders = $("sliders");
  if (guided) {
    state.guided = guided.id;
    state.objectives = guided.objectives;
    state.weights = guided.default_preference.slice();
    guided.objectives.forEach((name, i) => {
      const row = document.createElement("div");
      row.className = "slider";
      row.innerHTML = `<label for="slider-${i}"></label>` +
        `<input id="slider-${i}" type="range" min="0" max="1" step="0.01">` + `<output id="value-${i}"></output>`;
      row.querySelector("label").textContent = name;
      sliders.appendChild(row);
      const input = row.querySelector("input");
      input.addEventListener("input", () => { moveSlider(i, Number(input.value)); render(); });
      input.addEventListener("change", () => { moveSlider(i, Number(input.value)); render(); if (state.asked) stream("guided"); });
    });
  } else {
    $("guided-output").closest(".pane").hidden = true;
  }
  $("models").textContent = guided
    ? `guided: ${guided.id} (objectives: ${guided.objectives.join(", ")}) · base: ${base.id}`
    : `base: ${base.id} (no ARM: nothing to steer)`;
  render();
  $("generate").addEventListener("click", generate);
  document.body.dataset.ready = "true";
}

start();

"use strict";
const $ = (id) => document.getElementById(id);
let samplingFields = [];
let jobId = null;

function modelPath() {
  return $("model-select").value;
}

async function showFamily() {
  const path = modelPath();
  if (!path) {
    $("family").textContent = "No model: start serve with --model DIR or --models_dir DIR.";
    return;
  }
  const response = await fetch(`/api/family?path=${encodeURIComponent(path)}`);
  const body = await response.json();
  if (!response.ok) { $("family").textContent = body.detail; return; }
  $("family").textContent = `This is ${body.description} (family ${body.family}); its sampling options:`;
  showSamplingFields(body.sampling);
}

// One input per sampling option of the model's family, with the family's default.
function showSamplingFields(fields) {
  samplingFields = fields;
  const row = $("sampling-options");
  row.replaceChildren();
  for (const field of fields) {
    const box = document.createElement("div");
    const label = document.createElement("label");
    label.htmlFor = `sampling-${field.name}`;
    label.textContent = field.name.replaceAll("_", " ");
    const input = document.createElement("input");
    input.id = `sampling-${field.name}`;
    input.dataset.name = field.name;
    if (field.kind === "bool") {
      input.type = "checkbox";
      input.checked = field.default;
    } else {
      input.type = "number";
      input.value = field.default;
      input.step = field.kind === "int" ? "1" : "any";
    }
    box.append(label, input);
    row.appendChild(box);
  }
}

function samplingOptions() {
  const options = {};
  for (const field of samplingFields) {
    const input = $(`sampling-${field.name}`);
    options[field.name] = field.kind === "bool" ? input.checked : Number(input.value);
  }
  return options;
}

async function loadModels() {
  const response = await fetch("/api/models");
  const body = await response.json();
  $("compare-link").classList.toggle("hidden", !body.compare);
  for (const model of body.models) {
    const option = document.createElement("option");
    option.value = model.path;
    option.textContent = model.path + (model.family ? ` (${model.family})` : ` (${model.error})`);
    $("model-select").appendChild(option);
  }
  if (!body.models.length) { $("model-select").classList.add("hidden"); }
  await showFamily();
}

function number(id) { return Number($(id).value); }

function render(results) {
  $("results").replaceChildren();
  for (const result of results) {
    const card = document.createElement("section");
    card.className = "card result";
    const title = document.createElement("h3");
    title.textContent = result.prompt;
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "auto";
    audio.src = result.wav;
    const image = document.createElement("img");
    image.src = result.spectrogram;
    image.alt = `spectrogram of ${result.prompt}`;
    const download = document.createElement("a");
    download.href = result.wav;
    download.download = `${result.name}.wav`;
    download.textContent = "Download wav";
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Settings (JSON)";
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(result.settings, null, 2);
    details.append(summary, pre);
    card.append(title, audio, image, download, details);
    $("results").appendChild(card);
  }
}

async function poll() {
  for (;;) {
    const response = await fetch(`/api/jobs/${jobId}`);
    const job = await response.json();
    if (job.total_steps) {
      $("progress").max = job.total_steps;
      $("progress").value = job.done_steps;
    }
    const steps = job.total_steps ? `: step ${job.done_steps} of ${job.total_steps}` : "";
    $("progress-text").textContent = `${job.status}${steps}`;
    if (job.status === "done") { render(job.results); return; }
    if (job.status === "failed") { throw new Error(job.error); }
    if (job.status === "cancelled") { return; }
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

async function generate(event) {
  event.preventDefault();
  $("error").textContent = "";
  $("generate").disabled = true;
  $("cancel").disabled = false;
  $("progress-box").classList.remove("hidden");
  $("progress").value = 0;
  try {
    const body = {
      model: modelPath(),
      prompts: $("prompts").value.split("\n"),
      seconds: number("seconds"), seed: number("seed"), sampling: samplingOptions(),
    };
    const response = await fetch("/api/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    let job;
    try { job = await response.json(); } catch { job = { detail: `server error ${response.status}` }; }
    if (!response.ok) {
      throw new Error(typeof job.detail === "string" ? job.detail : JSON.stringify(job.detail));
    }
    jobId = job.job_id;
    await poll();
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    $("generate").disabled = false;
    $("cancel").disabled = true;
    jobId = null;
  }
}

async function cancel() {
  if (!jobId) { return; }
  $("cancel").disabled = true;
  await fetch(`/api/jobs/${jobId}/cancel`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
  });
}

$("form").addEventListener("submit", generate);
$("model-select").addEventListener("change", showFamily);
$("cancel").addEventListener("click", cancel);
loadModels();

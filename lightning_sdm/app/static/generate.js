"use strict";
const $ = (id) => document.getElementById(id);
let family = "lm";
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
  family = body.family;
  $("family").textContent = family === "diffusion"
    ? "Latent diffusion model (EzAudio-DiT): DDIM sampling."
    : "Codebook language model: token sampling.";
  $("lm-options").classList.toggle("hidden", family !== "lm");
  $("diffusion-options").classList.toggle("hidden", family !== "diffusion");
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
      seconds: number("seconds"), seed: number("seed"), cfg_scale: number("cfg_scale"),
      temperature: number("temperature"), top_k: number("top_k"), top_p: number("top_p"),
      steps: number("steps"), cfg_rescale: number("cfg_rescale"),
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

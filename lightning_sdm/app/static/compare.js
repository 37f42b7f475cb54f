"use strict";
const $ = (id) => document.getElementById(id);
let rater = "";
let current = null;
const heard = { first: false, second: false };

function updateButtons() {
  const ready = heard.first && heard.second;
  for (const id of ["choose-first", "choose-second", "choose-none"]) { $(id).disabled = !ready; }
  $("listen-hint").classList.toggle("hidden", ready);
}

async function next(fetched = null) {
  $("error").textContent = "";
  const response = fetched || await fetch(`/api/compare/next?rater=${encodeURIComponent(rater)}`);
  if (!response.ok) { throw new Error(await detailOf(response)); }
  const body = await response.json();
  if (body.skipped.length) {  // wavs removed or regenerated since the test began
    $("error").textContent = `A pair was skipped: ${body.skipped[0]}`;
  }
  $("progress").max = body.total;
  $("progress").value = body.answered;
  if (body.done) {
    $("test").classList.add("hidden");
    $("done").classList.remove("hidden");
    $("done-text").textContent = `All ${body.total} pairs answered.`;
    return;
  }
  current = body.pair;
  $("progress-text").textContent = `Pair ${body.answered + 1} of ${body.total}`;
  $("prompt").textContent = `“${current.prompt}”`;
  $("choose-none").classList.toggle("hidden", !body.allow_no_preference);
  heard.first = heard.second = false;
  $("first").src = current.first;
  $("second").src = current.second;
  updateButtons();
}

async function detailOf(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `the server answered ${response.status}`;
  }
}

async function answer(choice) {
  for (const id of ["choose-first", "choose-second", "choose-none"]) { $(id).disabled = true; }
  $("error").textContent = "";
  let response;
  try {
    response = await fetch("/api/compare/answer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ rater, pair_id: current.pair_id, choice }),
    });
  } catch {
    $("error").textContent = "Could not reach the server: your answer was not saved. Try again.";
    updateButtons();
    return;
  }
  const already = response.status === 409 && (await response.clone().text()).includes("already");
  if (!response.ok && !already) {  // already answered (another tab): move on
    $("error").textContent = `Not saved: ${await detailOf(response)}`;
    updateButtons();  // the same choice can be sent again
    return;
  }
  $("first").pause();
  $("second").pause();
  try {
    await next();
  } catch (error) {
    $("error").textContent = error.message;
  }
}

async function begin() {
  rater = $("rater").value.trim();
  $("start-error").textContent = "";
  try {
    const response = await fetch(`/api/compare/next?rater=${encodeURIComponent(rater)}`);
    if (!response.ok) { throw new Error(await detailOf(response)); }
    localStorage.setItem("lightning-sdm-rater", rater);
    $("start").classList.add("hidden");
    $("test").classList.remove("hidden");
    await next(response);  // its pair, and what it skipped (said once)
  } catch (error) {
    $("start-error").textContent = error.message;
  }
}

// A player that cannot load says only that it failed: ask the server why. A pair whose
// wav was removed or regenerated since the test began has left it (410): go on to the next.
async function onPlayerError(slot) {
  if (!current || !$(slot).src.endsWith(current[slot])) { return; }
  const response = await fetch(current[slot], { cache: "no-store" });
  if (response.ok) { return; }
  const detail = await detailOf(response);
  if (response.status !== 410) {
    $("error").textContent = detail;
    return;
  }
  try {
    await next();
  } catch (error) {
    $("error").textContent = error.message;
    return;
  }
  $("error").textContent = `A pair was skipped: ${detail}`;
}

for (const slot of ["first", "second"]) {
  $(slot).addEventListener("play", () => { heard[slot] = true; updateButtons(); });
  $(slot).addEventListener("error", () => onPlayerError(slot));
}
$("choose-first").addEventListener("click", () => answer("first"));
$("choose-second").addEventListener("click", () => answer("second"));
$("choose-none").addEventListener("click", () => answer("none"));
$("begin").addEventListener("click", begin);
$("rater").addEventListener("keydown", (event) => { if (event.key === "Enter") { begin(); } });
const saved = localStorage.getItem("lightning-sdm-rater");
if (saved) { $("rater").value = saved; begin(); }

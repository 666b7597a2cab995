// The rating page: show one image with the target's prediction, take a vote, and only move
// on once the server says the vote is stored.
"use strict";

const $ = (id) => document.getElementById(id);
const st = { session: null, k: 0, item: null, busy: false, competitor: false };

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = JSON.stringify((await response.json()).detail); } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.json();
}

function loaded(img, src) {
  return new Promise((resolve) => {
    if (!src) { img.removeAttribute("src"); resolve(); return; }
    img.onload = img.onerror = () => resolve();
    img.src = src;
  });
}

function setState(value) { document.body.dataset.state = value; }

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function buildLegend() {
  const legend = $("legend");
  legend.textContent = "";
  for (const c of st.session.classes) {
    const li = document.createElement("li");
    li.dataset.classId = c.id;
    const swatch = document.createElement("span");
    swatch.className = c.id === 0 ? "swatch clear" : "swatch";
    if (c.id !== 0) swatch.style.background = c.color;
    li.append(swatch, document.createTextNode(c.id === 0 ? `${c.name} (no colour)` : c.name));
    legend.append(li);
  }
}

function updateProgress() {
  const n = st.session.n;
  const done = st.item ? st.item.done : st.session.done;
  const position = Math.min(st.k + 1, n);
  $("progress").textContent = `image ${position} of ${n} · ${done} rated`;
  $("bar-fill").style.width = `${n ? (100 * done) / n : 100}%`;
}

function competitorSrc(id) {
  return st.competitor ? `/api/maps/${encodeURIComponent($("competitor-select").value)}/${id}` : null;
}

async function show(k) {
  const n = st.session.n;
  st.k = Math.max(0, Math.min(k, n));
  document.body.dataset.k = st.k;
  if (st.k >= n) {
    st.item = null;
    $("rating").hidden = true;
    $("done").hidden = false;
    delete document.body.dataset.imageId;
    st.session.done = n;
    updateProgress();
    setState("done");
    return;
  }
  setState("loading");
  const item = await api(`/api/items/${st.k}`);
  st.item = item;
  const id = encodeURIComponent(item.image_id);
  const photo = `/api/images/${id}`;
  await Promise.all([
    loaded($("photo"), photo),
    loaded($("photo-under"), photo),
    loaded($("overlay"), `/api/maps/${encodeURIComponent(st.session.target)}/${id}`),
    loaded($("photo-competitor"), st.competitor ? photo : null),
    loaded($("competitor-overlay"), competitorSrc(id)),
  ]);
  $("rating").hidden = false;
  $("done").hidden = true;
  const present = new Set(item.classes_present);
  if (st.competitor) for (const c of item.competitor_classes[$("competitor-select").value] || []) present.add(c);
  for (const li of $("legend").children) li.classList.toggle("present", present.has(Number(li.dataset.classId)));
  for (const b of document.querySelectorAll("[data-score]")) {
    b.classList.toggle("chosen", item.rated && item.score === Number(b.dataset.score));
  }
  $("ood").classList.toggle("chosen", item.rated && item.score === null);
  $("your-score").textContent = !item.rated ? "" : item.score === null
    ? "you marked this out of domain" : `your score: ${item.score} (${st.session.acr[item.score]})`;
  document.body.dataset.imageId = item.image_id;
  updateProgress();
  setState("ready");
}

async function vote(score) {
  if (st.busy || !st.item) return;
  st.busy = true;
  setState("saving");
  setStatus("saving…");
  for (const b of document.querySelectorAll("#buttons button")) b.disabled = true;
  const body = score === null ? { image_id: st.item.image_id, out_of_domain: true } : { image_id: st.item.image_id, score };
  try {
    const saved = await api("/api/ratings", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    st.session.done = saved.done;
    setStatus("");
    await show(saved.next);
  } catch (err) {
    setStatus(`not saved (${err.message}); try again`, true);
    setState("ready");
  } finally {
    for (const b of document.querySelectorAll("#buttons button")) b.disabled = false;
    st.busy = false;
  }
}

async function go(k) {
  if (st.busy) return;
  st.busy = true;
  try { await show(k); } catch (err) { setStatus(err.message, true); } finally { st.busy = false; }
}

function back() { if (st.k > 0) go(st.k - 1); }
function forward() { if (st.item && st.item.rated && st.k + 1 <= st.session.n) go(st.k + 1); }

function toggleCompetitor() {
  if (!st.session.competitors.length) return;
  st.competitor = !st.competitor;
  $("competitor-panel").hidden = !st.competitor;
  $("competitor-toggle").lastChild.textContent = st.competitor ? " hide competitor" : " show competitor";
  if (st.item) go(st.k);
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  const tag = event.target.tagName;
  const slider = tag === "INPUT" && event.target.type === "range";
  if ((tag === "INPUT" && !slider) || tag === "SELECT" || tag === "TEXTAREA") return;
  if (slider && key.startsWith("Arrow")) return;
  if (key >= "1" && key <= "5") vote(Number(key));
  else if (key === "o" || key === "O") vote(null);
  else if (key === "ArrowLeft" || key === "Backspace" || key === "b") back();
  else if (key === "ArrowRight") forward();
  else if (key === "c") toggleCompetitor();
  else return;
  event.preventDefault();
}

function setOpacity() {
  const value = Number($("opacity").value) / 100;
  for (const mask of document.querySelectorAll("img.mask")) mask.style.opacity = value;
}

async function start() {
  try {
    st.session = await api("/api/session");
  } catch (err) {
    setStatus(err.message, true);
    $("progress").textContent = "cannot start: " + err.message;
    return;
  }
  $("round").textContent = st.session.round;
  $("rater").textContent = st.session.rater;
  $("target-name").textContent = st.session.target;
  const select = $("competitor-select");
  for (const name of st.session.competitors) select.append(new Option(name, name));
  $("competitor-toggle").hidden = !st.session.competitors.length;
  buildLegend();
  for (const b of document.querySelectorAll("[data-score]")) b.addEventListener("click", () => vote(Number(b.dataset.score)));
  $("ood").addEventListener("click", () => vote(null));
  $("back").addEventListener("click", back);
  $("done-back").addEventListener("click", back);
  $("competitor-toggle").addEventListener("click", toggleCompetitor);
  select.addEventListener("change", () => { select.blur(); go(st.k); });
  $("opacity").addEventListener("input", setOpacity);
  $("opacity").addEventListener("change", () => $("opacity").blur());
  document.addEventListener("keydown", onKey);
  setOpacity();
  await go(st.session.resume);
}

start();

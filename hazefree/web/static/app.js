// hazefree serve: each dropped photo is posted as the raw request body, one at a time, and shown
// as a card (before/after split, transmission map, haze density, download) or as an error.
"use strict";

const methodSelect = document.getElementById("method");
const drop = document.getElementById("drop");
const picker = document.getElementById("files");
const results = document.getElementById("results");
const notice = document.getElementById("notice");
const cardTemplate = document.getElementById("card");
let maxUpload = Infinity;
let queue = Promise.resolve();

async function loadMethods() {
  try {
    const response = await fetch("/api/methods");
    const info = await response.json();
    maxUpload = info.max_upload;
    for (const name of info.methods) {
      const option = new Option(name, name, false, name === info.default);
      methodSelect.add(option);
    }
  } catch (err) {
    notice.textContent = "Cannot reach the hazefree server: " + err;
  }
}

function setSplit(card, percent) {
  card.querySelector(".before").style.clipPath = `inset(0 ${100 - percent}% 0 0)`;
  card.querySelector(".handle").style.left = percent + "%";
}

function fail(card, message) {
  card.classList.add("failed");
  card.querySelector(".status").textContent = message;
}

function show(card, answer) {
  const urls = answer.urls;
  card.querySelector(".before").src = urls.before;
  card.querySelector(".after").src = urls.after;
  const split = card.querySelector(".split");
  split.addEventListener("input", () => setSplit(card, Number(split.value)));
  setSplit(card, Number(split.value));
  const figure = card.querySelector(".transmission-figure");
  if (urls.transmission) {
    card.querySelector(".transmission").src = urls.transmission;
  } else {
    card.querySelector(".transmission").remove();
    figure.querySelector(".transmission-caption").textContent =
      `${answer.method} has no transmission map`;
  }
  const depth = answer.bit_depth === 16 ? ", 16-bit" : "";
  const alpha = answer.alpha ? ", alpha kept" : "";
  card.querySelector(".facts").textContent =
    `${answer.width} x ${answer.height} ${answer.format}${depth}${alpha}; method ${answer.method}; ` +
    `haze density ${answer.haze_before.toFixed(3)} before, ${answer.haze_after.toFixed(3)} after`;
  const warnings = card.querySelector(".warnings");
  for (const text of answer.warnings || []) {  // the pipeline's warnings about the input
    const item = document.createElement("li");
    item.textContent = `warning: ${text}`;
    warnings.append(item);
  }
  warnings.hidden = warnings.childElementCount === 0;
  const link = card.querySelector(".download");
  link.href = urls.download;
  link.download = answer.download_name;
  link.textContent = `Download ${answer.download_name} (full size)`;
  card.querySelector(".status").textContent = "done";
  card.querySelector(".body").hidden = false;
}

async function dehaze(file, method, card) {
  if (file.size > maxUpload) {
    fail(card, `${file.name}: file is larger than the upload limit of ${(maxUpload / 2 ** 20).toFixed(0)} MB`);
    return;
  }
  card.querySelector(".status").textContent = `dehazing with ${method}...`;
  try {
    const query = new URLSearchParams({method: method, name: file.name});
    const response = await fetch("/api/dehaze?" + query, {method: "POST", body: file});
    let answer;
    try {
      answer = await response.json();
    } catch {
      answer = {error: `${file.name}: the server answered ${response.status} ${response.statusText}`};
    }
    if (!response.ok || answer.error) {
      fail(card, answer.error || `${file.name}: the server answered ${response.status}`);
    } else {
      show(card, answer);
    }
  } catch (err) {
    fail(card, `${file.name}: cannot reach the hazefree server (${err})`);
  }
}

function addFiles(files) {
  const method = methodSelect.value;
  for (const file of files) {
    const card = cardTemplate.content.firstElementChild.cloneNode(true);
    card.querySelector(".name").textContent = file.name;
    card.querySelector(".status").textContent = "waiting...";
    results.prepend(card);
    queue = queue.then(() => dehaze(file, method, card));  // one at a time: the CPU is the limit
  }
}

picker.addEventListener("change", () => { addFiles(picker.files); picker.value = ""; });
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => { event.preventDefault(); addFiles(event.dataTransfer.files); });
loadMethods();
// A photo dropped beside the drop zone would make the browser leave the page to show it.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => event.preventDefault());
}

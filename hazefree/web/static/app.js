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
  if (answer.strength) {
    setUpStrength(card, answer);
  }
  card.querySelector(".status").textContent = "done";
  card.querySelector(".body").hidden = false;
}

function pixelsOf(img) {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  return context.getImageData(0, 0, canvas.width, canvas.height);
}

function loaded(img) {
  return img.complete && img.naturalWidth > 0 ? Promise.resolve() : img.decode();
}

// The strength slider recomposes the preview in the page (hazefree/strength.py, same formula):
// t' = max(max(t, t_min)^S, t_min), J = (I - A) / t' + A, from the before preview, the
// transmission preview and the airlight: the model is not run again. S = 1 shows the server's
// own result; the download link asks the server to recompose the full-size file the same way.
async function setUpStrength(card, answer) {
  const slider = card.querySelector(".strength");
  const shown = card.querySelector(".strength-value");
  const after = card.querySelector(".after");
  const link = card.querySelector(".download");
  const before = card.querySelector(".before");
  const tImage = card.querySelector(".transmission");
  await Promise.all([loaded(before), loaded(tImage)]);
  const hazy = pixelsOf(before);
  const trans = pixelsOf(tImage).data;
  const out = new ImageData(hazy.width, hazy.height);
  const canvas = document.createElement("canvas");
  canvas.width = hazy.width;
  canvas.height = hazy.height;
  const a = answer.strength.airlight.map((v) => v * 255);
  const tMin = answer.strength.t_min;
  const render = () => {
    const s = Number(slider.value);
    shown.textContent = s.toFixed(2);
    link.href = s === 1 ? answer.urls.download : `${answer.urls.download}?strength=${s}`;
    if (s === 1) {
      after.src = answer.urls.after;
      return;
    }
    const src = hazy.data;
    const dst = out.data;
    for (let i = 0; i < src.length; i += 4) {
      const t = Math.max(Math.pow(Math.max(trans[i] / 255, tMin), s), tMin);
      for (let c = 0; c < 3; c++) {
        dst[i + c] = (src[i + c] - a[c]) / t + a[c];  // Uint8ClampedArray clips and rounds
      }
      dst[i + 3] = src[i + 3];
    }
    canvas.getContext("2d").putImageData(out, 0, 0);
    after.src = canvas.toDataURL("image/png");
  };
  slider.addEventListener("input", render);
  card.querySelector(".strength-control").hidden = false;
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

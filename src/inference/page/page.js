// The draw-a-digit page: strokes on a canvas (mouse, finger or pen) or a photo go to POST /digit;
// the answer, its top three probabilities and the 28x28 image the model saw come back. With a
// collecting server, a wrong answer can be corrected (POST /feedback). No libraries: it runs
// offline, served by src/serve.py.
"use strict";

const BRUSH = 22; // px of the 280 px pad: about MNIST's stroke width once scaled to 20 px
const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const strokes = []; // each stroke a list of points, so undo can redraw all but the last
let drawing = null;
let seenImage = null; // the 28x28 the model saw last, for a correction
let asked = 0; // requests sent: a reply to an older one (a stroke ago) is not shown

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
}

function redraw() {
  clearPad();
  ink.strokeStyle = "#000";
  ink.fillStyle = "#000";
  ink.lineWidth = BRUSH;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  for (const points of strokes) {
    ink.beginPath();
    ink.moveTo(points[0].x, points[0].y);
    for (const point of points.slice(1)) ink.lineTo(point.x, point.y);
    if (points.length === 1) ink.arc(points[0].x, points[0].y, BRUSH / 2, 0, 2 * Math.PI);
    points.length === 1 ? ink.fill() : ink.stroke();
  }
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  drawing = [padPoint(event)];
  strokes.push(drawing);
  redraw();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  drawing.push(padPoint(event));
  redraw();
});
for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => {
    if (!drawing) return;
    drawing = null;
    readPad();
  });
}

document.getElementById("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  asked++;
  strokes.length ? readPad() : showNothing();
});
document.getElementById("clear").addEventListener("click", () => {
  asked++; // an answer still on its way is for a drawing no longer there
  strokes.length = 0;
  redraw();
  showNothing();
});

document.getElementById("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) readPhoto(file);
  event.target.value = ""; // the same file again is a new choice
});
pad.addEventListener("dragover", (event) => {
  event.preventDefault();
  pad.classList.add("dropping");
});
pad.addEventListener("dragleave", () => pad.classList.remove("dropping"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dropping");
  const [file] = event.dataTransfer.files;
  if (file) readPhoto(file);
});

function readPad() {
  const drawn = strokes.length;
  pad.toBlob((png) => ask(png, "image/png", drawn), "image/png");
}

function readPhoto(file) {
  strokes.length = 0;
  redraw();
  ask(file, file.type || "application/octet-stream", "photo");
}

// `what` (the number of strokes, or "photo") is set on the answer shown, so a reader (or a
// test) knows which input it answers.
async function ask(body, type, what) {
  const mine = ++asked;
  try {
    const answer = await fetch("/digit", { method: "POST", headers: { "Content-Type": type }, body });
    const reply = await answer.json();
    if (mine !== asked) return;
    answer.ok ? show(reply) : showError(reply.message || `the server said ${answer.status}`);
  } catch (err) {
    if (mine !== asked) return;
    showError(`the server did not answer (${err.message}); is src/serve.py still running?`);
  }
  document.querySelector("main").dataset.answers = what;
}

function show(reply) {
  document.getElementById("error").hidden = true;
  document.getElementById("result").hidden = false;
  document.getElementById("answer").textContent = reply.digit;
  const ranked = reply.probabilities.map((p, digit) => ({ digit, p })).sort((a, b) => b.p - a.p);
  document.getElementById("bars").replaceChildren(...ranked.slice(0, 3).map(bar));
  seenImage = reply.image;
  drawSeen(reply.image);
  document.getElementById("thanks").hidden = true;
}

function bar({ digit, p }) {
  const row = document.createElement("li");
  const label = document.createElement("span");
  label.textContent = digit;
  const track = document.createElement("span");
  const fill = document.createElement("span");
  fill.className = "bar";
  fill.style.display = "block";
  fill.style.width = `${(100 * p).toFixed(1)}%`;
  track.append(fill);
  const share = document.createElement("span");
  share.className = "share";
  share.textContent = `${(100 * p).toFixed(1)}%`;
  row.append(label, track, share);
  return row;
}

function drawSeen(rows) {
  const view = document.getElementById("seen").getContext("2d");
  const pixels = view.createImageData(28, 28);
  rows.flat().forEach((value, i) => {
    pixels.data.set([value, value, value, 255], 4 * i);
  });
  view.putImageData(pixels, 0, 0);
}

function showError(message) {
  const error = document.getElementById("error");
  error.textContent = message;
  error.hidden = false;
  document.getElementById("result").hidden = true;
}

function showNothing() {
  document.getElementById("error").hidden = true;
  document.getElementById("result").hidden = true;
}

async function correct(label) {
  const thanks = document.getElementById("thanks");
  try {
    const answer = await fetch("/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: seenImage, label }),
    });
    const reply = await answer.json();
    thanks.textContent = !answer.ok
      ? reply.message
      : reply.stored
        ? `Thank you: stored as a ${label}.`
        : "This image was already collected.";
  } catch (err) {
    thanks.textContent = `not stored: the server did not answer (${err.message})`;
  }
  thanks.hidden = false;
}

async function describeModel() {
  const line = document.getElementById("model");
  try {
    const model = await (await fetch("/model")).json();
    const which = [model.name, model.version && `version ${model.version}`, model.alias]
      .filter(Boolean)
      .join(", ");
    line.textContent = `Model: ${which}`;
    if (model.run_url) {
      const link = document.createElement("a");
      link.href = model.run_url;
      link.textContent = "its MLflow run";
      line.append(" (", link, ")");
    }
    if (model.collecting) offerCorrections();
  } catch (err) {
    line.textContent = `the server did not say which model answers (${err.message})`;
  }
}

function offerCorrections() {
  const buttons = Array.from({ length: 10 }, (_, digit) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = digit;
    button.dataset.digit = digit;
    button.addEventListener("click", () => correct(digit));
    return button;
  });
  document.querySelector("#fix .digits").replaceChildren(...buttons);
  document.getElementById("fix").hidden = false;
}

clearPad();
describeModel();

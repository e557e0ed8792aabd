"""The page ``vitkit serve`` shows at ``GET /``: choose or drop an image, see the top classes as bars and the
attention rollout over what the model sees. Static HTML; it asks ``health``, ``predict`` and ``attention``."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vitkit serve</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 58rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  #model { color: #666; margin: 0 0 1rem; }
  #drop { display: block; border: 2px dashed #999; border-radius: 8px; padding: 1.5rem; text-align: center;
          cursor: pointer; }
  #drop.over { border-color: #2a6fdb; background: #eef4ff; }
  #error { color: #b00020; min-height: 1.4em; }
  #result { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
  figure { margin: 0; }
  figure img { max-width: 320px; max-height: 320px; display: block; image-rendering: auto; }
  figcaption { color: #666; font-size: .85rem; max-width: 320px; }
  #top { min-width: 16rem; flex: 1; }
  #label { font-size: 1.6rem; font-weight: 600; }
  .bar { display: grid; grid-template-columns: 7rem 1fr 4rem; gap: .5rem; align-items: center; margin: .3rem 0; }
  .bar span:first-child { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .track { background: #eee; border-radius: 3px; height: .9rem; }
  .fill { background: #2a6fdb; border-radius: 3px; height: 100%; }
  .bar span:last-child { text-align: right; font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<h1>vitkit serve</h1>
<p id="model"></p>
<label id="drop">Choose an image or drop one here
  <input id="file" type="file" accept="image/*" hidden>
</label>
<p id="error" role="alert"></p>
<div id="result" hidden>
  <figure><img id="preview" alt="the image"><figcaption>your image</figcaption></figure>
  <figure><img id="attention" alt="attention map">
    <figcaption id="attention-note">what the model sees, with its attention rollout (red: most attended)</figcaption>
  </figure>
  <div id="top"><div><span id="label"></span> <span id="probability"></span></div><div id="bars"></div></div>
</div>
<script>
const $ = (id) => document.getElementById(id);
fetch("health").then((r) => r.json()).then((h) => {
  $("model").textContent = `${h.model}: ${h.classes} classes, on ${h.device}`;
  document.title = `vitkit serve: ${h.model}`;
});

function form(file) {
  const data = new FormData();
  data.append("file", file);
  return data;
}

async function show(file) {
  $("error").textContent = "";
  $("label").textContent = "";
  $("probability").textContent = "";
  $("bars").replaceChildren();
  $("attention").removeAttribute("src");
  $("preview").src = URL.createObjectURL(file);
  const answer = await fetch("predict?topk=5", { method: "POST", body: form(file) });
  const data = await answer.json();
  if (!answer.ok) {
    $("result").hidden = true;
    $("error").textContent = data.error;
    return;
  }
  const best = data.predictions[0];
  for (const { label, probability } of best.topk) {
    const row = document.createElement("div");
    row.className = "bar";
    const name = document.createElement("span");
    name.textContent = label;
    name.title = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * probability).toFixed(1)}%`;
    track.appendChild(fill);
    const value = document.createElement("span");
    value.textContent = `${(100 * probability).toFixed(1)}%`;
    row.append(name, track, value);
    $("bars").appendChild(row);
  }
  const none = best.label === null;  // a multi-label image with no label above its threshold
  $("probability").textContent = none ? "" : `${(100 * best.probability).toFixed(1)}%`;
  $("label").textContent = none ? "(no label above its threshold)" : best.label;
  $("result").hidden = false;
  const map = await fetch("attention", { method: "POST", body: form(file) });
  if (map.ok) {
    $("attention").src = URL.createObjectURL(await map.blob());
  } else {
    $("attention-note").textContent = `no attention map: ${(await map.json()).error}`;
  }
}

$("file").addEventListener("change", (event) => event.target.files[0] && show(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) show(event.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""

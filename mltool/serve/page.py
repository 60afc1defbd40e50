"""The live page at ``/``: the annotated MJPEG picture and the latest results (from ``/events``).
Relative URLs only, so it works through `mltool tunnel` and behind a path-prefixing proxy."""

from __future__ import annotations

import html

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mltool live: {model}</title>
<style>
 body {{ font: 15px system-ui, sans-serif; margin: 0; background: #111; color: #eee; }}
 header {{ padding: 8px 14px; background: #222; }} header b {{ color: #7fd; }}
 main {{ display: flex; flex-wrap: wrap; gap: 14px; padding: 14px; }}
 #pic {{ max-width: 100%; width: 640px; background: #000; min-height: 240px; }}
 #side {{ min-width: 260px; }} table {{ border-collapse: collapse; }} td {{ padding: 2px 10px 2px 0; }}
 .bar {{ background: #2a7; height: 10px; }} .alert {{ color: #f55; font-weight: bold; }} small {{ color: #999; }}
</style></head>
<body><header><b>mltool</b> live &middot; model <b id="model">{model}</b> &middot; source {source}
 &middot; release <span id="release">-</span></header>
<main><img id="pic" alt="live picture">
<div id="side"><h3 id="top">waiting for results&hellip;</h3><table id="items"></table>
<p id="alert" class="alert"></p>
<p><small>results <span id="count">0</span> &middot; frame <span id="frame">-</span> &middot; invoke <span id="latency">-</span> ms
 &middot; picture <span id="size">-</span></small></p><p><small id="status"></small></p></div></main>
<script>
const $ = id => document.getElementById(id);
const pic = $("pic");
let count = 0;
pic.onload = () => {{ $("size").textContent = pic.naturalWidth + "x" + pic.naturalHeight; document.body.dataset.frames = "yes"; }};
window.addEventListener("load", () => {{ pic.src = "stream.mjpg"; }});
const es = new EventSource("events");
es.onmessage = (m) => {{
  const r = JSON.parse(m.data);
  if (r.event) {{
    $("status").textContent = r.event + ": " + (r.message || "");
    // the source ended: no more MJPEG parts will come, so show its last annotated frame as a picture
    if (r.event === "end") pic.src = "snapshot.jpg?" + Date.now();
    return;
  }}
  count += 1; $("count").textContent = count; document.body.dataset.results = count;
  $("release").textContent = r.release; $("frame").textContent = r.index; $("latency").textContent = r.latency_ms.toFixed(2);
  const items = r.detections || r.predictions || [];
  $("top").textContent = items.length ? items[0].label + " " + items[0].score.toFixed(3) : "nothing detected";
  const rows = items.slice(0, 5).map(i => {{
    const tr = document.createElement("tr"), bar = document.createElement("div");
    for (const text of [i.label, i.score.toFixed(3)]) {{ const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); }}
    bar.className = "bar"; bar.style.width = Math.round(120 * i.score) + "px";
    tr.appendChild(document.createElement("td")).appendChild(bar);
    return tr;
  }});
  $("items").replaceChildren(...rows);
  $("alert").textContent = r.alert && r.alert.active ? "ALERT " + r.alert.class + " " + r.alert.score.toFixed(2) : "";
}};
es.onerror = () => {{ $("status").textContent = "disconnected; retrying"; }};
</script></body></html>
"""


def render(model: str, source: str) -> str:
    return _PAGE.format(model=html.escape(model), source=html.escape(source))


# The page at ``/`` when there is no live view: what this server serves and how to call it, with
# a picture upload to try the model from the browser. Relative URLs, as the live page.
ENDPOINTS = (
    ("POST", "/v2/models/{name}/infer", "KServe v2 / Triton (Open Inference Protocol): tensors or encoded images"),
    ("POST", "/v1/models/{name}:predict", "TensorFlow Serving: instances (tensors or {\"b64\": ...} images)"),
    ("POST", "/api/image", "a picture as the body (image/jpeg, image/png): the model's result"),
    ("POST", "/predict", "JSON {\"payload\": {\"inputs\": {\"data\": <base64 image>}}} (the Flash-serving style)"),
    ("GET", "/v2/models/{name}", "the model's metadata: inputs, outputs, labels, release"),
    ("GET", "/v2/health/ready", "ready to answer (no key needed)"),
    ("GET", "/metrics", "Prometheus metrics"),
)

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mltool serve: {model}</title>
<style>
 body {{ font: 15px system-ui, sans-serif; margin: 0; background: #111; color: #eee; }}
 header {{ padding: 8px 14px; background: #222; }} header b {{ color: #7fd; }} main {{ padding: 14px; }}
 td {{ padding: 3px 12px 3px 0; vertical-align: top; }} code {{ color: #fd7; }} pre {{ background: #222; padding: 8px; }}
</style></head>
<body><header><b>mltool</b> serve &middot; model <b>{model}</b> &middot; release {release}</header>
<main><table>{rows}</table>
<h3>Try it</h3><p><input type="file" id="file" accept="image/*"></p><pre id="out">pick a picture</pre>
<p>From a shell: <code>curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' {base}api/image</code></p>
</main>
<script>
document.getElementById("file").onchange = async (e) => {{
  const f = e.target.files[0]; if (!f) return;
  const r = await fetch("api/image", {{method: "POST", body: f, headers: {{"Content-Type": f.type || "application/octet-stream"}}}});
  document.getElementById("out").textContent = JSON.stringify(await r.json(), null, 1);
}};
</script></body></html>
"""


def endpoints(name: str) -> list[tuple[str, str, str]]:
    return [(m, p.replace("{name}", name), what) for m, p, what in ENDPOINTS]


def render_index(model: str, release: str, base: str = "") -> str:
    rows = "".join(f"<tr><td><code>{m}</code></td><td><code>{html.escape(p)}</code></td><td>{html.escape(w)}</td></tr>"
                   for m, p, w in endpoints(model))
    return _INDEX.format(model=html.escape(model), release=html.escape(release), rows=rows, base=html.escape(base))

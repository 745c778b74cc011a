"""The report page: one self-contained HTML file (inline CSS, SVG and script; previews as base64 JPEG), nothing
fetched when it is opened. Tables are plain HTML; the script draws the projections and decorates records with their
previews, and writes what it drew into the page (`data-points`, `data-errors` on <html>) for checks."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .layer_files import Layer
from .report_stats import Groups, LayerStats

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#393b79"]
OTHER, UNLABELLED = "#7f7f7f", "#c7c7c7"
MANIFEST_FIRST = ("status", "model", "requested", "backend", "weights", "weights_sha256", "weights_file", "revision",
                  "layer", "computed_layer", "pooling", "normalize", "shape", "dtype", "format", "count", "failures",
                  "preprocessing", "input", "input_sha256", "device", "precision", "ducho_version", "libraries",
                  "written_at", "fingerprint")


@dataclass
class Record:
    """A record as the page shows it."""

    id: str
    label: str | None = None
    preview: int | None = None  # index into the page's preview table


@dataclass
class LayerView:
    """Everything the page shows about one layer."""

    layer: Layer
    stats: LayerStats
    note: str
    sample: list[Record]  # the projected records, in stats.sample order
    failures: list[tuple[str, str, str]]
    neighbours: list[tuple[Record, list[tuple[Record, float]]]]
    exact: list[list[str]]
    near: list[list[str]]
    bad: list[str]
    knn: dict[str, float] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render(views: Sequence[LayerView], overlaps: Sequence[tuple[str, str, dict[str, float]]],
           previews: Sequence[dict[str, str]], meta: dict[str, Any]) -> str:
    """The whole page."""
    layers_data = [_layer_data(view) for view in views]
    data = json.dumps({"previews": list(previews), "layers": layers_data}, ensure_ascii=False,
                      separators=(",", ":")).replace("</", "<\\/")
    body = [_header(meta), _summary(views), _comparison(views, overlaps, meta)]
    body += [_layer(index, view) for index, view in enumerate(views)]
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Ducho report: {esc(meta.get('root', ''))}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + f"\n<div id=\"tip\" hidden></div>\n<script type=\"application/json\" id=\"ducho-data\">{data}</script>\n"
            f"<script>{SCRIPT}</script>\n</body></html>\n")


def _header(meta: dict[str, Any]) -> str:
    facts = [f"folder <code>{esc(meta.get('root', ''))}</code>", f"written {esc(meta.get('written', ''))}",
             f"ducho {esc(meta.get('version', ''))}", f"sample {meta.get('sample', 0):,} records per layer"]
    if meta.get("labels"):
        facts.append(f"labels <code>{esc(meta['labels'])}</code> ({meta.get('label_count', 0):,} ids)")
    return f"<header><h1>Ducho feature report</h1><p>{' · '.join(facts)}</p></header>"


def _title(view: LayerView) -> str:
    manifest = view.layer.manifest
    model = (manifest.get("model_settings") or {}).get("model_name", "")
    return f"{manifest.get('job', '')} · {model} ({manifest.get('backend', '')}) · {view.layer.name}"


def _summary(views: Sequence[LayerView]) -> str:
    rows = []
    for index, view in enumerate(views):
        s, m = view.stats, view.layer.manifest
        skipped = _skipped(view)
        cells = [f"<a href=\"#layer-{index}\">{esc(view.layer.title)}</a>", esc(view.layer.modality),
                 esc(m.get("source", "")), esc(view.layer.fmt), f"{s.count:,}", f"{skipped:,}", f"{s.dim:,}",
                 _flag(s.nan_rows + s.inf_rows), _flag(len(s.constant_dims)), _flag(s.exact.count),
                 _flag(s.near.count), f"{s.norm_summary.get('median', float('nan')):.3g}",
                 f"{view.knn['accuracy']:.3f}" if view.knn else "–"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ["layer", "modality", "source", "format", "records", "skipped", "dim", "NaN/Inf rows", "constant dims",
            "exact dup groups", "near dup groups", "median norm", "k-NN accuracy"]
    return (f"<section id=\"summary\"><h2>Layers ({len(views)})</h2><table class=\"wide\"><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></section>")


def _skipped(view: LayerView) -> int:
    """Records skipped: failures.tsv of the model's folder, else the manifest's count (a joint model's text layers
    may be written away from it)."""
    return len(view.failures) or int(view.layer.manifest.get("failures", 0) or 0)


def _flag(count: int) -> str:
    return f"<span class=\"bad\">{count:,}</span>" if count else "0"


def _comparison(views: Sequence[LayerView], overlaps: Sequence[tuple[str, str, dict[str, float]]],
                meta: dict[str, Any]) -> str:
    parts = ["<section id=\"comparison\"><h2>Across layers</h2>"]
    scored = sorted((v for v in views if v.knn), key=lambda v: -v.knn["accuracy"])  # type: ignore[index]
    if scored:
        rows = "".join(
            f"<tr><td>{esc(v.layer.title)}</td><td>{esc(v.layer.modality)}</td><td>{v.knn['records']:,}</td>"
            f"<td>{v.knn['classes']:,}</td><td><b>{v.knn['accuracy']:.3f}</b></td><td>{v.knn['baseline']:.3f}</td>"
            f"<td><div class=\"bar\" style=\"width:{100 * v.knn['accuracy']:.1f}%\"></div></td></tr>"
            for v in scored)  # type: ignore[index]
        k = scored[0].knn["k"]  # type: ignore[index]
        parts.append(f"<h3>Leave-one-out {k}-NN label accuracy (cosine), best first</h3>"
                     "<p class=\"note\">Each labelled sampled record takes the majority label of its "
                     f"{k} nearest labelled sampled records; the baseline always guesses the most common label.</p>"
                     "<table id=\"knn\"><thead><tr><th>layer</th><th>modality</th><th>labelled records</th>"
                     "<th>labels</th><th>accuracy</th><th>baseline</th><th></th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
    elif meta.get("labels"):
        parts.append("<p class=\"note\">No layer has enough labelled records (two labels at least) for k-NN.</p>")
    else:
        parts.append("<p class=\"note\">k-NN label accuracy: run <code>ducho report FOLDER --labels FILE "
                     "--label-column C</code> to compare the layers on your catalogue's categories.</p>")
    if overlaps:
        rows = "".join(f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{o['records']:,}</td>"
                       f"<td><b>{o['overlap']:.3f}</b></td><td>{o['chance']:.3f}</td></tr>" for a, b, o in overlaps)
        parts.append("<h3>Neighbour agreement between modalities</h3><p class=\"note\">For records present in "
                     "both layers: the share of their nearest neighbours (among those records) that the two layers "
                     "agree on; chance is what random neighbour lists would share.</p><table id=\"overlap\"><thead>"
                     "<tr><th>layer</th><th>layer</th><th>records</th><th>overlap</th><th>chance</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
    parts.append("</section>")
    return "".join(parts)


def _layer(index: int, view: LayerView) -> str:
    s, m = view.stats, view.layer.manifest
    facts = [("records", f"{s.count:,}"), ("skipped", f"{_skipped(view):,}"), ("dimension", f"{s.dim:,}"),
             ("shape", json.dumps(m.get("shape")) if m.get("shape") else f"[{s.dim}]"),
             ("modality", view.layer.modality),
             ("source", m.get("source", "")), ("format", view.layer.fmt), ("folder", str(view.layer.folder)),
             ("report time", f"{view.seconds:.1f} s")]
    if view.note:
        facts.append(("as vectors", view.note))
    out = [f"<section class=\"layer\" id=\"layer-{index}\" data-layer=\"{index}\">",
           f"<h2>{esc(view.layer.title)}</h2><p class=\"sub\">{esc(_title(view))}</p><dl class=\"facts\">",
           "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts), "</dl>",
           *(f"<p class=\"note\">{esc(n)}</p>" for n in s.notes),
           _failures(view.failures), "<div class=\"row\">", _histogram(s), _health(view), "</div>",
           _duplicates("Exact duplicates (identical vectors)", s.exact, view.exact),
           _duplicates("Near duplicates (cosine > 0.999)", s.near, view.near),
           _projection(index, view), _neighbours(view), _manifest(m), "</section>"]
    return "\n".join(out)


def _failures(failures: list[tuple[str, str, str]]) -> str:
    if not failures:
        return "<h3>Skipped records</h3><p>None.</p>"
    groups: dict[str, list[str]] = {}
    for record, _, reason in failures:
        groups.setdefault(_reason_kind(reason), []).append(record)
    rows = "".join(f"<tr><td>{len(ids):,}</td><td>{esc(reason)}</td><td>{esc(', '.join(ids[:8]))}"
                   f"{' …' if len(ids) > 8 else ''}</td></tr>"
                   for reason, ids in sorted(groups.items(), key=lambda g: -len(g[1])))
    return (f"<h3>Skipped records ({len(failures):,}), by reason</h3><table class=\"failures\"><thead><tr><th>records"
            f"</th><th>reason</th><th>ids</th></tr></thead><tbody>{rows}</tbody></table>")


def _reason_kind(reason: str) -> str:
    """A reason with its particulars (quoted names, paths, numbers) blanked, so like failures group together."""
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    reason = re.sub(r"(?:[A-Za-z]:)?[/\\][^\s:;,)]+", "…", reason)
    return re.sub(r"\d+(?:\.\d+)?", "N", reason).strip()


def _histogram(s: LayerStats) -> str:
    if not s.norm_counts:
        return "<figure class=\"hist\"><figcaption>No finite vector.</figcaption></figure>"
    width, height, pad = 380, 150, 22
    top = max(s.norm_counts) or 1
    bar = (width - 2 * pad) / len(s.norm_counts)
    bars = "".join(
        f"<rect x=\"{pad + i * bar:.1f}\" y=\"{height - pad - (height - 2 * pad) * c / top:.1f}\" "
        f"width=\"{max(bar - 1, 1):.1f}\" height=\"{(height - 2 * pad) * c / top:.1f}\"><title>"
        f"{s.norm_edges[i]:.4g}–{s.norm_edges[i + 1]:.4g}: {c:,}</title></rect>"
        for i, c in enumerate(s.norm_counts))
    labels = (f"<text x=\"{pad}\" y=\"{height - 6}\">{s.norm_edges[0]:.4g}</text>"
              f"<text x=\"{width - pad}\" y=\"{height - 6}\" text-anchor=\"end\">{s.norm_edges[-1]:.4g}</text>"
              f"<text x=\"{pad}\" y=\"14\">{top:,}</text>")
    summary = ", ".join(f"{k} {v:.4g}" for k, v in s.norm_summary.items())
    return (f"<figure class=\"hist\"><svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" "
            f"role=\"img\" aria-label=\"L2 norm histogram\">{bars}{labels}</svg><figcaption>L2 norm of the finite "
            f"vectors: {esc(summary)}</figcaption></figure>")


def _health(view: LayerView) -> str:
    s = view.stats
    items = [f"<li>{_flag(s.nan_rows)} rows with NaN, {_flag(s.inf_rows)} more with ±Inf"
             + (f": <span class=\"ids\">{esc(', '.join(view.bad))}</span>" if view.bad else "") + "</li>",
             f"<li>{_flag(s.zero_rows)} all-zero rows</li>",
             f"<li>{_flag(len(s.constant_dims))} constant dimensions (same value in every finite row)"
             + (f": {esc(', '.join(map(str, s.constant_dims[:30])))}{' …' if len(s.constant_dims) > 30 else ''}"
                if s.constant_dims else "") + "</li>"]
    return f"<div class=\"health\"><h3>Health</h3><ul>{''.join(items)}</ul></div>"


def _duplicates(title: str, groups: Groups, ids: list[list[str]]) -> str:
    if not groups.count:
        return f"<h3>{esc(title)}</h3><p>None among {esc(groups.scope)}.</p>"
    shown = "".join(f"<li>{len(g)} ids: <span class=\"ids\">{esc(', '.join(g[:12]))}{' …' if len(g) > 12 else ''}"
                    "</span></li>" for g in ids[:20])
    more = f"<p class=\"note\">{groups.count - 20:,} more groups.</p>" if groups.count > 20 else ""
    return (f"<h3>{esc(title)}</h3><p>{groups.count:,} groups, {groups.records:,} records, among "
            f"{esc(groups.scope)}.</p><ul class=\"groups\">{shown}</ul>{more}")


def _projection(index: int, view: LayerView) -> str:
    views = ", ".join(view.stats.projections) or "none"
    return (f"<h3>Projection of {len(view.sample):,} sampled records ({esc(views)} of the unit vectors)</h3>"
            f"<div class=\"proj\" data-layer=\"{index}\" data-expected=\"{len(view.sample)}\"></div>"
            f"<div class=\"legend\" data-layer=\"{index}\"></div>")


def _rec(record: Record) -> str:
    preview = "" if record.preview is None else f" data-m=\"{record.preview}\""
    label = f" <span class=\"label\">{esc(record.label)}</span>" if record.label is not None else ""
    return f"<span class=\"rec\"{preview}><span class=\"id\">{esc(record.id)}</span>{label}</span>"


def _neighbours(view: LayerView) -> str:
    if not view.neighbours:
        return "<h3>Nearest neighbours</h3><p>Too few records.</p>"
    rows = "".join(f"<tr><th>{_rec(query)}</th>" + "".join(f"<td>{_rec(r)}<span class=\"cos\">{cos:.3f}</span></td>"
                                                           for r, cos in found) + "</tr>"
                   for query, found in view.neighbours)
    k = max(len(found) for _, found in view.neighbours)
    head = "".join(f"<th>#{i + 1} (cosine)</th>" for i in range(k))
    return (f"<h3>Nearest neighbours of {len(view.neighbours)} sampled records, among all records</h3>"
            f"<table class=\"neighbours\"><thead><tr><th>record</th>{head}</tr></thead><tbody>{rows}</tbody></table>")


def _manifest(manifest: dict[str, Any]) -> str:
    keys = [k for k in MANIFEST_FIRST if k in manifest] + sorted(k for k in manifest if k not in MANIFEST_FIRST)
    rows = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(_value(manifest[k]))}</code></td></tr>" for k in keys)
    return f"<details class=\"manifest\"><summary>Manifest</summary><table>{rows}</table></details>"


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _layer_data(view: LayerView) -> dict[str, Any]:
    """The script's data for one layer: the points of each view scaled to 0..1000, colours, records."""
    labels = [r.label for r in view.sample]
    counts: dict[str, int] = {}
    for label in labels:
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
    named = sorted(counts, key=lambda k: (-counts[k], k))[:len(PALETTE)]
    colour = {label: PALETTE[i] for i, label in enumerate(named)}
    legend = [[label, colour[label], counts[label]] for label in named]
    rest = sum(counts.values()) - sum(counts[k] for k in named)
    if rest:
        legend.append(["other labels", OTHER, rest])
    unlabelled = sum(1 for label in labels if label is None)
    if unlabelled and counts:
        legend.append(["no label", UNLABELLED, unlabelled])
    colours = [colour.get(label, OTHER) if label is not None else (UNLABELLED if counts else PALETTE[0])
               for label in labels]
    views = {}
    for name, points in view.stats.projections.items():
        lo, hi = points.min(axis=0), points.max(axis=0)
        scaled = np.rint(1000 * (points - lo) / np.where(hi - lo > 0, hi - lo, 1)).astype(int)
        views[name] = scaled.reshape(-1).tolist()
    return {"views": views, "ids": [r.id for r in view.sample], "labels": labels, "colours": colours,
            "previews": [r.preview for r in view.sample], "legend": legend}


CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f6f7f9}
body{margin:0 auto;max-width:1280px;padding:0 20px 60px}header{padding:18px 0 6px}h1{margin:0 0 4px;font-size:24px}
h2{font-size:19px;margin:28px 0 4px}h3{font-size:15px;margin:18px 0 6px}p{margin:4px 0}
.note,.sub{color:#5b6475;font-size:13px}section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;
padding:6px 18px 16px;margin:16px 0}table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e8eaef;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f0f2f5}table.wide{width:100%}.bad{color:#c0392b;font-weight:600}
.bar{height:10px;background:#1f77b4;border-radius:3px;min-width:2px;width:0}#knn td:last-child{width:200px}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:13px;margin:8px 0}
.facts dt{color:#5b6475}.facts dd{margin:0;word-break:break-all}.row{display:flex;gap:28px;flex-wrap:wrap}
.hist svg rect{fill:#4c78a8}.hist svg text{font-size:11px;fill:#5b6475}figure{margin:8px 0}
figcaption{font-size:12px;color:#5b6475;max-width:380px}.health ul,.groups{font-size:13px;padding-left:18px}
.ids{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.proj svg{background:#fbfbfd;border:1px solid #e1e4ea;border-radius:6px}.proj circle{stroke:#fff;stroke-width:.5}
.proj circle:hover{stroke:#000;stroke-width:1.5}.views button{margin:0 6px 6px 0}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin:6px 0}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px}
.neighbours td,.neighbours th{max-width:170px;font-weight:normal}.rec{display:block}.rec .id{font-weight:600;
word-break:break-all}.label{font-size:11px;background:#eef1f6;border-radius:3px;padding:0 4px;color:#3c4658}
.rec img{display:block;max-width:64px;max-height:64px;margin-top:3px;border-radius:3px}
.snip{display:block;font-size:12px;color:#3c4658;max-height:4.2em;overflow:hidden}.cos{font-size:11px;color:#5b6475}
.manifest table{margin-top:6px}.manifest code{font-size:11px;word-break:break-all}
#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #aab;border-radius:6px;padding:6px;
max-width:260px;font-size:12px;box-shadow:0 2px 8px rgba(0,0,0,.15);z-index:10}#tip img{display:block;max-width:128px}
"""

SCRIPT = r"""
(function(){
"use strict";
var root=document.documentElement;root.dataset.errors="0";
window.addEventListener("error",function(){root.dataset.errors=String(Number(root.dataset.errors)+1);});
var data=JSON.parse(document.getElementById("ducho-data").textContent);
var NS="http://www.w3.org/2000/svg",tip=document.getElementById("tip");
function preview(m){
  var box=document.createElement("span");if(m===null||m===undefined||!data.previews[m])return box;
  var p=data.previews[m];
  if(p.img){var img=document.createElement("img");img.alt="";img.src="data:image/jpeg;base64,"+p.img;
    box.appendChild(img);}
  else{box.className="snip";box.textContent=p.text;}
  return box;
}
function draw(holder,layer,name){
  var size=460,pad=10,pts=layer.views[name],svg=document.createElementNS(NS,"svg");
  svg.setAttribute("viewBox","0 0 "+size+" "+size);svg.setAttribute("width",size);svg.setAttribute("height",size);
  svg.setAttribute("class","proj-svg");svg.dataset.view=name;
  for(var i=0;i<layer.ids.length;i++){
    var c=document.createElementNS(NS,"circle");
    c.setAttribute("cx",(pad+pts[2*i]*(size-2*pad)/1000).toFixed(1));
    c.setAttribute("cy",(size-pad-pts[2*i+1]*(size-2*pad)/1000).toFixed(1));
    c.setAttribute("r","3.5");c.setAttribute("fill",layer.colours[i]);c.dataset.i=i;svg.appendChild(c);
  }
  svg.addEventListener("mouseover",function(e){
    var i=e.target.dataset&&e.target.dataset.i;if(i===undefined)return;i=Number(i);
    tip.textContent="";var b=document.createElement("b");b.textContent=layer.ids[i];tip.appendChild(b);
    if(layer.labels[i]!==null){var l=document.createElement("div");l.textContent=layer.labels[i];tip.appendChild(l);}
    tip.appendChild(preview(layer.previews[i]));tip.hidden=false;
  });
  svg.addEventListener("mousemove",function(e){tip.style.left=(e.clientX+14)+"px";tip.style.top=(e.clientY+14)+"px";});
  svg.addEventListener("mouseout",function(){tip.hidden=true;});
  return svg;
}
document.querySelectorAll(".proj").forEach(function(holder){
  var layer=data.layers[Number(holder.dataset.layer)],names=Object.keys(layer.views);
  if(!names.length){holder.textContent="No usable vector to project.";return;}
  if(names.length>1){var bar=document.createElement("div");bar.className="views";names.forEach(function(n){
    var b=document.createElement("button");b.textContent=n;b.type="button";b.addEventListener("click",function(){
      holder.querySelectorAll("svg").forEach(function(s){s.style.display=s.dataset.view===n?"":"none";});});
    bar.appendChild(b);});holder.appendChild(bar);}
  names.forEach(function(n,k){var s=draw(holder,layer,n);if(k)s.style.display="none";holder.appendChild(s);});
  var legend=document.querySelector('.legend[data-layer="'+holder.dataset.layer+'"]');
  layer.legend.forEach(function(entry){var s=document.createElement("span"),i=document.createElement("i");
    i.style.background=entry[1];s.appendChild(i);s.appendChild(document.createTextNode(entry[0]+" ("+entry[2]+")"));
    legend.appendChild(s);});
});
document.querySelectorAll(".rec[data-m]").forEach(function(r){r.appendChild(preview(Number(r.dataset.m)));});
var points=0;document.querySelectorAll(".proj").forEach(function(h){var s=h.querySelector("svg");
  if(s)points+=s.querySelectorAll("circle").length;});
root.dataset.points=String(points);root.dataset.ready="1";
})();
"""

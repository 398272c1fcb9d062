"""The report page: sections of HTML built from a ``ReportData``, with inline CSS and a small sort script.

Every value that comes from the run (image names, paths, messages, configuration) goes through ``h``
(HTML-escaped, quotes included) before it reaches the page; numbers are formatted here.
"""

from __future__ import annotations

import json
import math
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

from .report_data import Example, ReportData, Stat
from .report_images import overlay_file, overlay_uri, read_rgb, resolve_input
from .report_svg import colour_of, curve_svg

METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "layercam": "LayerCAM",
                "xgradcam": "XGrad-CAM", "guided-gradcam": "Guided Grad-CAM", "saliency": "Saliency",
                "gradient": "Gradient", "input-x-gradient": "Input \u00d7 Gradient",
                "integrated-gradients": "Integrated Gradients", "guided-backprop": "Guided Backprop",
                "deconvnet": "Deconvnet", "smoothgrad": "SmoothGrad", "smoothgrad-sq": "SmoothGrad\u00b2",
                "vargrad": "VarGrad", "attention-rollout": "Attention rollout", "occlusion": "Occlusion",
                "rise": "RISE", "kernelshap": "KernelSHAP", "random": "random", "center": "center"}
GROUP_TITLES = {"ranked": "all, best first", "first": "first by name"}
BASELINE_TAG = ' <span class="tag">baseline</span>'
DASH, DOT, UP, DOWN = "\u2014", " \u00b7 ", "\u2191", "\u2193"
CURVE_AXES = {"deletion": "fraction of pixels removed (most relevant first)",
              "insertion": "fraction of pixels inserted (most relevant first)"}
VERDICT_TEXT = {"full": "input gradients and CAM layers work",
                "gradient-only": "input gradients work, no CAM layer",
                "inference-only": "no usable input gradient: black-box methods only"}


def h(value) -> str:
    """Any value as escaped HTML text."""
    return escape("" if value is None else str(value), quote=True)


def label(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "\u2014"
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 10 ** -digits):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}"


def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "\u2014"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def sort_key(v) -> str:
    """The ``data-sort`` value of a cell: full-precision numbers, empty for missing ones (sorted last)."""
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return h(repr(v) if isinstance(v, float) else v)


def better(a: Stat, b: Stat, higher: bool) -> bool:
    return a.n > 0 and b.n > 0 and (a.mean > b.mean if higher else a.mean < b.mean)


# ---- page --------------------------------------------------------------------------------------------
def render_page(data: ReportData, out: Path) -> str:
    sections = [("summary", "Summary", summary_section(data)),
                ("readiness", "Readiness", readiness_section(data)),
                ("scores", "Scores", scores_section(data)),
                ("curves", "Curves", curves_section(data)),
                ("examples", "Examples", examples_section(data, out)),
                ("health", "Health", health_section(data)),
                ("slowest", "Slowest", slowest_section(data)),
                ("images", "All images", images_section(data)),
                ("details", "Run details", details_section(data))]
    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{title}</h2>{html}</section>' for sid, title, html in sections)
    title = f"xaiready run report \u2014 {_model_name(data)}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data: file: \'self\'; '
            f'style-src \'unsafe-inline\'; script-src \'unsafe-inline\'">'
            f"<title>{h(title)}</title><style>{CSS}</style></head><body>"
            f"{header(data)}<nav>{nav}</nav><main>{progress_banner(data)}{body}</main>"
            f'<footer>Written by xaiready {h(data.run.get("versions", {}).get("xaiready", ""))} from '
            f"{h(data.run_dir.name)}/results.sqlite \u00b7 opens offline, no network</footer>"
            f"<script>{SCRIPT}</script></body></html>")


def _model_name(data: ReportData) -> str:
    model = (data.run.get("config") or {}).get("model") or (data.run.get("readiness") or {}).get("model", {}).get("path")
    return Path(str(model)).name if model else data.run_dir.name


def verdict_badge(verdict: str | None) -> str:
    kind = verdict if verdict in VERDICT_TEXT else "unknown"
    text = VERDICT_TEXT.get(verdict, "no readiness report in this run")
    return (f'<div class="verdict verdict-{kind}" id="verdict" data-verdict="{h(verdict or "")}">'
            f'<span class="verdict-label">readiness</span><strong>{h(verdict or "not checked")}</strong>'
            f"<span class=\"verdict-text\">{h(text)}</span></div>")


def header(data: ReportData) -> str:
    cfg = data.run.get("config") or {}
    total = data.images_total
    count = f"{data.images_seen} of {total} images" if data.in_progress and total else f"{data.images_done} images"
    bits = [count, f"{len(data.methods)} method{'s' * (len(data.methods) != 1)}",
            f"{len(data.metrics)} metric{'s' * (len(data.metrics) != 1)}"]
    if cfg.get("engine"):
        bits.append(f"engine {cfg['engine']}")
    when = data.run.get("finished_at") or data.run.get("started_at")
    if when:
        bits.append(("finished " if data.run.get("finished_at") else "started ") + str(when))
    return (f'<header class="top"><div class="title"><div class="eyebrow">xaiready \u00b7 run report</div>'
            f"<h1>{h(_model_name(data))}</h1>"
            f'<div class="sub">{h(cfg.get("inputs", ""))}</div>'
            f'<div class="sub">{DOT.join(h(b) for b in bits)}</div></div>'
            f"{verdict_badge((data.run.get('readiness') or {}).get('verdict'))}</header>")


def progress_banner(data: ReportData) -> str:
    if not data.in_progress:
        return ""
    total = data.images_total
    share = f"{data.images_seen} of {total} images" if total else f"{data.images_seen} images"
    pct = f'<div class="bar"><span style="width:{100 * data.images_seen / total:.1f}%"></span></div>' if total else ""
    return (f'<div class="banner" id="in-progress"><strong>Run not finished.</strong> This page shows the '
            f"{share} committed so far ({data.batches} batch{'es' * (data.batches != 1)}). Write the report "
            f"again when the run is done (<code>xaiready report {h(data.run_dir)}</code>); a run that was "
            f"interrupted finishes with <code>xaiready run ... --resume</code>.{pct}</div>")


# ---- summary -----------------------------------------------------------------------------------------
def comparison(data: ReportData, method: str, baseline: str) -> tuple[list[str], list[str]]:
    """(metrics compared, metrics where ``method`` beats ``baseline``)."""
    compared = [m for m in data.metrics
                if data.stats.get((method, m), Stat.of([])).n and data.stats.get((baseline, m), Stat.of([])).n]
    wins = [m for m in compared if better(data.stats[(method, m)], data.stats[(baseline, m)], data.higher_is_better[m])]
    return compared, wins


def headline(data: ReportData, method: str) -> tuple[str, str] | None:
    """("good"|"mixed"|"bad", sentence) comparing one method with the baselines, or None without scores.

    "Grad-CAM beats random on all 3 metrics, and center on 2 of 3 (not insertion)."
    """
    parts, levels = [], []
    for baseline in data.baselines:
        compared, wins = comparison(data, method, baseline)
        if not compared:
            continue
        n, lost = len(compared), [m for m in compared if m not in wins]
        if not wins:
            parts.append(f"does not beat {baseline} on {'any of ' + str(n) + ' metrics' if n > 1 else compared[0]}")
            levels.append(0)
            continue
        if lost:
            phrase = f"{baseline} on {len(wins)} of {n} metrics (not {', '.join(lost)})"
        else:
            phrase = f"{baseline} on {'all ' + str(n) + ' metrics' if n > 1 else compared[0]}"
        parts.append(("beats " if not parts or levels[-1] == 0 else "") + phrase)
        levels.append(2 if not lost else 1)
    if not parts:
        return None
    level = "good" if min(levels) == 2 else "bad" if max(levels) == 0 else "mixed"
    return level, f"{label(method)} {', and '.join(parts)}."


def summary_section(data: ReportData) -> str:
    items = []
    for method in data.methods:
        line = headline(data, method)
        if line:
            items.append(f'<li class="{line[0]}" data-method="{h(method)}">{h(line[1])}</li>')
    if data.metrics and not items and data.images:
        items.append('<li class="mixed">No baseline scores to compare with: the random and center rows are missing.</li>')
    if not data.metrics:
        items.append('<li class="neutral">No metrics were asked for: the methods are not scored. Run with '
                     "<code>--metrics deletion,insertion,pointing-game</code> to compare them with the "
                     "random and center baselines.</li>")
    n_warn = len({f.image for f in data.findings})
    if data.findings:
        per = ", ".join(f"{label(m)} {c}" for m, c in sorted(data.warned_images.items()))
        items.append(f'<li class="mixed">{n_warn} of {data.images_done} images {"has" if n_warn == 1 else "have"} '
                     f'health warnings ({h(per)}): '
                     'see <a href="#health">Health</a>.</li>')
    elif data.attributions:
        items.append('<li class="good">Every map passed its health checks.</li>')
    if data.failures:
        k = len(data.failures)
        items.append(f'<li class="bad">{k} image{"s" * (k != 1)} could not be read and {"were" if k != 1 else "was"} '
                     'skipped: see <a href="#health">Health</a>.</li>')
    acc = data.accuracy
    if acc is None:
        items.append('<li class="neutral">No labels: every target is the predicted class.</li>')
    else:
        items.append(f'<li class="neutral">Targets are the true labels of {data.labelled} images; the model predicts '
                     f"{acc:.1%} of them correctly.</li>")
    seconds = data.run.get("seconds")
    timed = isinstance(seconds, int | float) and seconds > 0
    total = data.images_total
    cards = [("images", f"{data.images_done}",
              f"of {total}, still running" if data.in_progress and total else
              f"{len(data.failures)} unreadable" if data.failures else f"{data.batches} batches"),
             ("methods", f"{len(data.methods)}", " + ".join(data.baselines) + " as baselines" if data.baselines else "no baselines"),
             ("accuracy", DASH if acc is None else f"{acc:.1%}", "against the labels" if acc is not None else "no labels"),
             ("health warnings", f"{n_warn}", f"image{'s' * (n_warn != 1)} with a finding"),
             ("run time", fmt_seconds(seconds) if timed else DASH, "" if timed else "not finished"),
             ("throughput", f"{data.images_done / seconds:.1f}" if timed else DASH, "images per second")]
    card_html = "".join(f'<div class="card"><div class="card-label">{h(k)}</div><div class="card-value">{h(v)}</div>'
                        f'<div class="card-sub">{h(sub)}</div></div>' for k, v, sub in cards)
    if not data.images:
        items.insert(0, '<li class="neutral">No image has finished yet.</li>')
    return f'<ul class="headlines" id="headlines">{"".join(items)}</ul><div class="cards">{card_html}</div>'


# ---- readiness ---------------------------------------------------------------------------------------
def readiness_section(data: ReportData) -> str:
    rep = data.run.get("readiness") or {}
    if not rep:
        return '<p class="empty">This run holds no readiness report.</p>'
    if rep.get("error"):
        err = rep["error"]
        return f'<p class="empty">The readiness check failed: {h(err.get("kind"))}: {h(err.get("message"))}</p>'
    grad, cam = rep.get("gradient") or {}, rep.get("cam") or {}
    brk = grad.get("break")
    facts = [("gradient", grad.get("status")), ("break", f"{brk.get('cause')} @ {brk.get('location')}" if brk else "none"),
             ("CAM layer", cam.get("default_layer") or "none"), ("why this layer", cam.get("reason"))]
    dl = "".join(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>" for k, v in facts if v)
    rows = "".join(f'<tr><td>{h(c.get("name"))}</td><td data-sort="{h(c.get("status"))}">{pill(c.get("status"))}</td>'
                   f'<td class="detail">{h(c.get("detail"))}</td></tr>' for c in rep.get("checks") or [])
    table = (f'<table class="sortable" id="checks"><thead><tr><th>check</th><th>status</th><th>detail</th></tr></thead>'
             f"<tbody>{rows}</tbody></table>") if rows else '<p class="empty">No checks recorded.</p>'
    return f'<dl class="facts">{dl}</dl>{table}'


def pill(status) -> str:
    s = str(status or "")
    return f'<span class="pill pill-{h(s)}">{h(s)}</span>'


# ---- scores ------------------------------------------------------------------------------------------
def scores_section(data: ReportData) -> str:
    if not data.metrics:
        return ('<p class="empty">No metrics were asked for in this run, so there is nothing to score. '
                "Add <code>--metrics deletion,insertion,pointing-game</code> to <code>xaiready run</code>.</p>")
    if not data.stats:
        return f'<p class="empty">No image has been scored yet on {h(", ".join(data.metrics))}.</p>'
    head = "".join(f'<th class="num" title="{"higher" if data.higher_is_better[m] else "lower"} is better">{h(m)} '
                   f'<span class="dir">{UP if data.higher_is_better[m] else DOWN}</span></th>'
                   for m in data.metrics)
    best = {}
    for m in data.metrics:
        cands = [(data.stats[(k, m)].mean, k) for k in data.all_methods() if data.stats.get((k, m), Stat.of([])).n]
        if cands:
            top = (max if data.higher_is_better[m] else min)(c[0] for c in cands)
            best[m] = {k for v, k in cands if v == top}
    rows = []
    for method in data.all_methods():
        is_base = method in data.baselines
        cells = [f'<td data-sort="{h(label(method))}"><span class="swatch" style="background:{colour_of(method, data.methods)}">'
                 f'</span>{h(label(method))}{BASELINE_TAG if is_base else ""}</td>']
        for m in data.metrics:
            s = data.stats.get((method, m))
            if s is None or not s.n:
                cells.append(f'<td class="num" data-sort="" data-method="{h(method)}" data-metric="{h(m)}" data-n="0">\u2014</td>')
                continue
            cls = "num best" if method in best.get(m, ()) else "num"
            cells.append(f'<td class="{cls}" data-sort="{sort_key(s.mean)}" data-method="{h(method)}" data-metric="{h(m)}" '
                         f'data-mean="{s.mean!r}" data-std="{s.std!r}" data-n="{s.n}"><span class="mean">{fmt(s.mean)}</span>'
                         f'<span class="spread">\u00b1 {fmt(s.std)} \u00b7 n={s.n}</span></td>')
        rows.append(f'<tr class="{"baseline" if is_base else "method"}">{"".join(cells)}</tr>')
    note = ("Mean \u00b1 std over images, n images with a finite value. The best mean per metric is "
            "highlighted; <em>random</em> and <em>center</em> are maps that ignore the model: a method worth "
            "trusting beats both. Click a header to sort.")
    return (f'<p class="note">{note}</p><div class="scroll"><table class="sortable scores" id="scores-table"><thead><tr>'
            f"<th>method</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


# ---- curves ------------------------------------------------------------------------------------------
def curves_section(data: ReportData) -> str:
    if not data.curves:
        asked = [m for m in data.metrics if m in CURVE_AXES]
        why = ("the run has no curve rows yet" if asked else
               "add <code>deletion</code> or <code>insertion</code> to <code>--metrics</code> to see them")
        return f'<p class="empty">No deletion or insertion curves: {why}.</p>'
    charts = []
    for metric, bands in data.curves.items():
        ordered = {m: bands[m] for m in data.all_methods() if m in bands}
        ordered.update({m: b for m, b in bands.items() if m not in ordered})
        legend = "".join(f'<li><span class="swatch{" dashed" if m in data.baselines else ""}" '
                         f'style="background:{colour_of(m, data.methods)}"></span>{h(label(m))} '
                         f'<span class="muted">AUC {fmt(data.stats.get((m, metric), Stat.of([])).mean)}</span></li>'
                         for m in ordered)
        better_dir = "lower" if not data.higher_is_better.get(metric, True) else "higher"
        charts.append(f'<figure class="chart" data-metric="{h(metric)}"><figcaption><strong>{h(metric)}</strong> '
                      f'<span class="muted">area under the curve: {better_dir} is better</span></figcaption>'
                      f'{curve_svg(metric, ordered, data.methods, x_label=CURVE_AXES.get(metric, "fraction of pixels changed"))}'
                      f'<ul class="legend">{legend}</ul></figure>')
    return ('<p class="note">Mean curve over images per method; the shaded band holds the middle half of the '
            'images (25th to 75th percentile). '
            f'Baselines are dashed.</p><div class="charts">{"".join(charts)}</div>')


# ---- examples ----------------------------------------------------------------------------------------
def examples_section(data: ReportData, out: Path) -> str:
    if not data.examples:
        return '<p class="empty">No image has been explained yet.</p>'
    inputs_root = (data.run.get("config") or {}).get("inputs")
    rgb_cache: dict[str, object] = {}

    def rgb_of(image: str):
        if image not in rgb_cache:
            row = data.images.get(image, {})
            rgb_cache[image] = read_rgb(resolve_input(data.run_dir, row.get("path"), inputs_root))
        return rgb_cache[image]

    blocks = []
    for method, groups in data.examples.items():
        metric = data.ranked_by.get(method)
        if metric:
            sub = f"ranked by {metric} ({'higher' if data.higher_is_better[metric] else 'lower'} is better)"
        else:
            sub = "not ranked: no metric was asked for; the first images by name"
        rows = "".join(f'<div class="group"><h4>{h(GROUP_TITLES.get(g, g))}</h4><div class="tiles">'
                       f"{''.join(tile(data, method, e, rgb_of, out, metric) for e in items)}</div></div>"
                       for g, items in groups.items())
        blocks.append(f'<div class="examples" data-method="{h(method)}"><h3><span class="swatch" '
                      f'style="background:{colour_of(method, data.methods)}"></span>{h(label(method))} '
                      f'<span class="muted">{h(sub)}</span></h3>{rows}</div>')
    return "".join(blocks)


def tile(data: ReportData, method: str, ex: Example, rgb_of, out: Path, metric: str | None) -> str:
    from .report_images import data_uri

    rgb = rgb_of(ex.image)
    attr = data.attributions.get((ex.image, method), {})
    over = overlay_uri(data.run_dir, ex.image, method, attr.get("path"), rgb)
    inp = data_uri(rgb) if rgb is not None else None
    missing = '<div class="noimg">{}</div>'
    inp_html = f'<img class="thumb input" alt="input" src="{inp}">' if inp else missing.format("input not readable")
    over_html = (f'<img class="thumb overlay" alt="{h(label(method))} overlay" src="{over}">' if over
                 else missing.format("no overlay"))
    full = overlay_file(data.run_dir, ex.image, method)
    if over and full.is_file():
        rel = os.path.relpath(full, out.parent).replace(os.sep, "/")
        over_html = f'<a href="{h(quote(rel))}" title="full-size overlay">{over_html}</a>'
    row = data.images.get(ex.image, {})
    facts = []
    if metric is not None and ex.value is not None:
        facts.append(f"{metric} {fmt(ex.value)}")
    facts.append(_target_text(ex.target, row))
    return (f'<figure class="tile"><div class="pair">{inp_html}{over_html}</div>'
            f'<figcaption><div class="name" title="{h(ex.image)}">{h(ex.image)}</div>'
            f'<div class="muted">{DOT.join(h(f) for f in facts if f)}</div></figcaption></figure>')


def _target_text(target: dict, row: dict) -> str:
    bits = []
    if isinstance(target, dict) and target.get("index") is not None:
        chosen = target.get("chosen")
        bits.append(f"class {target['index']}" + (f" ({chosen})" if chosen else ""))
    if row.get("label") is not None:
        bits.append(f"label {row['label']}")
    if row.get("predicted") is not None:
        bits.append(f"predicted {row['predicted']}")
    return " \u00b7 ".join(bits)


# ---- health, slowest, all images ----------------------------------------------------------------------
def health_section(data: ReportData) -> str:
    from .report_data import MAX_HEALTH_ROWS

    failed = ""
    if data.failures:
        rows = "".join(f'<tr><td class="name">{h(f["image"])}</td><td class="detail">{h(f["error"])}</td></tr>'
                       for f in data.failures[:MAX_HEALTH_ROWS])
        failed = (f"<h3>Images that could not be read ({len(data.failures)})</h3><div class=\"scroll\">"
                  f'<table class="sortable" id="failures-table"><thead><tr><th>image</th><th>error</th></tr></thead>'
                  f"<tbody>{rows}</tbody></table></div><h3>Maps</h3>")
    return failed + _findings(data)


def _findings(data: ReportData) -> str:
    from .report_data import MAX_HEALTH_ROWS

    if not data.attributions:
        return '<p class="empty">No map has been checked yet.</p>'
    if not data.findings:
        return ('<p class="empty good">No health warnings: every map is finite and non-constant, the output is '
                "not saturated, and every map depends on the class it explains.</p>")
    shown = data.findings[:MAX_HEALTH_ROWS]
    rows = "".join(f"<tr><td class=\"name\">{h(f.image)}</td><td>{h(label(f.method))}</td><td>{h(f.check)}</td>"
                   f'<td data-sort="{h(f.status)}">{pill(f.status)}</td><td class="detail">{h(f.message)}</td></tr>'
                   for f in shown)
    more = (f'<p class="note">The first {MAX_HEALTH_ROWS} of {len(data.findings)} findings; all of them are in '
            "results.sqlite (table attributions, column health).</p>") if len(data.findings) > MAX_HEALTH_ROWS else ""
    return (f'<p class="note">Maps that should not be trusted as they are, per image and method.</p>{more}'
            f'<div class="scroll"><table class="sortable" id="health-table"><thead><tr><th>image</th><th>method</th>'
            f"<th>check</th><th>status</th><th>message</th></tr></thead><tbody>{rows}</tbody></table></div>")


def slowest_section(data: ReportData) -> str:
    from .report_data import SLOWEST

    if not data.seconds:
        return '<p class="empty">No timings recorded yet.</p>'
    methods = [m for m in data.all_methods() if any(m in per for per in data.seconds.values())]
    totals = sorted(((sum(per.values()), img) for img, per in data.seconds.items()), key=lambda p: (-p[0], p[1]))
    mean_per = {m: sum(per.get(m, 0.0) for per in data.seconds.values()) / len(data.seconds) for m in methods}
    head = "".join(f"<th class=\"num\">{h(label(m))}</th>" for m in methods)
    rows = []
    for total, img in totals[:SLOWEST]:
        row = data.images.get(img, {})
        size = f"{row.get('height')}\u00d7{row.get('width')}" if row.get("height") else "\u2014"
        cells = "".join(f'<td class="num" data-sort="{sort_key(data.seconds[img].get(m, float("nan")))}">'
                        f'{fmt_seconds(data.seconds[img].get(m))}</td>' for m in methods)
        rows.append(f'<tr><td class="name">{h(img)}</td><td data-sort="{(row.get("height") or 0) * (row.get("width") or 0)}">'
                    f'{h(size)}</td><td class="num" data-sort="{total!r}">{fmt_seconds(total)}</td>{cells}</tr>')
    means = " \u00b7 ".join(f"{label(m)} {fmt_seconds(s)}" for m, s in mean_per.items())
    return (f'<p class="note">Seconds spent per image and method. Mean per image: {h(means)}.</p>'
            f'<div class="scroll"><table class="sortable" id="slowest-table"><thead><tr><th>image</th><th>size</th>'
            f'<th class="num">total</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def images_section(data: ReportData) -> str:
    from .report_data import MAX_IMAGE_ROWS

    if not data.images:
        return '<p class="empty">No image has finished yet.</p>'
    cols = [(m, k) for m in data.all_methods() for k in data.metrics if (m, k) in data.scores]
    head = "".join(f'<th class="num">{h(label(m))}<br><span class="muted">{h(k)}</span></th>' for m, k in cols)
    names = sorted(data.images)[:MAX_IMAGE_ROWS]
    rows = []
    for img in names:
        row = data.images[img]
        cells = "".join(f'<td class="num" data-sort="{sort_key(data.scores[c].get(img, float("nan")))}">'
                        f"{fmt(data.scores[c].get(img))}</td>" for c in cols)
        rows.append(f'<tr><td class="name">{h(img)}</td><td class="num">{h(_or_dash(row.get("label")))}</td>'
                    f'<td class="num">{h(_or_dash(row.get("predicted")))}</td><td class="num">{h(row.get("batch"))}</td>{cells}</tr>')
    more = (f" The first {MAX_IMAGE_ROWS} of {len(data.images)} images by name." if len(data.images) > MAX_IMAGE_ROWS else "")
    return (f'<details><summary>Every image\'s scores ({len(data.images)} images).{h(more)}</summary>'
            f'<div class="scroll tall"><table class="sortable" id="images-table"><thead><tr><th>image</th><th>label</th>'
            f"<th>predicted</th><th>batch</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></details>")


def _or_dash(v) -> str:
    return "\u2014" if v is None else str(v)


# ---- run details -------------------------------------------------------------------------------------
def details_section(data: ReportData) -> str:
    cfg = data.run.get("config") or {}
    unset = [k for k, v in cfg.items() if v in (None, {}, [], "")]
    conf = "".join(f"<dt>{h(k)}</dt><dd><code>{h(_short(v))}</code></dd>" for k, v in cfg.items() if k not in unset)
    if unset:
        conf += f'<dt>not set</dt><dd class="muted">{h(", ".join(unset))}</dd>'
    versions = "".join(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>" for k, v in (data.run.get("versions") or {}).items())
    cost = data.run.get("cost") or {}
    calls = [(title, DOT.join(f"{label(m)} {n}" for m, n in (cost.get(key) or {}).items()))
             for key, title in (("model_calls_per_image", "model calls per image"),
                                ("metric_calls_per_image", "metric calls per image and method"))]
    timing = [("status", data.status), ("started", data.run.get("started_at")), ("finished", data.run.get("finished_at")),
              ("seconds", data.run.get("seconds")), ("batches committed", data.batches),
              ("config hash", data.run.get("config_hash")), *[(t, c) for t, c in calls if c]]
    tdl = "".join(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>" for k, v in timing if v is not None)
    sessions = [s for s in data.run.get("sessions") or [] if isinstance(s, dict)]
    rows = "".join(f'<tr><td>{h(s.get("started_at"))}</td><td>{h(s.get("engine"))}</td><td class="num">{h(s.get("workers"))}</td>'
                   f'<td class="num">{h(_or_dash(s.get("batches")))}</td>'
                   f'<td class="num">{fmt_seconds(s.get("seconds")) if isinstance(s.get("seconds"), int | float) else DASH}</td></tr>'
                   for s in sessions)
    runs = (f'<h3>Sessions</h3><table id="sessions"><thead><tr><th>started</th><th>engine</th><th class="num">workers</th>'
            f'<th class="num">batches</th><th class="num">time</th></tr></thead><tbody>{rows}</tbody></table>'
            if len(sessions) > 1 else "")  # only a resumed run has more than one
    return (f'<div class="details-grid"><div><h3>Configuration</h3><dl class="facts">{conf or "<dd>" + DASH + "</dd>"}</dl></div>'
            f'<div><h3>Run</h3><dl class="facts">{tdl}</dl>{runs}'
            f'<h3>Versions</h3><dl class="facts">{versions or "<dd>" + DASH + "</dd>"}</dl></div></div>')


def _short(v) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


CSS = """
:root{--bg:#f6f7f9;--panel:#fff;--ink:#1c2430;--muted:#5f6b7a;--line:#e3e7ec;--accent:#0b5cad;
--good:#1a7f45;--good-bg:#e6f4ec;--warn:#9a5b00;--warn-bg:#fff3dc;--bad:#b42318;--bad-bg:#fdecea;}
*{box-sizing:border-box}
html{scroll-behavior:smooth}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;-webkit-font-smoothing:antialiased}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef1f5;padding:1px 5px;border-radius:4px;
word-break:break-all}
a{color:var(--accent)}
header.top{display:flex;justify-content:space-between;align-items:center;gap:24px;padding:28px 40px 22px;
background:var(--panel);border-bottom:1px solid var(--line)}
.eyebrow{font-size:12px;letter-spacing:.08em;text-transform:uppercase;color:var(--muted);font-weight:600}
h1{margin:4px 0 6px;font-size:26px;line-height:1.2;word-break:break-all}
h2{font-size:19px;margin:0 0 14px}
h3{font-size:16px;margin:18px 0 10px;display:flex;align-items:center;gap:8px;flex-wrap:wrap}
h4{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:10px 0 6px}
.sub{color:var(--muted);font-size:14px;word-break:break-all}
.verdict{min-width:220px;padding:14px 18px;border-radius:12px;border:1px solid;text-align:right}
.verdict strong{display:block;font-size:22px;line-height:1.2}
.verdict-label{font-size:11px;text-transform:uppercase;letter-spacing:.08em;opacity:.8}
.verdict-text{display:block;font-size:13px;margin-top:2px}
.verdict-full{color:var(--good);background:var(--good-bg);border-color:#b5dfc6}
.verdict-gradient-only{color:var(--warn);background:var(--warn-bg);border-color:#f1d39a}
.verdict-inference-only{color:var(--bad);background:var(--bad-bg);border-color:#f3b8b2}
.verdict-unknown{color:var(--muted);background:#eef1f5;border-color:var(--line)}
nav{position:sticky;top:0;z-index:5;display:flex;gap:4px;padding:8px 32px;background:rgba(255,255,255,.92);
backdrop-filter:blur(6px);border-bottom:1px solid var(--line);overflow-x:auto}
nav a{padding:4px 10px;border-radius:6px;text-decoration:none;color:var(--muted);font-size:14px;white-space:nowrap}
nav a:hover{background:#eef1f5;color:var(--ink)}
main{max-width:1240px;margin:0 auto;padding:20px 32px 40px}
section{background:var(--panel);border:1px solid var(--line);border-radius:12px;padding:20px 24px;margin:0 0 18px}
.banner{background:var(--warn-bg);border:1px solid #f1d39a;color:#5c3b00;border-radius:10px;padding:12px 16px;margin-bottom:18px}
.bar{height:6px;background:#f1d39a;border-radius:3px;margin-top:8px;overflow:hidden}
.bar span{display:block;height:100%;background:var(--warn)}
.headlines{list-style:none;margin:0 0 16px;padding:0}
.headlines li{padding:6px 0 6px 28px;position:relative;font-size:16px}
.headlines li::before{position:absolute;left:0;top:6px;width:20px;height:20px;border-radius:50%;font-size:12px;
font-weight:700;display:flex;align-items:center;justify-content:center}
.headlines li.good::before{content:"\\2713";background:var(--good-bg);color:var(--good)}
.headlines li.mixed::before{content:"!";background:var(--warn-bg);color:var(--warn)}
.headlines li.bad::before{content:"\\2717";background:var(--bad-bg);color:var(--bad)}
.headlines li.neutral::before{content:"i";background:#eef1f5;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:10px}
.card{border:1px solid var(--line);border-radius:10px;padding:10px 14px;background:#fbfcfd}
.card-label{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.card-value{font-size:22px;font-weight:600;line-height:1.3;font-variant-numeric:tabular-nums}
.card-sub{font-size:12px;color:var(--muted)}
.note{color:var(--muted);font-size:14px;margin:0 0 12px}
.empty{color:var(--muted);background:#fbfcfd;border:1px dashed var(--line);border-radius:10px;padding:16px;margin:0}
.empty.good{color:var(--good);background:var(--good-bg);border-color:#b5dfc6}
.muted{color:var(--muted);font-weight:400;font-size:13px}
.scroll{overflow-x:auto}.scroll.tall{max-height:560px;overflow-y:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{padding:7px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#f3f5f8;font-weight:600;font-size:13px;color:#344152;white-space:nowrap}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th:hover{background:#e8ecf1}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
th.num{text-align:right}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.detail{color:#3b4756;max-width:640px}
td.name,.tile .name{word-break:break-all}
tbody tr:hover{background:#f8fafc}
table.scores td.num .mean{display:block;font-weight:600;font-size:15px}
table.scores td.num .spread{display:block;color:var(--muted);font-size:12px}
table.scores td.best{background:var(--good-bg)}
table.scores td.best .mean{color:var(--good)}
table.scores tr.baseline td{color:var(--muted)}
.dir{color:var(--muted);font-weight:400}
.tag{font-size:11px;border:1px solid var(--line);border-radius:4px;padding:0 5px;margin-left:6px;color:var(--muted)}
.swatch{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:8px;vertical-align:-1px}
.swatch.dashed{height:4px;vertical-align:3px}
.pill{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;background:#eef1f5;color:var(--muted)}
.pill-pass{background:var(--good-bg);color:var(--good)}.pill-warn{background:var(--warn-bg);color:var(--warn)}
.pill-fail{background:var(--bad-bg);color:var(--bad)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0 0 14px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;word-break:break-word}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:18px}
figure{margin:0}
.chart{border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.chart figcaption{margin-bottom:6px}
svg.curve{display:block;max-width:100%;height:auto}
svg.curve .grid{stroke:#e9edf1;stroke-width:1}
svg.curve .frame{fill:none;stroke:#c9d0d8}
svg.curve .tick{font-size:11px;fill:#6b7684}
svg.curve .axis{font-size:12px;fill:#44505e}
svg.curve .band{opacity:.14;stroke:none}
svg.curve .mean{fill:none;stroke-width:2.2;stroke-linejoin:round}
.legend{list-style:none;padding:0;margin:8px 0 0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:13px}
.examples{border-top:1px solid var(--line);padding-top:6px;margin-top:6px}
.examples:first-child{border-top:0;margin-top:0;padding-top:0}
.examples .group{display:inline-block;vertical-align:top;margin-right:22px}
.tiles{display:flex;gap:12px;flex-wrap:wrap}
.tile{width:272px;border:1px solid var(--line);border-radius:10px;padding:8px;background:#fbfcfd}
.pair{display:flex;gap:6px}
.thumb,.noimg{width:125px;height:125px;object-fit:contain;border-radius:6px;background:#e9edf1;image-rendering:pixelated}
.noimg{display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12px;text-align:center}
.tile figcaption{font-size:13px;margin-top:6px}
.tile .name{font-weight:600;font-size:13px}
details summary{cursor:pointer;color:var(--accent);margin-bottom:10px}
.details-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:24px}
.details-grid h3:first-child{margin-top:0}
footer{text-align:center;color:var(--muted);font-size:12px;padding:0 0 30px}
@media print{nav{display:none}section{break-inside:avoid}}
"""

SCRIPT = """
(function(){
  function key(cell){
    var v = cell.hasAttribute('data-sort') ? cell.getAttribute('data-sort') : cell.textContent.trim();
    var n = parseFloat(v);
    return {empty: v === '', num: !isNaN(n) && isFinite(v) ? n : null, text: v.toLowerCase()};
  }
  function sortBy(table, col, th){
    var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    table.tHead.querySelectorAll('th').forEach(function(o){ o.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows), sign = dir === 'ascending' ? 1 : -1;
    rows.sort(function(a, b){
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x.empty !== y.empty) return x.empty ? 1 : -1;   // missing values last, either way
      if (x.num !== null && y.num !== null) return sign * (x.num - y.num);
      return sign * x.text.localeCompare(y.text);
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    if (!table.tHead) return;
    table.tHead.querySelectorAll('th').forEach(function(th, i){
      th.tabIndex = 0;
      th.addEventListener('click', function(){ sortBy(table, i, th); });
      th.addEventListener('keydown', function(e){ if (e.key === 'Enter') sortBy(table, i, th); });
    });
  });
})();
"""

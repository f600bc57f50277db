"""Build ``OUT/report/``: a static, self-contained review site of a run (no server, no network).

``index.html`` (counts, triage list, plots, one sortable and filterable table of every
track) and ``tracks/<name>.html`` per track with its assets under ``assets/<name>/``
(spectrum and short-term loudness SVG, A/B Opus excerpts). ``manifest.json`` keeps a
hash of each track's rows: a rebuild redoes only the tracks whose rows changed (or
whose page is missing); the catalogue page is always rewritten.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from typing import Any

from acetate.pipeline.io import store
from acetate.pipeline.report import data as rdata
from acetate.pipeline.report import plots

__all__ = ["build_report", "ReportResult"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class ReportResult:
    index: str
    tracks: int
    rebuilt: list[str]
    triage: list[rdata.TriageEntry]
    run: rdata.RunData


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _f(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def _yn(v: bool | None) -> str:
    return "—" if v is None else ("yes" if v else "NO")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#111;background:#fff;line-height:1.4}
h1,h2{margin:.6em 0 .3em}table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #bbb;padding:.2rem .4rem;text-align:left;vertical-align:top}
th button{font:inherit;font-weight:bold;background:#e8eef7;color:#111;border:1px solid #567;border-radius:3px;padding:.1rem .3rem;cursor:pointer}
th button:focus,button:focus,input:focus,select:focus{outline:3px solid #f1a000;outline-offset:1px}
td.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#a00000;font-weight:bold}.failed td{background:#fff0f0}
.counts span{display:inline-block;margin-right:1.2rem;font-size:1.05rem}.plots{display:flex;flex-wrap:wrap;gap:1rem}
.plots figure{margin:0}.plots img{max-width:100%;height:auto;border:1px solid #ddd}a{color:#0645ad}
.ab button{font-size:1rem;padding:.3rem .8rem;margin-right:.5rem}.ab [aria-pressed=true]{background:#1f5fa8;color:#fff}
"""

SORT_JS = """
// Acetate report: sortable, filterable tables (vendored here; no network).
(function(){
  function val(td){var v=td.getAttribute('data-v');if(v===null)v=td.textContent.trim();var n=parseFloat(v);
    return (v!==''&&!isNaN(n)&&isFinite(v))?n:v.toLowerCase();}
  document.querySelectorAll('table.sortable').forEach(function(table){
    var ths=table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths,function(th,i){
      var b=th.querySelector('button');if(!b)return;
      b.addEventListener('click',function(){
        var asc=th.getAttribute('aria-sort')!=='ascending';
        Array.prototype.forEach.call(ths,function(o){o.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(r1,r2){var a=val(r1.cells[i]),b=val(r2.cells[i]);
          if(typeof a!==typeof b){a=String(a);b=String(b);}return (a<b?-1:a>b?1:0)*(asc?1:-1);});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  var q=document.getElementById('filter'),s=document.getElementById('status-filter');
  function apply(){var t=(q&&q.value||'').toLowerCase(),st=s&&s.value||'';
    document.querySelectorAll('#tracks tbody tr').forEach(function(r){
      var ok=(!t||r.textContent.toLowerCase().indexOf(t)>=0)&&(!st||r.getAttribute('data-status')===st);
      r.hidden=!ok;});
    var n=document.querySelectorAll('#tracks tbody tr:not([hidden])').length,c=document.getElementById('shown');if(c)c.textContent=n;}
  if(q)q.addEventListener('input',apply);if(s)s.addEventListener('change',apply);
})();
"""

AB_JS = """
(function(){
  var a=document.getElementById('audio-a'),b=document.getElementById('audio-b'),btn=document.querySelectorAll('.ab button[data-which]');
  if(!a||!b)return;
  function pick(w){var on=w==='a'?a:b,off=w==='a'?b:a;var t=off.currentTime,playing=!off.paused;off.pause();
    try{on.currentTime=t;}catch(e){}if(playing)on.play();
    btn.forEach(function(x){x.setAttribute('aria-pressed',x.getAttribute('data-which')===w?'true':'false');});}
  btn.forEach(function(x){x.addEventListener('click',function(){pick(x.getAttribute('data-which'));});});
})();
"""

COLUMNS = [
    ("track", "track_id", None),
    ("album", "album", None),
    ("preset", "preset", None),
    ("distance", "distance", ".2f"),
    ("confidence", "confidence", ".2f"),
    ("input LUFS", "in_lufs", ".1f"),
    ("output LUFS", "out_lufs", ".1f"),
    ("LRA in (LU)", "in_lra", ".1f"),
    ("LRA out (LU)", "out_lra", ".1f"),
    ("true peak out (dBTP)", "out_tp", ".2f"),
    ("gain (dB)", "gain_db", ".1f"),
    ("target met", "target_met", "yn"),
    ("ceiling met", "ceiling_met", "yn"),
    ("status", "status", None),
]


def _page(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n{body}\n{js}</body></html>\n"
    )


def _cell(t: rdata.TrackRow, attr: str, spec: str | None) -> str:
    v = getattr(t, attr)
    if attr == "track_id":
        return f'<td data-v="{_e(v)}"><a href="tracks/{_e(t.name)}.html">{_e(v)}</a></td>'
    if spec == "yn":
        cls = ' class="bad"' if v is False else ""
        return f'<td{cls} data-v="{"" if v is None else int(bool(v))}">{_yn(v)}</td>'
    if spec:
        return f'<td class="num" data-v="{"" if v is None else repr(float(v))}">{_f(v, spec)}</td>'
    return f"<td>{_e(v) if v is not None else '—'}</td>"


def _index(run: rdata.RunData, tri: list[rdata.TriageEntry], svgs: dict[str, str]) -> str:
    tracks = run.tracks
    n_done = sum(t.status == "done" for t in tracks)
    n_failed = sum(t.status == "failed" for t in tracks)
    last = run.last_run or {}
    met = sum(bool(t.target_met) for t in tracks if t.status == "done")
    stages = ", ".join(f"{k} {v}" for k, v in sorted(run.failures_by_stage.items())) or "none"
    head = (
        f"<h1>Acetate review: {_e(os.path.abspath(run.out_root))}</h1>"
        f"<p>last run {_e(last.get('run_id', '—'))} ({_e(last.get('job', ''))}, {_e(last.get('status', ''))})</p>"
        f'<div class="counts" role="status"><span>tracks <b>{len(tracks)}</b></span><span>done <b>{n_done}</b></span>'
        f"<span>failed <b>{n_failed}</b></span><span>skipped in the last run <b>{_e(last.get('skipped', '—'))}</b></span>"
        f"<span>targets met <b>{met}/{n_done}</b></span></div><p>failures by stage: {_e(stages)}</p>"
    )
    rows = "".join(
        f'<li><a href="tracks/{_e(e.name)}.html">{_e(e.track_id)}</a> — <span data-kind="{_e(e.kind)}">{_e(e.reason)}</span></li>'
        for e in tri
    )
    triage = f'<h2 id="triage">Check these first</h2><ol class="triage">{rows or "<li>nothing stands out</li>"}</ol>'
    figs = "".join(
        f'<figure><img src="assets/{k}.svg" alt="{_e(alt)}" width="460"><figcaption>{_e(alt)}</figcaption></figure>'
        for k, alt in (
            ("loudness", "input vs output integrated loudness"),
            ("lra", "loudness range before and after"),
            ("presets", "preset usage"),
            ("gain", "histogram of gain applied"),
        )
        if k in svgs
    )
    ths = "".join(f'<th scope="col"><button type="button">{_e(label)}</button></th>' for label, _, _ in COLUMNS)
    body_rows = "\n".join(
        f'<tr data-status="{_e(t.status)}"{" class=failed" if t.status == "failed" else ""}>'
        + "".join(_cell(t, a, s) for _, a, s in COLUMNS)
        + "</tr>"
        for t in tracks
    )
    table = (
        '<h2>All tracks</h2><p><label for="filter">Filter </label><input id="filter" type="search" placeholder="track, album, preset…"> '
        '<label for="status-filter">status </label><select id="status-filter"><option value="">all</option><option>done</option>'
        f'<option>failed</option></select> showing <span id="shown">{len(tracks)}</span> of {len(tracks)}</p>'
        f'<table id="tracks" class="sortable"><caption>Every track of the run (select a column heading to sort)</caption>'
        f"<thead><tr>{ths}</tr></thead><tbody>\n{body_rows}\n</tbody></table>"
    )
    return _page("Acetate review", head + triage + f'<h2>Plots</h2><div class="plots">{figs}</div>' + table, SORT_JS)


def _track_page(t: rdata.TrackRow, assets: dict[str, Any]) -> str:
    a = f"../assets/{t.name}/"
    parts = [f'<p><a href="../index.html">← catalogue</a></p><h1>{_e(t.track_id)}</h1>']
    facts = [
        ("status", t.status),
        ("album", t.album),
        ("target", t.target),
        ("preset rendered", t.preset),
        ("nearest preset", t.nearest),
        ("distance", _f(t.distance, ".3f")),
        ("confidence", _f(t.confidence, ".2f")),
        ("integrated loudness in → out (LUFS)", f"{_f(t.in_lufs)} → {_f(t.out_lufs)}"),
        ("loudness range in → out (LU)", f"{_f(t.in_lra)} → {_f(t.out_lra)}"),
        ("true peak in → out (dBTP)", f"{_f(t.in_tp, '.2f')} → {_f(t.out_tp, '.2f')}"),
        ("gain applied (dB)", _f(t.gain_db, ".2f")),
        ("limiter gain reduction (dB)", _f(t.limiter_db, ".2f")),
        ("target met / ceiling met", f"{_yn(t.target_met)} / {_yn(t.ceiling_met)}"),
        ("speech likeness", _f(t.speech_likeness, ".2f")),
        ("input", t.input_path),
        ("master", t.master_path),
    ]
    if t.status == "failed":
        facts.insert(1, ("failure", f"[{t.failure_stage}] {t.failure_message}"))
    parts.append(
        "<table><tbody>" + "".join(f'<tr><th scope="row">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in facts) + "</tbody></table>"
    )
    if "spectrum" in assets:
        parts.append(
            f'<h2>Spectrum</h2><img id="spectrum" src="{a}spectrum.svg" alt="long-term spectrum of input, output and target" width="640">'
        )
    if "short_term" in assets:
        parts.append(
            f'<h2>Loudness over time</h2><img id="short-term" src="{a}short_term.svg" alt="short-term loudness before and after" width="640">'
        )
    ex = assets.get("excerpts")
    if ex:
        parts.append(
            f"<h2>Listen: A (mix) / B (master)</h2><p>{ex['seconds']:.0f} s from {ex['start_s']:.1f} s, both matched to "
            f"{ex['lufs']:.0f} LUFS for listening only (mix {ex['a_gain_db']:+.1f} dB, master {ex['b_gain_db']:+.1f} dB).</p>"
            '<div class="ab" role="group" aria-label="A/B toggle"><button type="button" data-which="a" aria-pressed="true">A: mix</button>'
            '<button type="button" data-which="b" aria-pressed="false">B: master</button></div>'
            f'<p><label>A (mix) <audio id="audio-a" controls preload="auto" src="{a}a.opus"></audio></label></p>'
            f'<p><label>B (master) <audio id="audio-b" controls preload="auto" src="{a}b.opus"></audio></label></p>'
        )
    elif assets.get("excerpt_error"):
        parts.append(f"<p>No A/B excerpt: {_e(assets['excerpt_error'])}</p>")
    near = [(t.nearest, t.distance)] if t.nearest else []
    near += [(r.get("name"), r.get("distance")) for r in t.runners_up]
    if near:
        parts.append(
            '<h2>Nearest presets</h2><table><thead><tr><th scope="col">preset</th><th scope="col">distance</th></tr></thead><tbody>'
            + "".join(f'<tr><td>{_e(n)}</td><td class="num">{_f(d, ".3f")}</td></tr>' for n, d in near)
            + "</tbody></table>"
        )
    if t.params:
        notes = t.params.get("notes") or []
        if notes:
            parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
        shown = {k: v for k, v in t.params.items() if k != "notes"}
        parts.append(f"<h2>Chain parameters</h2><pre>{_e(json.dumps(shown, indent=1, sort_keys=True))}</pre>")
    return _page(f"{t.track_id} — Acetate review", "\n".join(parts), AB_JS)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _build_track(t: rdata.TrackRow, report_dir: str, seconds: float, bitrate: int) -> None:
    from acetate.pipeline.report import excerpts

    adir = os.path.join(report_dir, "assets", t.name)
    os.makedirs(adir, exist_ok=True)
    assets: dict[str, Any] = {}
    if t.in_ltas or t.out_ltas:
        _write(os.path.join(adir, "spectrum.svg"), plots.spectrum_svg(rdata.BAND_HZ, t.in_ltas, t.out_ltas, t.target_ltas))
        assets["spectrum"] = True
    if t.status == "done" and t.input_path and t.master_path:
        try:
            ex = excerpts.make_excerpts(
                t.input_path, t.master_path, os.path.join(adir, "a.opus"), os.path.join(adir, "b.opus"), seconds=seconds, bitrate=bitrate
            )
        except (OSError, ValueError) as exc:
            assets["excerpt_error"] = str(exc)
        else:
            assets["excerpts"] = {
                "seconds": ex.seconds,
                "start_s": ex.start_s,
                "lufs": excerpts.LISTEN_LUFS,
                "a_gain_db": ex.a_gain_db,
                "b_gain_db": ex.b_gain_db,
            }
            _write(
                os.path.join(adir, "short_term.svg"), plots.short_term_svg(ex.short_term_in, ex.short_term_out, (ex.start_s, ex.seconds))
            )
            assets["short_term"] = True
    _write(os.path.join(report_dir, "tracks", f"{t.name}.html"), _track_page(t, assets))


def build_report(
    out_root: str | os.PathLike,
    *,
    top: int = 10,
    seconds: float = 20.0,
    bitrate: int = 32000,
    force: bool = False,
    workers: int | None = None,
) -> ReportResult:
    """Build (or bring up to date) ``OUT/report/``; returns what was rebuilt and the triage list."""
    out_root = os.fspath(out_root)
    report_dir = os.path.join(out_root, "report")
    run = rdata.load_run(out_root)
    tri = rdata.triage(run.tracks, top)
    man_path = os.path.join(report_dir, MANIFEST)
    old = store.read_json(man_path) or {}
    settings = {"seconds": seconds, "bitrate": bitrate, "version": MANIFEST_VERSION}
    prev = old.get("tracks", {}) if (old.get("settings") == settings and not force) else {}
    todo = []
    current: dict[str, str] = {}
    for t in run.tracks:
        digest = rdata.row_hash([t.digest, _master_stamp(t.master_path), _master_stamp(t.input_path)])
        current[t.track_id] = digest
        if prev.get(t.track_id) == digest and os.path.exists(os.path.join(report_dir, "tracks", f"{t.name}.html")):
            continue
        todo.append(t)
    workers = max(1, min(workers if workers is not None else (os.cpu_count() or 1), len(todo) // 4))
    if workers > 1:  # track pages are independent: one process per core (matplotlib and the Opus encoder hold the GIL)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_build_track, todo, *zip(*[(report_dir, seconds, bitrate)] * len(todo)), chunksize=8))
    else:
        for t in todo:
            _build_track(t, report_dir, seconds, bitrate)
    rebuilt = [t.track_id for t in todo]
    svgs = plots.catalogue_plots(run.tracks)
    for k, svg in svgs.items():
        _write(os.path.join(report_dir, "assets", f"{k}.svg"), svg)
    index = os.path.join(report_dir, "index.html")
    _write(index, _index(run, tri, svgs))
    os.makedirs(report_dir, exist_ok=True)
    store.write_json(man_path, {"settings": settings, "tracks": current})
    return ReportResult(index=index, tracks=len(run.tracks), rebuilt=rebuilt, triage=tri, run=run)


def _master_stamp(path: str | None) -> Any:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return None if st is None else [st.st_size, st.st_mtime_ns]

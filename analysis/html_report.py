"""``lth-tune report DIR...``: one self-contained HTML page per study (``DIR/report.html``).

The page holds what a reader needs without the results directory: the claims of the papers the study tests
with the measured verdict and its evidence (:mod:`analysis.claims`), every figure of ``lth-tune analyze``
embedded as PNG data, the tables, the trials' status, and the study's full configuration. Studies given
together (e.g. ``results/sgd results/sam results/nvrm``) are also judged together for cross-study claims
(Table 1).
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.claims import NOT_TESTABLE, evaluate_claims
from analysis.common import load_experiment, tickets_only
from analysis.flatness import annotate

__all__ = ["write_reports"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#1d1d1f}
h1{font-size:22px;margin-bottom:2px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin:18px 0 6px} .meta{color:#555}
table{border-collapse:collapse;margin:8px 0 14px;font-size:12.5px} th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f6} img{max-width:100%;border:1px solid #eee;margin:6px 0}
.supported{color:#0a7a2f;font-weight:600} .contradicted{color:#b3261e;font-weight:600}
.not-distinguishable{color:#8a6d00;font-weight:600} .not-testable{color:#777}
pre{background:#f7f7f9;padding:10px;overflow:auto;font-size:12px} details{margin:8px 0}
figure{margin:10px 0} figcaption{color:#555;font-size:12px}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _md_to_html(text: str) -> str:
    """The Markdown our analyses write: headings, bullet lists, pipe tables and paragraphs."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?|-+", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                head = "".join(f"<th>{_esc(c)}</th>" for c in rows[0])
                body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 4)
            out.append(f"<h{level}>{_esc(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_esc(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_esc(line)}</p>")
        i += 1
    return "\n".join(out)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{_esc(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(path.name)}</figcaption></figure>")


def _context(exp_dir: Path, study: dict, df: pd.DataFrame, combined: pd.DataFrame | None) -> dict[str, Any]:
    """Tables the claims read: certified selections (tickets), the certified PBP table, the combined frame."""
    from analysis.selection import certified_pbp_table, certified_selection

    ctx: dict[str, Any] = {"combined": combined}
    sel = {}
    for prefix in ("ss", "gauss"):
        if f"{prefix}_bound" in df and df[f"{prefix}_bound"].notna().any():
            try:
                sel[prefix] = certified_selection(study, tickets_only(df), prefix=prefix)
            except ValueError:
                pass
    ctx["bound_selections"] = sel
    try:
        ctx["pbp_table"] = certified_pbp_table(study, df)
    except ValueError:
        ctx["pbp_table"] = None
    return ctx


def _claims_html(results) -> str:
    rows, untested = [], []
    for claim, v in results:
        if v.verdict == NOT_TESTABLE:
            untested.append(f"<li>{_esc(claim.text)} <span class='not-testable'>({_esc(claim.source)}: "
                            f"{_esc(v.evidence)})</span></li>")
            continue
        css = v.verdict.replace(" ", "-")
        rows.append(f"<tr><td>{_esc(claim.text)}<br><small>{_esc(claim.source)}</small></td>"
                    f"<td class='{css}'>{_esc(v.verdict)}</td><td>{_esc(v.evidence)}</td></tr>")
    body = ("<table><thead><tr><th>claim</th><th>verdict</th><th>evidence (mean ± 95% interval over seeds)</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>") if rows else \
        "<p>No claim of the papers can be judged from this study alone.</p>"
    if untested:
        body += ("<details><summary>claims this study cannot test</summary><ul>" + "".join(untested)
                 + "</ul></details>")
    return body


def _trials_html(exp_dir: Path) -> str:
    path = exp_dir / "trials.csv"
    if not path.is_file():
        return ""
    trials = pd.read_csv(path, keep_default_na=False)
    counts = trials["status"].value_counts().to_dict() if "status" in trials else {}
    text = ", ".join(f"{v} {k.lower()}" for k, v in counts.items())
    errors = trials[trials.get("status", pd.Series(dtype=str)) == "ERROR"] if "status" in trials else trials.iloc[0:0]
    extra = "".join(f"<li>{_esc(r.trial_name)}: {_esc(r.error)}</li>" for r in errors.itertuples())
    return f"<p>Trials: {_esc(text)}.</p>" + (f"<ul>{extra}</ul>" if extra else "")


def render(exp_dir: Path, study: dict, df: pd.DataFrame, analysis_dir: Path, combined: pd.DataFrame | None,
           combined_dir: Path | None = None) -> str:
    s = study.get("study", {})
    name = s.get("name", exp_dir.name)
    ctx = _context(exp_dir, study, df, combined)
    claims = evaluate_claims(study, df, ctx)
    versions = study.get("versions")
    meta = [f"study file {_esc(study.get('source') or '?')}", f"declared grid K = {study.get('grid_size')}",
            f"{study.get('num_trials')} trials", f"{len(df)} result rows"]
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(name)} — lth-tune report</title>"
              f"<style>{_CSS}</style></head><body>"),
             f"<h1>{_esc(name)}</h1><p class='meta'>{_esc(s.get('description', ''))}</p>",
             f"<p class='meta'>{' · '.join(meta)} · written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}</p>"]
    if versions:
        parts.append(f"<p class='meta'>produced with {_esc(', '.join(f'{k} {v}' for k, v in versions.items()))}</p>")
    parts += ["<h2>What this study finds</h2>", _claims_html(claims), _trials_html(exp_dir)]
    md_files = sorted(analysis_dir.glob("*.md"))
    pngs = sorted(analysis_dir.glob("*.png"))
    if combined_dir is not None:
        md_files += sorted(combined_dir.glob("*.md"))
        pngs += sorted(combined_dir.glob("*.png"))
    if pngs:
        parts.append("<h2>Figures</h2>" + "".join(_img(p) for p in pngs))
    if md_files:
        parts.append("<h2>Tables</h2>")
        for md in md_files:
            parts.append(f"<h3>{_esc(md.name)}</h3>" + _md_to_html(md.read_text()))
    parts.append("<h2>Configuration</h2><pre>" + _esc(json.dumps(s, indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(exp_dirs: list[str | Path]) -> list[Path]:
    """Analyse each experiment (figures and tables under ``DIR/analysis``) and write ``DIR/report.html``."""
    from analysis.report import analyze_experiment

    dirs = [Path(d) for d in exp_dirs]
    loaded = [(d, *load_experiment(d)) for d in dirs]
    for d in dirs:
        analyze_experiment(d, quiet=True)
    combined, combined_dir = None, None
    if len(dirs) > 1:
        combined = pd.concat([annotate(study, tickets_only(df), d.name) for d, study, df in loaded], ignore_index=True)
        combined_dir = dirs[0].parent / "analysis_combined"
        analyze_experiment(dirs, out=combined_dir, quiet=True)  # cross-study tables (Table 1)
    written = []
    for d, study, df in loaded:
        page = render(d, study, df, d / "analysis", combined, combined_dir)
        path = d / "report.html"
        path.write_text(page)
        written.append(path)
    return written

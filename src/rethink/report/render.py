"""Write a study's report: report/index.html (one self-contained page), report.md, summary.json, figures/.

The HTML embeds every figure as a base64 PNG data URI and carries its CSS inline, so it opens from the
file system with no server and no network. Both documents are built from the same summary dict and the
same table rows, so they say the same thing.
"""

import base64
import html
from pathlib import Path

from rethink.fileio import atomic_write_json, atomic_write_text
from rethink.report import findings, forecast_words, words
from rethink.report.figures import write_figures
from rethink.report.forecasts import study_forecast
from rethink.report.words import STATUS_WORDS
from rethink.study.plan import other_key
from rethink.study.results import PRIMARY, load_results


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: #1d1d1f; background: #fff; margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 22px 0 8px; }
.sub { color: #555; margin: 0 0 14px; }
.box { border-radius: 6px; padding: 10px 14px; margin: 12px 0; }
.warn { background: #fff6e0; border: 1px solid #f0c36d; }
.note { background: #eef4fb; border: 1px solid #b9d2ee; }
ul.findings { list-style: none; padding: 0; margin: 0; }
ul.findings li { margin: 0 0 14px; padding: 10px 14px; border-left: 5px solid #bbb; background: #fafafa; }
ul.findings li.holds { border-left-color: #2e8b57; }
ul.findings li.does_not_hold { border-left-color: #c0392b; }
ul.findings li.not_enough_evidence { border-left-color: #999; }
.q { font-weight: 600; display: block; margin-bottom: 3px; }
.badge { display: inline-block; font-size: 12px; font-weight: 600; padding: 1px 8px; border-radius: 10px;
         margin-left: 6px; color: #fff; vertical-align: 1px; white-space: nowrap; }
.badge.holds { background: #2e8b57; }
.badge.does_not_hold { background: #c0392b; }
.badge.not_enough_evidence { background: #888; }
figure { margin: 18px 0 28px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; border: 1px solid #eee; }
figcaption { font-size: 13.5px; color: #444; margin-top: 6px; }
.scroll { overflow-x: auto; margin: 8px 0 18px; }
table { border-collapse: collapse; font-size: 12.5px; white-space: nowrap; }
th, td { padding: 4px 7px; text-align: right; border-bottom: 1px solid #e5e5e5; }
th { background: #f3f3f3; white-space: normal; vertical-align: bottom; }
td.l, th.l { text-align: left; }
tr.failed td { background: #fdecea; }
tr.running td, tr.pending td { color: #777; }
td.reason { white-space: normal; min-width: 240px; text-align: left; }
code { font-size: 13px; }
"""


# ---------------------------------------------------------------------------------------------
# Shared content: the same words and rows for HTML and Markdown
# ---------------------------------------------------------------------------------------------


def _pm(entry: dict | None) -> str:
    """'40.3 ± 0.2' from a {mean, std}; just the mean with one value."""
    if not entry or entry.get("mean") is None:
        return "-"
    if entry.get("std") is None:
        return f"{entry['mean']:.1f}"
    return f"{entry['mean']:.1f} ± {entry['std']:.1f}"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _pm_duration(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    text = _duration(entry["mean"])
    return text if entry.get("std") is None else f"{text} ± {_duration(entry['std'])}"


def _pm_iters(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    text = words.fmt_int(entry["mean"])
    return text if not entry.get("std") else f"{text} ± {words.fmt_int(entry['std'])}"


def _size(entry: dict) -> str:
    return words.size_label(entry["train_size"], entry.get("train_images"))


def verdict_groups(summary: dict) -> list:
    """[(heading, [(question, status, text)])] for each pretrained source (and other-axis value)."""
    groups = []
    verdicts = findings.all_verdicts(summary)
    several_others = len({other_key(v["other"]) for v in verdicts}) > 1
    for verdict in verdicts:
        label = (summary.get("source_labels") or {}).get(verdict["source"], verdict["source"])
        heading = words.verdict_heading(label, verdict["other"], several_others)
        items = [(question, verdict["findings"][key]["status"], verdict["findings"][key]["text"])
                 for key, question in words.FINDING_QUESTIONS]
        groups.append((heading, items))
    if not groups:
        items = [(question, summary["findings"][key]["status"], summary["findings"][key]["text"])
                 for key, question in words.FINDING_QUESTIONS]
        groups.append((words.verdict_heading("pretrained", {}, False), items))
    return groups


def cell_table(summary: dict) -> tuple:
    cells = summary["cells"]
    any_other = any(c["other"] for c in cells)
    keys = []
    for task in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75"):
            key = f"{task}/{name}"
            if any(key in c["metrics"] for c in cells):
                keys.append(key)
    headers = ["init", "schedule", "training set"] + (["config"] if any_other else []) + ["n"]
    headers += [k.replace("bbox/", "box ").replace("segm/", "mask ") for k in keys]
    headers += ["best box AP", "iters to 90% of best AP", "wall time"]
    rows = []
    for c in cells:
        row = [c["init"], c["schedule"], _size(c)] + ([words.other_label(c["other"])] if any_other else [])
        row += [str(c["n_seeds"])] + [_pm(c["metrics"].get(k)) for k in keys]
        row += [_pm(c["best"].get(PRIMARY)), _pm_iters(c["iters_to_90"]), _pm_duration(c["wall_time_s"])]
        rows.append(row)
    return headers, rows, set(range(4 if any_other else 3))  # label columns, left-aligned


def comparison_table(summary: dict) -> tuple:
    comps = summary["comparisons"]
    any_other = any(c["other"] for c in comps)
    headers = ["pretrained", "schedule", "training set"] + (["config"] if any_other else [])
    headers += ["n", "Δ box AP", "95% CI", "significant", "Δ AP50", "Δ AP75", "Δ best AP"]
    rows = []
    for c in comps:
        ap = c["final"].get(PRIMARY)
        ci = "-" if ap is None or ap["ci_low"] is None else f"[{ap['ci_low']:+.1f}, {ap['ci_high']:+.1f}]"
        sig = {True: "yes", False: "no", None: "no claim (n=1)"}[ap["significant"] if ap else None]
        row = [c["source"], c["schedule"], _size(c)] + ([words.other_label(c["other"])] if any_other else [])
        row += [str(ap["n"] if ap else 0), words.fmt_signed(ap["mean"] if ap else None), ci, sig,
                words.fmt_signed((c["final"].get("bbox/AP50") or {}).get("mean")),
                words.fmt_signed((c["final"].get("bbox/AP75") or {}).get("mean")),
                words.fmt_signed((c["best"].get(PRIMARY) or {}).get("mean"))]
        rows.append(row)
    return headers, rows, set(range(4 if any_other else 3))


def pretrain_table(summary: dict) -> tuple:
    headers = ["source", "top-1 (%)", "iterations", "images seen", "pixels seen", "wall time"]
    rows = []
    for source in summary["sources"]:
        rec = summary["pretrain"].get(source)
        if rec is None:
            note = summary["pretrain_notes"].get(source, "not recorded")
            rows.append([source, "not recorded", "-", "-", "-", note if note != "not recorded" else "-"])
            continue
        top1 = rec.get("top1")
        rows.append([source, "-" if top1 is None else f"{top1:.1f}", words.fmt_int(rec.get("iters")),
                     words.fmt_count(rec.get("images_seen")), words.fmt_count(rec.get("pixels_seen")),
                     _duration(rec.get("wall_time_s"))])
    return headers, rows, {0}


def runs_table(summary: dict) -> tuple:
    headers = ["run", "init", "schedule", "training set", "seed", "state", "progress (iterations)", "final box AP",
               "note"]
    rows, classes = [], []
    for r in summary["runs"]:
        progress = f"{words.fmt_int(r['last_iter']) if r['last_iter'] is not None else 0} / {words.fmt_int(r['iters'])}"
        note = words.run_note(r, next((f for f in summary["failed"] if f["name"] == r["name"]), None))
        final_ap = words.fmt_ap(r["final_ap"]) if r["final_ap"] is not None else "-"
        rows.append([r["name"], r["init"], r["schedule"], _size(r), str(r["seed"]), r["state"], progress,
                     final_ap, note])
        classes.append(r["state"])
    return headers, rows, {0, 1, 2, 3, 5, 8}, classes


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _html_table(headers, rows, left: set, row_classes=None, reason_col: int | None = None) -> str:
    def cls(i):
        return ' class="l"' if i in left else ""

    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(headers)]
    out.append("</tr></thead><tbody>")
    for r, row in enumerate(rows):
        klass = f' class="{_e(row_classes[r])}"' if row_classes else ""
        out.append(f"<tr{klass}>")
        for i, value in enumerate(row):
            cell_cls = ' class="reason"' if i == reason_col else cls(i)
            out.append(f"<td{cell_cls}>{_e(value)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _html_answers_and_verdict(summary: dict) -> list:
    parts = [f"<h2>{words.HEADINGS['answers']}</h2>", '<ul class="findings">']
    for _, title, text in words.question_answers(summary):
        parts.append(f'<li><span class="q">{_e(title)}</span>{_e(text)}</li>')
    parts.append("</ul>")

    parts.append(f"<h2>{words.HEADINGS['verdict']}</h2>")
    sig = words.significance_text(summary)
    if sig:
        parts.append(f'<div class="box note">{_e(sig)}</div>')
    groups = verdict_groups(summary)
    for heading, items in groups:
        if len(groups) > 1:
            parts.append(f"<h3>{_e(heading)}</h3>")
        parts.append('<ul class="findings">')
        for question, status, text in items:
            parts.append(f'<li class="{_e(status)}"><span class="q">{_e(question)}'
                         f'<span class="badge {_e(status)}">{_e(STATUS_WORDS[status])}</span></span>{_e(text)}</li>')
        parts.append("</ul>")
    return parts


def _html_figures(figures: list, skipped: list) -> list:
    parts = [f"<h2>{words.HEADINGS['figures']}</h2>"]
    for number, fig in enumerate(figures, 1):
        data = base64.b64encode(Path(fig["png"]).read_bytes()).decode("ascii")
        # 100 CSS px per figure inch: every figure shows its 9 pt text at the same size on the page
        width = int(round(fig["width_in"] * 100))
        parts.append(f'<figure id="{_e(fig["name"])}"><img alt="{_e(fig["title"])}" style="width: {width}px" '
                     f'src="data:image/png;base64,{data}">'
                     f"<figcaption><b>Figure {number}. {_e(fig['title'])}.</b> {_e(fig['caption'])} "
                     f"(PNG and SVG in <code>report/figures/{_e(fig['name'])}.*</code>)</figcaption></figure>")
    if skipped:
        parts.append(f"<p>{words.HEADINGS['not_drawn']}</p><ul>")
        parts += [f"<li>{_e(s['name'])}: {_e(s['reason'])}</li>" for s in skipped]
        parts.append("</ul>")
    return parts


def _html_tables_and_runs(summary: dict) -> list:
    parts = [f"<h2>{words.HEADINGS['tables']}</h2>", f"<h3>{_e(words.HEADINGS['cells'])}</h3>"]
    headers, rows, left = cell_table(summary)
    parts.append(_html_table(headers, rows, left) if rows else f"<p>{words.EMPTY['cells']}</p>")
    parts.append(f"<h3>{words.HEADINGS['comparisons']}</h3>")
    headers, rows, left = comparison_table(summary)
    parts.append(_html_table(headers, rows, left) if rows else f"<p>{words.EMPTY['comparisons']}</p>")
    if summary["sources"]:
        parts.append(f"<h3>{words.HEADINGS['pretrain']}</h3>")
        headers, rows, left = pretrain_table(summary)
        parts.append(_html_table(headers, rows, left))

    parts.append(f"<h2>{words.HEADINGS['runs']}</h2>")
    parts += [f"<p>{_e(text)}</p>" for text in words.adaptive_sentences(summary)]
    if summary["failed"]:
        parts.append(f"<p>{words.HEADINGS['failed']}</p><ul>")
        parts += [f"<li>{_e(words.failed_run_line(f['name'], f['iter'], f['reason']))}</li>" for f in summary["failed"]]
        parts.append("</ul>")
    headers, rows, left, classes = runs_table(summary)
    parts.append(_html_table(headers, rows, left, classes, reason_col=len(headers) - 1) if rows
                 else f"<p>{words.EMPTY['runs']}</p>")
    return parts


def render_html(summary: dict, figures: list, skipped: list) -> str:
    title = words.report_title(summary["name"])
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(title)}</title>", f"<style>{CSS}</style></head><body><main>",
             f"<h1>{_e(title)}</h1>", f'<p class="sub">{_e(words.status_line(summary))}</p>']
    incomplete = words.incomplete_text(summary)
    if incomplete:
        parts.append(f'<div class="box warn">{_e(incomplete)}</div>')
    parts += _html_answers_and_verdict(summary)

    parts.append(f"<h2>{words.HEADINGS['forecast']}</h2>")
    parts += [f"<p>{_e(text)}</p>" for text in forecast_words.forecast_sentences(summary)]
    headers, rows, left = forecast_words.forecast_rows(summary)
    if rows:
        parts.append(_html_table(headers, rows, left))

    parts += _html_figures(figures, skipped)
    parts += _html_tables_and_runs(summary)
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers, rows) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(summary: dict, figures: list, skipped: list) -> str:
    out = [f"# {words.report_title(summary['name'])}", "", words.status_line(summary), ""]
    incomplete = words.incomplete_text(summary)
    if incomplete:
        out += [f"> **Incomplete.** {incomplete}", ""]
    out += [f"## {words.HEADINGS['answers']}", ""]
    out += [f"- **{title}** {text}" for _, title, text in words.question_answers(summary)]
    out += ["", f"## {words.HEADINGS['verdict']}", ""]
    sig = words.significance_text(summary)
    if sig:
        out += [f"> {sig}", ""]
    groups = verdict_groups(summary)
    for heading, items in groups:
        if len(groups) > 1:
            out += [f"### {heading}", ""]
        for question, status, text in items:
            out.append(f"- **{question}** *{STATUS_WORDS[status]}.* {text}")
        out.append("")
    out += [f"## {words.HEADINGS['forecast']}", ""]
    for text in forecast_words.forecast_sentences(summary):
        out += [text, ""]
    headers, rows, _ = forecast_words.forecast_rows(summary)
    if rows:
        out += [_md_table(headers, rows), ""]
    out += [f"## {words.HEADINGS['figures']}", ""]
    for number, fig in enumerate(figures, 1):
        out += [f"![{fig['title']}](figures/{fig['name']}.png)", "",
                f"*Figure {number}. {fig['title']}.* {fig['caption']} (SVG: `figures/{fig['name']}.svg`)", ""]
    if skipped:
        out += [words.HEADINGS["not_drawn"], ""] + [f"- {s['name']}: {s['reason']}" for s in skipped] + [""]
    out += [f"## {words.HEADINGS['tables']}", "", f"### {words.HEADINGS['cells']}", ""]
    headers, rows, _ = cell_table(summary)
    out += [_md_table(headers, rows) if rows else words.EMPTY["cells"], ""]
    out += [f"### {words.HEADINGS['comparisons']}", ""]
    headers, rows, _ = comparison_table(summary)
    out += [_md_table(headers, rows) if rows else words.EMPTY["comparisons"], ""]
    if summary["sources"]:
        headers, rows, _ = pretrain_table(summary)
        out += [f"### {words.HEADINGS['pretrain']}", "", _md_table(headers, rows), ""]
    out += [f"## {words.HEADINGS['runs']}", ""]
    for text in words.adaptive_sentences(summary):
        out += [text, ""]
    if summary["failed"]:
        out += [words.HEADINGS["failed"], ""]
        out += [f"- {words.failed_run_line(f['name'], f['iter'], f['reason'])}" for f in summary["failed"]]
        out.append("")
    headers, rows, _, _ = runs_table(summary)
    out += [_md_table(headers, rows) if rows else words.EMPTY["runs"], ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def write_report(study_dir) -> Path:
    """Read the study in `study_dir` and write study_dir/report/; return the path of report/index.html.

    Works on a study that is still running or has failed runs: those are listed as missing and the
    numbers use the done runs only.
    """
    study_dir = Path(study_dir)
    study = load_results(study_dir)
    summary = findings.summarize(study)
    summary["forecast"] = study_forecast(study)
    summary = words.add_text(summary)
    out = study_dir / "report"
    figures, skipped = write_figures(study, summary, out / "figures")
    summary["figures"] = [{"name": f["name"], "title": f["title"], "caption": f["caption"],
                           "png": f"figures/{f['png'].name}", "svg": f"figures/{f['svg'].name}"} for f in figures]
    summary["figures_not_drawn"] = skipped
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", render_markdown(summary, figures, skipped))
    index = out / "index.html"
    atomic_write_text(index, render_html(summary, figures, skipped))
    return index

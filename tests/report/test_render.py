"""write_report on fixture studies: a valid, self-contained page, and files that agree with the runs."""

import base64
import json
import math
from html.parser import HTMLParser

import pytest
from study_fixture import make_study, run_name

from rethink.report import findings
from rethink.report.render import write_report


class PageParser(HTMLParser):
    """Collects every src/href and checks that each opened tag is closed (void elements aside)."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source"}

    def __init__(self):
        super().__init__()
        self.urls, self.stack, self.tags, self.errors = [], [], [], []
        self.text, self.h2 = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href"):
                self.urls.append(value)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self.stack and self.stack[-1] == "h2":
            self.h2.append(data)


def parse(html_text: str) -> PageParser:
    parser = PageParser()
    parser.feed(html_text)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = make_study(tmp_path_factory.mktemp("study"))
    index = write_report(path)
    return path, index


def test_index_is_valid_html_with_every_figure_embedded(report):
    path, index = report
    assert index == path / "report" / "index.html"
    page = parse(index.read_text(encoding="utf-8"))
    assert page.errors == [] and page.stack == []
    pngs = sorted((path / "report" / "figures").glob("*.png"))
    svgs = sorted((path / "report" / "figures").glob("*.svg"))
    assert [p.stem for p in pngs] == [s.stem for s in svgs]
    assert {p.stem for p in pngs} == {"ap_vs_iterations", "speedup", "ap_vs_schedule", "ap_vs_train_size",
                                      "compute", "overfitting", "forecast"}
    data_uris = [u for u in page.urls if u.startswith("data:image/png;base64,")]
    assert len(data_uris) == len(pngs) == page.tags.count("img")
    embedded = {base64.b64decode(u.split(",", 1)[1]) for u in data_uris}
    assert embedded == {p.read_bytes() for p in pngs}


def test_index_has_no_external_references(report):
    _, index = report
    text = index.read_text(encoding="utf-8")
    page = parse(text)
    assert all(u.startswith("data:") for u in page.urls)
    assert "script" not in page.tags and "link" not in page.tags
    assert "http://" not in text and "https://" not in text


def test_answers_then_verdict_come_first_with_numbers(report):
    path, index = report
    page = parse(index.read_text(encoding="utf-8"))
    assert page.h2 == ["Answers", "Verdict", "Forecast", "Figures", "Tables", "Runs"]
    text = " ".join(page.text)
    summary = json.loads((path / "report" / "summary.json").read_text())
    for finding in summary["findings"].values():
        assert finding["text"] in text
    for key in ("necessary", "helpful", "more_data", "how_long"):
        answer = summary["questions"][key]
        assert answer["question"] in text and answer["text"] in text
    assert summary["questions"]["how_long"]["text"].startswith("4x (3,600 iterations)")
    assert text.count("holds") >= 4


def test_summary_json_matches_final_json_files(report):
    path, _ = report
    # strict JSON: NaN would fail here
    summary = json.loads((path / "report" / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert {"cells", "findings", "headline", "other_verdicts", "n_seeds", "margin_ap", "missing", "failed"} <= set(summary)
    assert set(summary["findings"]) == {"converges_faster", "catches_up", "small_data_hurts_random", "localization"}
    assert {k: v["status"] for k, v in summary["findings"].items()} == dict.fromkeys(summary["findings"], "holds")
    assert summary["missing"] == [] and summary["failed"] == []
    for cell in summary["cells"]:
        assert set(cell) >= {"init", "schedule", "train_size", "other", "n_seeds", "metrics", "iters_to_90",
                             "wall_time_s"}
        finals = [json.loads((path / "runs" / name / "final.json").read_text())["final"] for name in cell["runs"]]
        values = [f["bbox/AP"] for f in finals]
        mean = sum(values) / len(values)
        assert cell["metrics"]["bbox/AP"]["mean"] == pytest.approx(mean, abs=1e-12)
        assert cell["metrics"]["bbox/AP"]["std"] == pytest.approx(
            math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), abs=1e-12)
    assert [f["png"] for f in summary["figures"]] == [
        "figures/ap_vs_iterations.png", "figures/speedup.png", "figures/ap_vs_schedule.png",
        "figures/ap_vs_train_size.png", "figures/compute.png", "figures/overfitting.png", "figures/forecast.png"]
    # the forecast section: every schedule beyond the study's longest is forecast, none is observed
    forecast = summary["forecast"]
    assert {c["schedule"] for c in forecast["cells"] if c["observed_final_ap"] is None} == {"5x", "6x", "7x", "8x"}
    assert all(c["interval"][0] <= c["predicted_final_ap"] <= c["interval"][1]
               for c in forecast["cells"] if c["predicted_final_ap"] is not None)
    full = next(c for c in forecast["catch_up"] if c["train_size"] == "full")
    assert full["schedule"] == "4x"  # observed: random init is within the margin at 4x


def test_markdown_references_the_figure_files(report):
    path, _ = report
    md = (path / "report" / "report.md").read_text(encoding="utf-8")
    for png in (path / "report" / "figures").glob("*.png"):
        assert f"](figures/{png.name})" in md
    assert md.index("## Answers") < md.index("## Verdict") < md.index("## Figures") < md.index("## Tables") < md.index("## Runs")
    summary = json.loads((path / "report" / "summary.json").read_text())
    assert summary["findings"]["catches_up"]["text"] in md


def test_incomplete_one_seed_study_renders_and_says_what_is_missing(tmp_path):
    failed = run_name("random", "2x", 500, 0)
    pending = run_name("pretrain", "2x", "full", 0)
    path = make_study(tmp_path, sizes=(500, "full"), schedules=("1x", "2x"), seeds=(0,),
                      states={failed: "failed", pending: "pending"})
    index = write_report(path)
    html_text = index.read_text(encoding="utf-8")
    page = parse(html_text)
    assert page.errors == []
    text = " ".join(page.text)
    assert "This study is incomplete: 2 of 8 runs are not done (1 failed, 1 pending)" in text
    assert failed in text and pending in text
    assert "failed at iteration 1,200: non-finite loss at iteration 1200" in text
    assert "no claim of significance can be made" in text
    summary = json.loads((path / "report" / "summary.json").read_text())
    assert [m["name"] for m in summary["missing"]] == [failed, pending]
    assert summary["failed"][0]["iter"] == 1200
    assert summary["n_seeds"] == 1
    # the catches_up cell at the largest size lost its pretrained 2x run: only 1x is left there, where
    # random init is far behind
    assert summary["findings"]["catches_up"]["status"] == "does_not_hold"
    assert summary["findings"]["catches_up"]["schedule_longest"] == "1x"
    md = (path / "report" / "report.md").read_text(encoding="utf-8")
    assert "**Incomplete.**" in md and failed in md
    # every figure written is embedded, whatever the study allowed to draw
    pngs = list((path / "report" / "figures").glob("*.png"))
    assert sum(u.startswith("data:image/png") for u in page.urls) == len(pngs) > 0


def test_study_with_nothing_done_yet_still_renders(tmp_path):
    runs = [run_name(init, "1x", "full", 0) for init in ("random", "pretrain")]
    path = make_study(tmp_path, sizes=("full",), schedules=("1x",), seeds=(0,),
                      states={runs[0]: "running", runs[1]: "pending"})
    # a running run with no evaluation yet: keep only its first training line
    metrics = path / "runs" / runs[0] / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    index = write_report(path)
    page = parse(index.read_text(encoding="utf-8"))
    assert page.errors == [] and "img" not in page.tags
    text = " ".join(page.text)
    assert "2 of 2 runs are not done (1 pending, 1 running)" in text
    assert "Not drawn yet" in text and "no run has an evaluation yet" in text
    summary = json.loads((path / "report" / "summary.json").read_text())
    assert summary["cells"] == []
    assert {f["status"] for f in summary["findings"].values()} == {"not_enough_evidence"}
    assert list((path / "report" / "figures").glob("*")) == []


def test_figures_of_an_earlier_report_that_are_no_longer_drawn_are_removed(tmp_path):
    path = make_study(tmp_path, sizes=("full",), schedules=("1x",), seeds=(0,))
    stale = path / "report" / "figures" / "ap_vs_train_size.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    write_report(path)
    names = sorted(p.name for p in (path / "report" / "figures").iterdir())
    assert "ap_vs_train_size.png" not in names
    assert names == ["ap_vs_iterations.png", "ap_vs_iterations.svg", "compute.png", "compute.svg",
                     "forecast.png", "forecast.svg", "overfitting.png", "overfitting.svg", "speedup.png", "speedup.svg"]


def test_summary_json_carries_each_finding_once(report):
    """One copy of each finding: the headline comparison's at the top, every other comparison's in other_verdicts."""
    path, _ = report
    text = (path / "report" / "summary.json").read_text(encoding="utf-8")
    summary = json.loads(text)
    assert len(findings.all_verdicts(summary)) == 1
    assert text.count('"seeds_to_settle"') == 4  # the four findings, each once

"""Every sentence of the report is built in words.py (the figures' in captions.py, the forecast section's in
forecast_words.py): render.py lays out pages, forecasts.py computes, figures.py, figure_style.py and
forecast_figure.py draw; none writes prose (a sentence template there would drift from the words the
findings and answers use)."""

import ast
from pathlib import Path

import rethink.report

REPORT = Path(rethink.report.__file__).parent
MAX_WORDS = 5  # axis labels, legend entries and table headers ("iters to 90% of best AP") are phrases


def prose(path: Path) -> list:
    """The string literals of a module with more than MAX_WORDS words, docstrings and the CSS left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))  # a docstring
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CSS" for t in node.targets):
            skip.add(id(node.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if "<" in text or "{" in text:  # markup and format specs are layout, not words
                continue
            if len([w for w in text.split() if any(c.isalpha() for c in w)]) > MAX_WORDS:
                found.append((node.lineno, text))
    return found


def test_render_and_figures_build_no_sentences():
    for name in ("render.py", "figures.py", "figure_style.py", "forecast_figure.py", "forecasts.py"):
        assert prose(REPORT / name) == [], name


def test_the_check_sees_a_sentence(tmp_path):
    path = tmp_path / "module.py"
    path.write_text('"""A docstring may say anything it likes."""\nCAPTION = "Box AP at the end of each schedule."\n')
    assert prose(path) == [(2, "Box AP at the end of each schedule.")]

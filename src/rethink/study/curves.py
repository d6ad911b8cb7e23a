"""The pre-drop curve families the forecast fits (study/forecast.py): their formulas, a least-squares fit from
several starts, and the Akaike weights that mix them. t is iterations in units of 1x.

    exp: a - b * exp(-t / tau)          pow: a - b * t^(-c)          hill: a / (1 + (k / t)^d)

exp and pow are concave from the start (a pretrained arm's curve); hill is S-shaped in log t when d > 1 (a
random-init curve that starts slowly). Numbers only.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

MIN_POINTS = 4  # three parameters per family, and one degree of freedom for the residuals
FAMILIES = ("exp", "pow", "hill")
N_PARAMS = 3
AP_MAX = 100.0
# A perfect fit would give SSE = 0 and an infinite Akaike weight: residuals below 0.01 AP are treated as 0.01
SSE_FLOOR_PER_POINT = 1e-4


# ---------------------------------------------------------------------------------------------
# The curve families
# ---------------------------------------------------------------------------------------------


def _exp(x, a, b, tau):
    return a - b * np.exp(-x / tau)


def _pow(x, a, b, c):
    return a - b * np.power(x, -c)


def _hill(x, a, k, d):
    return a / (1.0 + np.power(k / np.maximum(x, 1e-9), d))


_FUNCS = {"exp": _exp, "pow": _pow, "hill": _hill}
_BOUNDS = {"exp": ([0.0, 0.0, 1e-3], [AP_MAX, 1e3, 1e3]), "pow": ([0.0, 0.0, 0.05], [AP_MAX, 1e4, 10.0]),
           "hill": ([0.0, 1e-3, 0.2], [AP_MAX, 1e3, 8.0])}


def curve_value(family: str, params, x):
    """The pre-drop curve at x (iterations in units of 1x)."""
    return _FUNCS[family](np.asarray(x, dtype=float), *params)


@dataclass(frozen=True)
class CurveFit:
    family: str
    params: tuple  # exp: (a, b, tau); pow: (a, b, c); hill: (a, k, d); x in units of 1x
    sse: float
    n: int
    residuals: tuple

    @property
    def aic(self) -> float:
        return self.n * math.log(max(self.sse, SSE_FLOOR_PER_POINT * self.n) / self.n) + 2 * N_PARAMS


def _starts(family: str, x, y) -> list:
    top = float(np.max(y))
    x0, x_end = float(np.min(x)), float(np.max(x))
    starts = []
    for a in (top + 1.0, 1.3 * top + 1.0, 2.0 * top + 1.0):
        a = min(a, AP_MAX - 1e-6)
        if family == "exp":
            for tau in (0.5 * x_end, x_end, 3.0 * x_end):
                starts.append((a, max(a - float(np.min(y)), 1e-3) * math.exp(x0 / tau), tau))
        elif family == "hill":
            for k, d in ((0.5 * x_end, 1.0), (x_end, 2.0), (2.0 * x_end, 3.0)):
                starts.append((a, k, d))
        else:
            for c in (0.3, 1.0, 2.0):
                starts.append((a, max(a - float(y[np.argmin(x)]), 1e-3) * x0**c, c))
    return starts


def _clip_start(family, p0):
    lo, hi = _BOUNDS[family]
    return [min(max(v, l + 1e-9), h - 1e-9) for v, l, h in zip(p0, lo, hi)]


def _least_squares(family, x, y, p0):
    try:
        params, _ = curve_fit(_FUNCS[family], x, y, p0=_clip_start(family, p0), bounds=_BOUNDS[family],
                              maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    pred = curve_value(family, params, x)
    if not np.all(np.isfinite(pred)):
        return None
    return tuple(float(p) for p in params), float(np.sum((y - pred) ** 2)), tuple(float(r) for r in y - pred)


def fit_curve(x, y, family: str, start=None) -> CurveFit | None:
    """Least-squares fit of one family to (x, y); several starts, the best kept. None when nothing converges."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < MIN_POINTS:
        return None
    best = None
    for p0 in ([start] if start is not None else _starts(family, x, y)):
        result = _least_squares(family, x, y, p0)
        if result is not None and (best is None or result[1] < best[1]):
            best = result
    if best is None:
        return None
    return CurveFit(family=family, params=best[0], sse=best[1], n=len(x), residuals=best[2])


def akaike_weights(fits: list) -> list:
    aics = [f.aic for f in fits]
    low = min(aics)
    raw = [math.exp(-(a - low) / 2) for a in aics]
    return [r / sum(raw) for r in raw]

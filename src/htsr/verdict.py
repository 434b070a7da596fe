"""The verdict: what a :class:`~htsr.report.Report` says about the model, in a few plain lines.

A pure function of the report (:func:`verdict`): how many layers were analyzed, which are outside
2 ≤ alpha ≤ 6 (by name), the correlation traps split into outlier dimensions (an index shared by the
traps of several layers) and isolated traps, and for each finding one sentence on what it does and
does not mean, with the numbers of htsr's own measurements stated inline (a user who installed a
wheel has no ``docs/`` folder; the studies are ``docs/overtraining.md`` and ``docs/traps.md`` in the
repository). The HTML report, ``Report.__repr__``, the notebook view and the CLI summary all print it.

Examples
--------
>>> import numpy as np, htsr
>>> W = np.random.default_rng(0).standard_normal((300, 100))
>>> print(verdict_text(htsr.analyze({"fc.weight": W}, progress=False)).splitlines()[0])
1 layer analyzed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from .spectral.powerlaw import OVER_TRAINED, UNDER_TRAINED

#: How many layer names one line lists before "and N more".
MAX_NAMES = 8

# What each finding does and does not mean, with the numbers of htsr's own studies
# (docs/overtraining.md: 25 MLP runs on scikit-learn's digits; docs/traps.md: all-MiniLM-L6-v2).
MEANING_LOW = ("alpha < 2 is a heavier tail than well-trained layers show. In htsr's study (a small MLP, 25 runs) "
               "a hidden layer fell below 2 in all 10 runs trained on 20 % noisy labels and in none of the 15 clean "
               "ones, but only 28–64 epochs after the test loss had turned up: a late sign of memorizing, not an "
               "early warning and not a measure of test accuracy.")
MEANING_HIGH = ("alpha > 6 is a thin tail, as in a layer that training barely moved (the same study's layers started "
                "at mean alpha 7.8 at initialization and fell to 2.5–3.3); it does not say the layer is useless, and "
                "a fit to few eigenvalues is erratic (the study's 10-eigenvalue output layer jumped between evaluations).")
MEANING_OK = ("2 ≤ alpha ≤ 6 is the range of well-trained layers; it is not a guarantee: in htsr's study mean alpha "
              "did not tell over-fitting runs from the others (rank correlation with the final test loss −0.10, "
              "against 0.73 for the plain relative weight change).")
MEANING_DIM = ("An outlier dimension is one index (a neuron, channel or residual-stream coordinate) that carries a very "
               "large weight in several layers: one structure of the model seen in each of them (all-MiniLM-L6-v2 has "
               "one, dimension 99, in 5 layers, 2.8e-10 expected by chance), not a sign that each layer over-fit; it "
               "does pull those layers' alpha and lambda_max, and removing it changes what the model computes.")
MEANING_ISOLATED = ("An isolated trap is a large weight private to its layer (a memorized feature or a damaged value) "
                    "and the trap worth inspecting; it is not proof of over-training: in htsr's study no trap appeared "
                    "in any of 25 runs, over-fitting or not, and a trap near its bulk edge (ratio near 1) is weak "
                    "evidence.")
MEANING_NO_TRAPS = ("No correlation trap: no weight survives the shuffle as an outlier. That does not mean the model "
                    "did not over-fit: in htsr's study no trap appeared in any of 25 runs, 21 of which over-fit.")
NOT_LOOKED = "Correlation traps were not looked for (randomize=True, htsr analyze --randomize)."


@dataclass(frozen=True)
class Finding:
    """One line of the verdict: what was found, and (optionally) what it does and does not mean."""

    headline: str
    meaning: str = ""


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _label(row: Any) -> str:
    """A row's name for the verdict (a LayerResult or a ReportTrap): its long name, and its slice."""
    name = str(row.longname or row.name or row.layer_id)
    if row.slice_id is not None:
        name += f" (slice {int(row.slice_id)})"
    return name


def _alpha(row: Any) -> float | None:
    alpha = None if row.fit is None else row.fit.alpha
    return None if alpha is None or alpha != alpha else float(alpha)


def _alpha_findings(rows: Sequence[Any]) -> list[Finding]:
    low, high, fitted = [], [], 0
    for r in rows:
        a = _alpha(r)
        if a is None:
            continue
        fitted += 1
        if a < OVER_TRAINED:
            low.append(f"{_label(r)} ({a:.2f})")
        elif a > UNDER_TRAINED:
            high.append(f"{_label(r)} ({a:.2f})")
    if not fitted:
        return [Finding("No layer has a fitted alpha.")]
    out = []
    if low:
        out.append(Finding(f"alpha < {OVER_TRAINED:g} in {_plural(len(low), 'layer')}: {_names(low)}.", MEANING_LOW))
    if high:
        out.append(Finding(f"alpha > {UNDER_TRAINED:g} in {_plural(len(high), 'layer')}: {_names(high)}.", MEANING_HIGH))
    if not low and not high:
        every = "The fitted layer has" if fitted == 1 else f"All {fitted} fitted layers have"
        out.append(Finding(f"{every} 2 ≤ alpha ≤ 6.", MEANING_OK))
    return out


def _trap_findings(report: Any) -> list[Finding]:
    if not report.config.randomize:
        return [Finding(NOT_LOOKED)]
    traps = report.trap_list
    if not traps:
        return [Finding("No correlation traps.", MEANING_NO_TRAPS)]
    out = []
    for g in report.grouping.groups:
        out.append(Finding(f"Outlier dimension {g.index} ({g.axis} of {g.size}): {_plural(g.num_traps, 'trap')} "
                           f"in {_plural(g.num_layers, 'layer')} (expected by chance {g.chance:.2g}): "
                           f"{_names([str(n) for n in g.layers])}.",
                           MEANING_DIM))
    if len(out) > 1:  # the meaning once, after the last dimension
        out = [Finding(f.headline) for f in out[:-1]] + [out[-1]]
    isolated = [t for t in traps if t.kind == "isolated"]
    if isolated:
        layers: dict[str, list[float]] = {}
        for t in isolated:
            layers.setdefault(_label(t), []).append(float(t.ratio))
        names = [f"{n} ({_plural(len(r), 'trap')}, {max(r):.2f}× its bulk edge)" for n, r in layers.items()]
        out.append(Finding(f"{_plural(len(isolated), 'isolated correlation trap')} in {_plural(len(layers), 'layer')}: "
                           f"{_names(names)}.", MEANING_ISOLATED))
    elif out:
        out.append(Finding("No isolated correlation trap: every trap lies on an outlier dimension."))
    return out


def verdict(report: Any) -> list[Finding]:
    """The findings of ``report``, in order: layers analyzed, alpha outside [2, 6], traps.

    Parameters
    ----------
    report : Report

    Returns
    -------
    list of Finding
    """
    rows = report.layers
    n_skip = len(report.skipped_layers)
    layers = len({r.layer_id for r in rows})
    head = f"{_plural(layers, 'layer')} analyzed" + (f" ({len(rows)} rows: conv slices)" if layers != len(rows) else "")
    head += f", {n_skip} skipped (listed with their reasons)" if n_skip else ""
    bad = sum(1 for r in rows if r.status not in (None, "success"))
    if bad:
        head += f"; {bad} failed or invalid (see their status and reason)"
    if not rows:
        return [Finding(head + ".")]
    return [Finding(head + "."), *_alpha_findings(rows), *_trap_findings(report)]


def verdict_text(report: Any, indent: str = "  ") -> str:
    """The verdict as plain text: one line per finding, its meaning indented below it."""
    lines = []
    for f in verdict(report):
        lines.append(f.headline)
        if f.meaning:
            lines.append(indent + f.meaning)
    return "\n".join(lines) + "\n"


def verdict_items_html(report: Any) -> str:
    """The verdict's heading and list as HTML (the report page's verdict section holds it); every name escaped."""
    items = "".join(f"<li><b>{escape(f.headline)}</b>"
                    + (f'<br><span class="note">{escape(f.meaning)}</span>' if f.meaning else "") + "</li>"
                    for f in verdict(report))
    return f"<h2>Verdict</h2><ul>{items}</ul>"


def verdict_html(report: Any) -> str:
    """The verdict as a stand-alone HTML fragment (``<section class="verdict">``); every name escaped."""
    return f'<section class="verdict" id="verdict">{verdict_items_html(report)}</section>'


def notebook_html(report: Any) -> str:
    """What a notebook shows for a report: the verdict, the summary and the alpha chart (not the whole report)."""
    from .pages import alpha_chart_svg

    summary = "".join(f"<tr><th style='text-align:left'>{escape(str(k))}</th>"
                      f"<td style='text-align:right'>{escape(f'{v:.4g}' if isinstance(v, float) else str(v))}</td></tr>"
                      for k, v in (report.summary or {}).items())
    chart = alpha_chart_svg(report.layers, width=900, height=260) if report.layers else ""
    return (f'<div class="htsr-report">{verdict_html(report)}<h4>Summary</h4><table>{summary}</table>'
            f"{chart}<p><small>report.to_html('report.html') writes the whole report; report.details has "
            "every column.</small></p></div>")

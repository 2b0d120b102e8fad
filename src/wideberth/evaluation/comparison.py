"""What ``wideberth compare`` adds to the table: how comparable the rows are, and paired tests.

* :func:`measurement_notes`: one line per setting in which the reports differ (norm,
  suite, its attacks, number of examples, dataset, split, seed), so a table never silently
  sets side by side numbers measured in different ways;
* :func:`paired_tests`: McNemar's exact test (:func:`wideberth.evaluation.statistics.mcnemar`)
  of every report against the first, on clean accuracy and on robust accuracy at every ε,
  when both hold per-example results (``per_example`` of :meth:`EvalReport.to_dict`) on the
  same examples (same ids, in any order); otherwise the reason it was skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .statistics import mcnemar

__all__ = ["format_paired_tests", "measurement_notes", "paired_tests"]

#: the settings :func:`measurement_notes` compares, with their names in the notes
_SETTINGS = (("norm", "norms"), ("suite", "suites"), ("attacks", "attack lists"),
             ("n", "numbers of examples"), ("dataset", "datasets"), ("split", "splits"),
             ("seed", "seeds"))


def measurement_notes(reports: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Lines such as ``"rows measured with different suites: a: standard, b: quick"`` for
    every setting present in the reports whose values differ (empty: all alike)."""
    notes = []
    for key, what in _SETTINGS:
        values = {name: r.get(key) for name, r in reports.items() if r.get(key) is not None}
        shown = {name: ", ".join(map(str, v)) if isinstance(v, list) else str(v)
                 for name, v in values.items()}
        if len(set(shown.values())) > 1:
            notes.append(f"rows measured with different {what}: "
                         + "; ".join(f"{name}: {v}" for name, v in shown.items()))
    return notes


def _outcomes(report: Mapping[str, Any]) -> dict[int, int] | None:
    """``{example id: first broken ε index}`` of a report, or ``None`` without them."""
    per = report.get("per_example")
    if not per or "ids" not in per or "first_broken" not in per:
        return None
    return dict(zip(map(int, per["ids"]), map(int, per["first_broken"]), strict=True))


def paired_tests(reports: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """McNemar's test of every report against the first: one dict per other report,
    ``{"a", "b", "tests": {"clean" | str(ε): mcnemar(...)}}`` or ``{"a", "b", "skipped":
    reason}``. ``b`` counts the examples right under ``a`` only, ``c`` those right under
    ``b`` only (robust at ε, or correct for ``"clean"``)."""
    names = list(reports)
    out: list[dict[str, Any]] = []
    if len(names) < 2:
        return out
    base_name = names[0]
    base = reports[base_name]
    base_out = _outcomes(base)
    for name in names[1:]:
        r = reports[name]
        row: dict[str, Any] = {"a": base_name, "b": name}
        other = _outcomes(r)
        if base_out is None or other is None:
            missing = base_name if base_out is None else name
            row["skipped"] = (f"{missing} holds no per-example results (re-run `wideberth "
                              "evaluate --json` with this version)")
        elif (set(base_out) != set(other)
              or len(base_out) != len(base["per_example"]["ids"])
              or len(other) != len(r["per_example"]["ids"])):
            common = len(set(base_out) & set(other))
            row["skipped"] = (f"the reports cover different examples ({len(base_out)} and "
                              f"{len(other)} ids, {common} in common): a paired test needs "
                              "the same examples")
        elif list(base.get("robust_accuracy", {})) != list(r.get("robust_accuracy", {})):
            row["skipped"] = "the reports cover different ε grids"
        else:
            ids = sorted(base_out)
            tests = {}
            levels = [("clean", -1)] + [(e, i) for i, e in enumerate(base["robust_accuracy"])]
            for label, i in levels:  # right at level i: first broken index > i
                a_ok = [base_out[j] > i for j in ids]
                b_ok = [other[j] > i for j in ids]
                tests[label] = mcnemar(sum(p and not q for p, q in zip(a_ok, b_ok, strict=True)),
                                       sum(q and not p for p, q in zip(a_ok, b_ok, strict=True)))
            row["tests"] = tests
        out.append(row)
    return out


def format_paired_tests(results: list[dict[str, Any]]) -> list[str]:
    """Plain lines for :func:`paired_tests` results (one per level, or the reason)."""
    lines = []
    for row in results:
        head = f"McNemar {row['a']} vs {row['b']}"
        if "skipped" in row:
            lines.append(f"{head}: skipped, {row['skipped']}")
            continue
        for label, t in row["tests"].items():
            level = "clean" if label == "clean" else f"ε={label}"
            lines.append(f"{head}, {level}: right only under {row['a']} b={t['b']}, only under "
                         f"{row['b']} c={t['c']}, exact two-sided p={t['p_value']:.4g} "
                         f"(mid-p {t['mid_p']:.4g})")
    return lines

"""Section: robustness — every attack result the runs' robustness.json files hold (not only the
headline attack of the table's Robust column): ``robustness.csv`` (one row per run x attack
entry) and ``robustness.md`` (per setting, method and attack setting: mean ± sd over seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from xairobust.layout import RunLayout as L
from xairobust.report.sections import SECTIONS, ReportContext, Section

KEYS = ["setting", "attack", "norm", "eps", "steps"]


@SECTIONS.register("robustness")
class RobustnessSection(Section):
    name = "robustness"
    order = 15
    reads = (L.ROBUSTNESS,)
    optional = ("robustness.csv", "robustness.md")

    def collect(self, ctx: ReportContext) -> Any:
        from xairobust.runs import read_json
        from xairobust.stages.attack import verify_robustness

        rows = []
        for r in ctx.runs:
            path = L(r.path).robustness
            if not path.is_file():
                continue
            verify_robustness(r.path)  # computed on the weights there now, or a one-line error
            for e in read_json(path).get("results") or []:
                if isinstance(e, dict) and e.get("robust_accuracy") is not None:  # classification attacks
                    rows.append({**r.columns(), **{k: e.get(k) for k in ("attack", "norm", "eps", "steps", "n")},
                                 "clean_accuracy": e.get("clean_accuracy"), "robust_accuracy": e["robust_accuracy"]})
        return pd.DataFrame(rows) if rows else None

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        from xairobust.report.render import markdown_grid
        from xairobust.report.tables import order_rows

        data.to_csv(folder / "robustness.csv", index=False)
        md = ["# Robustness", "", "Every attack result of the runs (robustness.json): accuracy under attack, mean ± sd"
              " over the seeds of each method (n: test images attacked).", ""]
        for (setting, attack, norm, eps, steps), part in data.groupby(KEYS, sort=False, dropna=False):
            md += [f"**{setting}: {attack} {norm or ''} ε = {eps:g}, {steps} steps**", ""]
            rows = []
            for label in order_rows(list(dict.fromkeys(part["label"])), ctx.conf.baseline, list(ctx.conf.order)):
                mine = part[part["label"] == label]
                acc = mine["robust_accuracy"].astype(float)
                sd = f" ± {acc.std(ddof=1):.3f}" if len(acc) > 1 else ""
                rows.append([label, str(len(mine)), f"{acc.mean():.3f}{sd}",
                             " ".join(str(int(n)) for n in dict.fromkeys(mine["n"].dropna()))])
            md += [*markdown_grid(["Method", "seeds", "Robust acc.", "n"], rows), ""]
        (folder / "robustness.md").write_text("\n".join(md))

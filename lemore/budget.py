"""The params / GFLOPs budget every model variant must meet, measured against the published figures.

``python -m lemore.budget`` prints the table quoted in docs/architecture.md (and writes it with
``--markdown PATH`` / ``--csv PATH``). Tolerances: params within 3%, GFLOPs within 5% for LeMoRe
(SegFormer-B0: 5% on both); the peers of the "beyond the paper" block (TopFormer-T, SeaFormer-T, LR-ASPP
MobileNetV3-Large reduced): params within 5%, GFLOPs within 10% of their own published figures. The paper's values
are read from lemore/paper/*.csv (the peers' from ``peers_ade20k.csv``, each with its source); "~1.6M" for the
per-dataset models is the paper's text. The published peer GFLOPs were counted with mmcv's counter, which skips
attention matmuls and counts activations; ours (fvcore) counts the matmuls and skips activations.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pandas as pd

from lemore.models.lemore import ABLATION_ROWS, SWITCHES
from lemore.paper import load_peers, load_table
from lemore.profiling import profile_model, write_text_atomic


@dataclass(frozen=True)
class BudgetRow:
    label: str
    model: str
    num_classes: int
    size: tuple[int, int]
    paper_params_m: float | None
    paper_gflops: float | None
    params_tol: float = 0.03
    flops_tol: float = 0.05


def _lemore_gflops(table: str) -> float:
    t = load_table(table)
    return float(t.loc[t["model"] == "LeMoRe", "gflops"].iloc[0])


def budget_rows() -> list[BudgetRow]:
    rows = []
    by_switch = {v: k for k, v in ABLATION_ROWS.items()}
    for r in load_table("table2_ablation").itertuples(index=False):
        name = by_switch[tuple(bool(getattr(r, s)) for s in SWITCHES)]
        rows.append(BudgetRow(f"Table 2 {name}", name, 150, (512, 512), r.params_m, r.gflops))
    t1 = load_table("table1_ade20k")
    star = t1[t1["model"].str.startswith("LeMoRe*")].iloc[0]
    seg = t1[(t1["model"] == "SegFormer") & (t1["encoder"] == "MiT-B0")].iloc[0]
    lr = t1[(t1["model"] == "LR-ASPP") & (t1["encoder"] == "MobileNetV3-Large")].iloc[0]
    rows += [
        BudgetRow("Cityscapes (19 cls, 1024x512)", "lemore", 19, (512, 1024), 1.6, _lemore_gflops("table3_cityscapes")),
        BudgetRow("PASCAL Context (60 cls, 480x480)", "lemore", 60, (480, 480), 1.6,
                  _lemore_gflops("table4_pascal_context")),
        BudgetRow("COCO-Stuff (171 cls, 512x512)", "lemore", 171, (512, 512), 1.6, _lemore_gflops("table5_coco_stuff")),
        BudgetRow("LeMoRe* (448x448)", "lemore_star", 150, (448, 448), star.params_m, star.gflops),
        BudgetRow("ImageNet classifier (1000 cls, 224x224)", "lemore_cls", 1000, (224, 224),
                  float(load_table("table_imagenet")["params_m"].iloc[0]), None),
        BudgetRow("SegFormer-B0 (150 cls, 512x512)", "segformer_b0", 150, (512, 512), seg.params_m, seg.gflops,
                  0.05, 0.05),
        BudgetRow("LR-ASPP MobileNetV3-Large (peer, not a budget)", "lraspp_mobilenet_v3_large", 150, (512, 512),
                  lr.params_m, lr.gflops, float("inf"), float("inf")),
    ]
    return rows + peer_rows()


#: The peers' budget: params within 5%, GFLOPs within 10% of the published figures (issue 11).
PEER_PARAMS_TOL, PEER_FLOPS_TOL = 0.05, 0.10


def peer_rows() -> list[BudgetRow]:
    """TopFormer-T and SeaFormer-T against their own published figures, LR-ASPP MobileNetV3-Large reduced
    against Table 1's "MobileNetV3-Large-reduce" row; 150 classes, 512x512."""
    t1 = load_table("table1_ade20k")
    red = t1[(t1["model"] == "LR-ASPP") & (t1["encoder"] == "MobileNetV3-Large-reduce")].iloc[0]
    rows = [BudgetRow(f"{p.model} (150 cls, 512x512) vs {p.short_source}", p.registry, 150, (512, 512), p.params_m,
                      p.gflops, PEER_PARAMS_TOL, PEER_FLOPS_TOL) for p in load_peers().itertuples(index=False)]
    rows.append(BudgetRow("LR-ASPP MobileNetV3-Large reduced (150 cls, 512x512) vs LeMoRe Table 1",
                          "lraspp_mobilenet_v3_large_reduced", 150, (512, 512), red.params_m, red.gflops,
                          PEER_PARAMS_TOL, PEER_FLOPS_TOL))
    return rows


def budget_table() -> pd.DataFrame:
    out = []
    for b in budget_rows():
        r = profile_model(b.model, b.num_classes, b.size)
        dp = r.params_m / b.paper_params_m - 1 if b.paper_params_m else None
        dg = r.gflops / b.paper_gflops - 1 if b.paper_gflops else None
        ok = (dp is None or abs(dp) <= b.params_tol) and (dg is None or abs(dg) <= b.flops_tol)
        out.append({"configuration": b.label, "params_m (ours)": round(r.params_m, 3),
                    "params_m (paper)": b.paper_params_m, "Δ params": None if dp is None else f"{dp:+.1%}",
                    "gflops (ours)": round(r.gflops, 3), "gflops (paper)": b.paper_gflops,
                    "Δ gflops": None if dg is None else f"{dg:+.1%}", "within budget": "yes" if ok else "NO"})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markdown", help="write the table as Markdown")
    p.add_argument("--csv", help="write the table as CSV")
    args = p.parse_args(argv)
    df = budget_table()
    md = df.to_markdown(index=False) if _has_tabulate() else df.to_string(index=False)
    print(md)
    if args.markdown:
        write_text_atomic(args.markdown, md + "\n")
    if args.csv:
        write_text_atomic(args.csv, df.to_csv(index=False))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())

"""The paper's published numbers (tables of arXiv:2505.23093 and its supplementary), as shipped CSVs.

These are the *paper's* values, used only in columns labelled as the paper's and as the budget the
reimplementation is checked against. Nothing in the project writes to them.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

TABLES = {
    "table1_ade20k": "Table 1: ADE20K val, mIoU / GFLOPs / params / latency",
    "table2_ablation": "Table 2: ablation of the C-Encoder views, CA and Nested Attention (ADE20K)",
    "table3_cityscapes": "Table 3: Cityscapes val",
    "table4_pascal_context": "Table 4: PASCAL Context (mIoU^59 and mIoU^60)",
    "table5_coco_stuff": "Table 5: COCO-Stuff-10k test",
    "table_imagenet": "Supplementary Table 1: ImageNet-1K classification",
}


def load_table(name: str) -> pd.DataFrame:
    """One of the paper's tables as a DataFrame (column names as in the paper's CSV)."""
    if name not in TABLES:
        raise ValueError(f"unknown paper table {name!r}; choose from {sorted(TABLES)}")
    with resources.files(__package__).joinpath(f"{name}.csv").open() as f:
        return pd.read_csv(f)

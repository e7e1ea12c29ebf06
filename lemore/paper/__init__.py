"""The paper's published numbers (tables of arXiv:2505.23093 and its supplementary), as shipped CSVs.

These are the *paper's* values, used only in columns labelled as the paper's and as the budget the
reimplementation is checked against. Nothing in the project writes to them.

``peers_ade20k.csv`` holds what LeMoRe's closest relatives published about themselves (TopFormer-T, SeaFormer-T:
ADE20K val, 512x512, single scale, 160k iterations, batch 16), each row with its source; they appear only in
columns labelled with that source (Table 1's "beyond the paper" block, :mod:`lemore.tables`).
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


#: The published figures of LeMoRe's peers that the paper's Table 1 leaves out (see the module docstring).
PEERS = "peers_ade20k"


def load_peers() -> pd.DataFrame:
    """``peers_ade20k.csv``: model, encoder, registry (our model), miou, gflops, params_m, short_source, source."""
    with resources.files(__package__).joinpath(f"{PEERS}.csv").open() as f:
        return pd.read_csv(f)

"""Shared by tests/test_labels.py and tests/test_export.py: the exactness rule for label maps, and logits that
look like a trained network's.

The tie rule: labels must equal the naive path (upsample every class, then argmax) wherever its two best
interpolated values differ by more than ``TIE`` (relative to the logits' scale); where they are closer, the
label must be one of the near-best classes.
"""

import torch
import torch.nn.functional as F

TIE = 1e-5


def assert_same_labels(got: torch.Tensor, logits: torch.Tensor, size) -> None:
    up = F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    assert got.shape == (logits.shape[0], *size) and got.dtype == torch.int64
    tol = TIE * max(1.0, logits.abs().max().item())
    top2 = up.topk(min(2, up.shape[1]), dim=1).values
    clear = (top2[:, 0] - top2[:, -1]) > tol if up.shape[1] > 1 else torch.ones_like(got, dtype=torch.bool)
    ref = up.argmax(1)
    bad = (got != ref) & clear
    assert not bad.any(), f"{int(bad.sum())} of {got.numel()} labels differ where the naive top-2 gap > {tol:g}"
    picked = up.gather(1, got[:, None])[:, 0]  # at near-ties: a near-best class
    assert (picked >= top2[:, 0] - tol).all()


def segmentation_like(b, k, h, w, *, blobs=4, margin=3.0, noise=0.5):
    """Logits as a trained network's look: a few smooth regions with a leading class each, noisy runners-up."""
    field = torch.randn(b, blobs, 3, 3)
    region = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=False).argmax(1)  # (b, h, w)
    classes = torch.randint(0, k, (blobs,))
    logits = noise * torch.randn(b, k, h, w)
    logits.scatter_add_(1, classes[region][:, None], torch.full((b, 1, h, w), margin))
    return logits

"""Label maps at the input size: the argmax of the bilinearly upsampled logits, without upsampling K channels.

A segmentation network ends with logits at a fraction of the input size (1/8 for LeMoRe and LR-ASPP, 1/4 for
SegFormer); the label map is ``interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)``,
as in MMSegmentation's ``encode_decode``. Done that way, the resize of 150 channels to 512x512 (157 MB of
floats) costs more than LeMoRe's whole network on a CPU. :func:`upsampled_argmax` returns the same labels
from the low-resolution logits directly:

* A *cell* is the set of output pixels that share the same four low-resolution neighbours (rows ``i0, i1``,
  columns ``j0, j1`` as PyTorch computes them, clamped at the border). Every interpolated value of class k in a
  cell is a convex combination of its four corner logits, so it lies in ``[lo_k, hi_k]`` (the corners' min and
  max). Only a class with ``hi_k >= max_j lo_j`` can win any pixel of the cell (a *candidate*).
* Per low-resolution node the top-2 logits decide most cells: if the four corners share their top class ``c``
  and the smallest top-1 value exceeds the largest top-2 value, ``c`` is the only candidate and wins every
  pixel of the cell (the test is exactly "one candidate"). Those cells are filled with one gather.
* The other cells (where classes meet) interpolate their candidates only, pixel by pixel, with PyTorch's
  weights (float32 source index ``scale * (i + 0.5) - 0.5`` with ``scale = in / out``, clamped at 0; ``i1 =
  i0 + 1`` except at the last row/column), in the order PyTorch's CPU kernel sums them, and take the argmax
  (candidates in class order, so that exact ties resolve to the lower class index as ``argmax`` does).

Exactness: in real arithmetic the result equals the naive argmax. In float32 the pruning compares raw logits
(no rounding), and the interpolation of the candidates may round differently from PyTorch's kernel by an ulp
(fused multiply-adds), so labels can differ only where the naive top-2 interpolated values are within a few
ulps of each other (``tests/test_predict.py`` checks equality wherever the naive gap exceeds ``1e-5``).

The function is traceable: ``lemore.export`` exports it into ONNX graphs that output labels (``--labels``),
with the data-dependent part (the mixed cells, their number of candidates) as NonZero / TopK / ScatterND.

``lemore.predict(model, images)`` runs a model and returns its label maps. CLI: ``python -m lemore predict
--checkpoint model.pt --images a.jpg b.png --out labels/`` writes one label PNG per image (class indices, uint8
when K <= 256).
"""

from __future__ import annotations

import argparse
import functools
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["predict", "upsampled_argmax", "naive_labels", "source_index", "cell_statistics"]

#: in eager mode the mixed cells are processed in groups of at most this many interpolated values (memory bound)
_CHUNK = 1 << 22


def source_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear source indices and weights along one axis (align_corners=False, output size given).

    Returns ``(i0, i1, w0, w1)``, each of length ``n_out``: output index ``o`` reads ``w0 * x[i0] + w1 * x[i1]``.
    Mirrors ``aten/src/ATen/native/UpSample.h`` (``area_pixel_compute_scale``, ``area_pixel_compute_source_index``,
    ``guard_index_and_lambda``) in float32, as PyTorch's CPU kernel computes them.
    """
    if n_in == n_out:  # PyTorch copies
        i0 = np.arange(n_out, dtype=np.int64)
        return i0, i0.copy(), np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(f32)
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, (f32(1) - w1).astype(f32), w1


def naive_labels(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The reference: upsample all K channels, then argmax. (B, K, h, w) -> (B, H, W) int64."""
    up = F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return up.argmax(1)


@functools.lru_cache(maxsize=32)
def _geometry(h: int, w: int, out_h: int, out_w: int) -> dict:
    """Constants of one (h, w) -> (H, W) upsampling, per axis: each output row's cell and weights; each cell's
    block of output rows (first, last; empty cells are possible when downsampling); and the block's *distinct*
    rows: rows clamped at the border (all weight on the first or the last node) repeat one row's values, so a
    cell computes each of them once (``rep``: the row whose values an output row takes; ``slot_first/last``)."""
    geo = {}
    for axis, n_in, n_out in (("y", h, out_h), ("x", w, out_w)):
        i0, _, w0, w1 = source_index(n_in, n_out)
        counts = np.bincount(i0, minlength=n_in)
        last = np.cumsum(counts) - 1
        first = last - counts + 1
        rep = np.arange(n_out)
        top = np.flatnonzero((i0 == 0) & (w1 == 0))  # before the first node's centre: x[0]
        if top.size:
            rep[top] = top[-1]
        bottom = np.flatnonzero(i0 == n_in - 1)  # past the last node's centre: x[n - 1]
        if bottom.size:
            rep[bottom] = bottom[0]
        rep_first = np.minimum.reduceat(rep, np.minimum(first, n_out - 1)) if n_out else rep
        rep_last = np.maximum.reduceat(rep, np.minimum(first, n_out - 1)) if n_out else rep
        rep_first, rep_last = np.where(counts > 0, rep_first, 0), np.where(counts > 0, rep_last, 0)
        geo |= {f"{axis}0": i0, f"w{axis}0": w0, f"w{axis}1": w1, f"first_{axis}": first, f"has_{axis}": counts > 0,
                f"last_{axis}": np.maximum(last, 0), f"rep_{axis}": rep, f"slot_first_{axis}": rep_first,
                f"slot_last_{axis}": rep_last,
                f"select_{axis}": (i0[:, None] == np.arange(n_in)[None, :]).astype(np.float32)}  # one-hot (out, in)
    geo["cell_of_pixel"] = (geo["y0"][:, None] * w + geo["x0"][None, :]).reshape(-1)  # (H*W,) flat cell index
    sizes = {a: (int(np.max(geo[f"last_{a}"] - geo[f"first_{a}"])) + 1,
                 int(np.max(geo[f"slot_last_{a}"] - geo[f"slot_first_{a}"])) + 1) for a in "yx"}
    geo = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in geo.items()}
    geo["block"] = (sizes["y"][0], sizes["x"][0])  # the largest cell: output rows, columns
    geo["slots"] = (sizes["y"][1], sizes["x"][1])  # its distinct rows, columns
    return geo


def _next(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` shifted by one towards lower indices along ``dim``, the last slice repeated (PyTorch's i1)."""
    n = t.shape[dim]
    if n == 1:
        return t
    return torch.cat([t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)], dim)


# Two formulations of the per-node reductions over classes: eager PyTorch runs ``amax`` over dim 1 fast but
# ``topk``/``argmax`` over it 3-5x slower; ONNX Runtime runs every reduction over the class axis of (1, K, h, w)
# slowly (ReduceMax, ArgMax, TopK: 1.8-2.7 ms for 150 x 64 x 64, one thread) but element-wise Max fast, so the
# traced graph takes the maximum as a tree of Max over halves (0.24 ms). Same values: max is exact.
def _class_max(x: torch.Tensor) -> torch.Tensor:
    """max over dim 1: (B, K, h, w) -> (B, h, w)."""
    if not torch.jit.is_tracing():
        return x.amax(1)
    while x.shape[1] > 1:
        n = int(x.shape[1])
        half = n - n // 2  # halves overlap by one class when n is odd: max is idempotent
        x = torch.maximum(x[:, :half], x[:, n - half:])
    return x[:, 0]


_BIG = 1e30  # below any logit once subtracted (logits are far smaller than 1e22 in magnitude)


def _top2(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per node: the best logit, its class (the lowest index among exact ties) and the best logit of the other
    classes (exact ties at the top excluded, which only matters at exact ties). (B, K, h, w) -> 3 x (B, h, w)."""
    k = logits.shape[1]
    t1 = _class_max(logits)  # (B, h, w)
    top = logits == t1[:, None]  # (B, K, h, w)
    if torch.jit.is_tracing():  # masks as floats: ONNX Runtime's Where is 2x slower than Cast + Mul
        topf = top.float()
        rev = torch.arange(k - 1, -1, -1, dtype=torch.float32).view(1, k, 1, 1)
        c1 = (k - 1) - _class_max(topf * rev).long()
        t2 = _class_max(logits - topf * _BIG)
        return t1, t2, c1
    # the class from the mask: the largest (K - 1 - class) among the top classes, in the smallest dtype
    rev = torch.arange(k - 1, -1, -1, device=logits.device).to(torch.uint8 if k <= 256 else torch.int32)
    c1 = (k - 1) - (top * rev.view(1, k, 1, 1)).amax(1).long()
    t2 = logits.masked_fill(top, float("-inf")).amax(1)
    return t1, t2, c1


def _mixed_cells(logits: torch.Tensor, geo: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Which cells have more than one candidate, and each node's best class: (B, h, w) bool, (B, h, w) int64."""
    t1, t2, c1 = _top2(logits)  # (B, h, w) each
    t1d, t2d, c1d = _next(t1, 1), _next(t2, 1), _next(c1, 1)  # the row below
    t1_min = torch.minimum(torch.minimum(t1, _next(t1, 2)), torch.minimum(t1d, _next(t1d, 2)))
    t2_max = torch.maximum(torch.maximum(t2, _next(t2, 2)), torch.maximum(t2d, _next(t2d, 2)))
    same = (c1 == _next(c1, 2)) & (c1 == c1d) & (c1 == _next(c1d, 2))
    mixed = ~(same & (t1_min > t2_max)) & geo["has_y"].to(c1.device)[:, None] & geo["has_x"].to(c1.device)[None, :]
    return mixed, c1


def upsampled_argmax(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``argmax(interpolate(logits, size, bilinear, align_corners=False), dim=1)`` without the K x H x W tensor.

    Args:
        logits: (B, K, h, w) float.
        size: output (H, W).

    Returns:
        (B, H, W) int64 labels, equal to :func:`naive_labels` except where the two best interpolated values are
        within float rounding of each other (see the module docstring).
    """
    b_sz, k, h, w = (int(n) for n in logits.shape)  # static when traced (the geometry is constant)
    out_h, out_w = int(size[0]), int(size[1])
    logits = logits.float()
    if k == 1:
        return torch.zeros(b_sz, out_h, out_w, dtype=torch.long, device=logits.device)
    geo = {n: t.to(logits.device) if isinstance(t, torch.Tensor) else t
           for n, t in _geometry(h, w, out_h, out_w).items()}

    # 1. cells with one candidate, decided from each node's top-2 logits
    mixed, c1 = _mixed_cells(logits, geo)  # (B, h, w) each

    # 2. every pixel gets its cell's top class (right for all cells but the mixed ones)
    if torch.jit.is_tracing():  # ONNX Runtime: one-hot matmuls (exact on small integers) beat Gather 4x
        labels = (geo["select_y"] @ c1.float() @ geo["select_x"].t()).long()  # (B, H, W)
    else:
        labels = c1.flatten(1).index_select(1, geo["cell_of_pixel"]).view(b_sz, out_h, out_w)  # (B, H, W)

    # 3. mixed cells: interpolate their candidates pixel by pixel
    cells = mixed.nonzero()  # (N, 3): batch, cell row, cell column
    corners, hi, cand = _candidates(logits, c1, cells)  # (4, N, K), (N, K), (N, K)
    count = cand.sum(1)  # (N,) candidates per cell
    few = min(4, k)
    groups = []  # (cells, m): cell indices with at most m candidates
    if torch.jit.is_tracing():
        # static code, three groups: cells with at most 4 candidates (nearly all where a network is sure), at most
        # 16, then the rest padded to the most any has (junctions; noise-like logits), so that a few cells with
        # many candidates do not widen every cell
        mid = min(16, k)
        groups = [((count <= few).nonzero()[:, 0], few),
                  (((count > few) & (count <= mid)).nonzero()[:, 0], mid),
                  ((count > mid).nonzero()[:, 0], torch.cat([count, count.new_ones(1)]).max())]
    elif cells.shape[0]:
        n_r, n_c = geo["slots"]
        if int(count.sum()) * n_r * n_c > k * out_h * out_w // 2:  # so many candidates that upsampling is cheaper
            return torch.cat([naive_labels(x[None], (out_h, out_w)) for x in logits])
        # cells sorted by their number of candidates, in groups padded to their own largest (bounded memory)
        order, start = count.argsort(), 0
        count = count[order]
        while start < cells.shape[0]:
            m = max(few, int(count[min(start + 255, cells.shape[0] - 1)]))  # up to 256 cells, <= m candidates
            stop = min(cells.shape[0], start + max(256, _CHUNK // (m * n_r * n_c)),
                       int(torch.searchsorted(count, m, right=True)))
            groups.append((order[start:stop], m))
            start = stop
    if not groups:
        return labels
    parts = [_mixed_labels(cells[i], corners[:, i], hi[i], cand[i], m, geo, (out_h, out_w)) for i, m in groups]
    flat = torch.cat([p[0] for p in parts])
    win = torch.cat([p[1] for p in parts])
    return labels.reshape(-1).index_put((flat,), win).view(b_sz, out_h, out_w)  # one scatter


def cell_statistics(logits: torch.Tensor, size: Sequence[int]) -> dict:
    """How much per-pixel work :func:`upsampled_argmax` has for these logits: the share of cells where classes
    meet, and their mean and largest number of candidate classes."""
    b_sz, k, h, w = (int(n) for n in logits.shape)
    logits = logits.float()
    if k == 1:
        return {"mixed": 0.0, "candidates_mean": 0.0, "candidates_max": 0}
    mixed, c1 = _mixed_cells(logits, _geometry(h, w, int(size[0]), int(size[1])))
    cells = mixed.nonzero()
    count = _candidates(logits, c1, cells)[2].sum(1).float()
    return {"mixed": float(mixed.float().mean()), "candidates_mean": float(count.mean()) if len(count) else 0.0,
            "candidates_max": int(count.max()) if len(count) else 0}


def _candidates(logits: torch.Tensor, c1: torch.Tensor, cells: torch.Tensor):
    """The four corner logit vectors of ``cells`` (N, 3), their max over the corners, and which classes can win a
    pixel of the cell: (4, N, K), (N, K), (N, K) bool. ``c1``: each node's best class (B, h, w)."""
    b_sz, k, h, w = (int(n) for n in logits.shape)
    b, cy, cx = cells[:, 0], cells[:, 1], cells[:, 2]  # (N,)
    # corner nodes (i0, j0), (i0, j1), (i1, j0), (i1, j1), with i1, j1 clamped as PyTorch clamps them
    cy1, cx1 = torch.clamp_max(cy + 1, h - 1), torch.clamp_max(cx + 1, w - 1)
    node = torch.stack([cy * w + cx, cy * w + cx1, cy1 * w + cx, cy1 * w + cx1]) + b * (h * w)  # (4, N)
    # rows of the (B*h*w, K) node table; ONNX: one Transpose and one Gather (a K-wide gather per corner is slower)
    corners = logits.permute(0, 2, 3, 1).reshape(b_sz * h * w, k)[node]  # (4, N, K)
    q0, q1, q2, q3 = corners.unbind(0)  # element-wise max/min: ONNX Runtime reduces over a leading axis slowly
    hi = torch.maximum(torch.maximum(q0, q1), torch.maximum(q2, q3))  # (N, K) bounds of every interpolated
    lo = torch.minimum(torch.minimum(q0, q1), torch.minimum(q2, q3))  # value of the class in the cell
    # A lower bound of the winner's value at every pixel of the cell. max_k lo_k is one. Sharper where regions
    # meet (each class is low at another region's corners): for weights mu on a simplex, sum_j mu_j v_j <= max_j v_j
    # at every pixel, and that bilinear function's minimum over the cell is at a corner. The classes j are the
    # four corners' best classes, mu runs over a grid of quarters (35 vectors).
    top = c1.reshape(-1)[node].t()  # (N, 4) the best class of each corner
    v = corners.gather(2, top[None].expand(4, -1, -1))  # (4, N, 4): corner q, cell, class j
    mix = torch.matmul(v, _simplex_grid(4, logits.device).t()).amin(0).amax(1)  # (N,)
    mix = mix - 1e-6 * (mix.abs() + 1)  # its rounding must not exclude a class that ties the winner
    thr = torch.maximum(lo.amax(1), mix)[:, None]  # (N, 1)
    return corners, hi, hi >= thr  # a class below the bound at all four corners never wins a pixel


@functools.lru_cache(maxsize=8)
def _simplex_grid_cpu(n: int, steps: int = 4) -> torch.Tensor:
    """All weight vectors of ``n`` non-negative multiples of 1/steps summing to 1, (S, n)."""
    import itertools

    rows = [c for c in itertools.product(range(steps + 1), repeat=n) if sum(c) == steps]
    return torch.tensor(rows, dtype=torch.float32) / steps


def _simplex_grid(n: int, device) -> torch.Tensor:
    return _simplex_grid_cpu(n).to(device)


def _mixed_labels(cells: torch.Tensor, corners: torch.Tensor, hi: torch.Tensor, cand: torch.Tensor, m,
                  geo: dict, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The labels of every pixel of ``cells`` (N, 3): (flat index into the (B, H, W) labels, label), both
    (N * R * C,); ``m`` >= the number of candidates of every cell."""
    b, cy, cx = cells[:, 0], cells[:, 1], cells[:, 2]  # (N,)
    # the candidates in class order (argmax's tie rule); the non-candidates among the first m get -1e30 corners
    ci = torch.where(cand, hi, torch.full_like(hi, float("-inf"))).topk(m, dim=1).indices.sort(1).values  # (N, M)
    off = (~cand.gather(1, ci)).float() * _BIG
    a, bb, c, d = (t.gather(1, ci) - off for t in corners)  # (N, M) each
    # the cell's distinct pixels: a block of rows x columns, padded to the largest by repeating the last one
    n_r, n_c = geo["slots"]
    ar_r, ar_c = torch.arange(n_r, device=cy.device), torch.arange(n_c, device=cx.device)
    sy0, sx0 = geo["slot_first_y"][cy][:, None], geo["slot_first_x"][cx][:, None]  # (N, 1)
    rows = torch.minimum(sy0 + ar_r, geo["slot_last_y"][cy][:, None])  # (N, R)
    cols = torch.minimum(sx0 + ar_c, geo["slot_last_x"][cx][:, None])  # (N, C)
    u0, u1 = geo["wx0"][cols][:, :, None], geo["wx1"][cols][:, :, None]  # (N, C, 1)
    # PyTorch's order: (x00 * wx0 + x01 * wx1) * wy0 + (x10 * wx0 + x11 * wx1) * wy1; classes last (argmax)
    upper = a[:, None, :] * u0 + bb[:, None, :] * u1  # (N, C, M)
    lower = c[:, None, :] * u0 + d[:, None, :] * u1
    v0, v1 = geo["wy0"][rows][:, :, None, None], geo["wy1"][rows][:, :, None, None]  # (N, R, 1, 1)
    v = upper[:, None] * v0 + lower[:, None] * v1  # (N, R, C, M)
    win = ci.gather(1, v.argmax(-1).flatten(1)).view(-1, n_r, n_c)  # (N, R, C) class indices
    # every output pixel of the cell takes its distinct pixel's label
    o_r, o_c = geo["block"]
    out_rows = torch.minimum(geo["first_y"][cy][:, None] + torch.arange(o_r, device=cy.device),
                             geo["last_y"][cy][:, None])  # (N, R_out)
    out_cols = torch.minimum(geo["first_x"][cx][:, None] + torch.arange(o_c, device=cx.device),
                             geo["last_x"][cx][:, None])  # (N, C_out)
    slot_r, slot_c = geo["rep_y"][out_rows] - sy0, geo["rep_x"][out_cols] - sx0
    win = win.gather(1, slot_r[:, :, None].expand(-1, -1, n_c)).gather(2, slot_c[:, None, :].expand(-1, o_r, -1))
    out_h, out_w = out_hw
    flat = (b[:, None, None] * out_h + out_rows[:, :, None]) * out_w + out_cols[:, None, :]  # (N, R_out, C_out)
    return flat.reshape(-1), win.reshape(-1)


# ----------------------------------------------------------------------------------------------- the model
def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    fn = getattr(model, "forward_logits", None)
    if fn is None:
        raise TypeError(f"{type(model).__name__} has no forward_logits: predict() takes a segmentation model "
                        "(lemore.list_models() except lemore_cls)")
    return fn(images)


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Label maps of a segmentation model at the input size (or ``size``).

    Args:
        model: a registered segmentation model (or its ``fuse_for_inference`` copy), in eval mode.
        images: (B, 3, H, W) normalised images (``lemore.data.transforms`` normalisation).
        size: output (H, W); default the input size.

    Returns:
        (B, H, W) int64 labels: ``interpolate(model.forward_logits(images), size).argmax(1)`` without the
        K x H x W upsampled logits (:func:`upsampled_argmax`).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images of shape {tuple(images.shape)}: expected (B, 3, H, W)")
    if model.training:
        raise RuntimeError("predict() needs a model in eval mode: call model.eval() first")
    return upsampled_argmax(_logits(model, images), size or images.shape[-2:])


# ------------------------------------------------------------------------------------------------------ CLI
def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a training checkpoint (model.pt / last.pt: weights and config) or a weights-only state dict")
    p.add_argument("--images", type=Path, nargs="+", required=True, help="image files (JPEG, PNG, WebP)")
    p.add_argument("--out", type=Path, required=True, help="folder for the label maps: <image stem>.png")
    p.add_argument("--model", help="registered model of a bare state dict (default: the checkpoint's config)")
    p.add_argument("--num-classes", type=int, help="classes of a bare state dict (default: the checkpoint's config)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def load_for_inference(checkpoint: str | Path, model_name: str | None = None,
                       num_classes: int | None = None) -> nn.Module:
    """A checkpoint's model, fused for inference (weights-only load; the config in the checkpoint, or the given
    registered model name and class count for a bare state dict)."""
    from lemore.checkpoint import CheckpointError, load_checkpoint, load_state_dict, load_weights
    from lemore.config import from_dict
    from lemore.models.fuse import fuse_for_inference
    from lemore.registry import MODELS, build_model, create_model

    obj = load_checkpoint(checkpoint)
    saved = obj.get("config") if isinstance(obj, dict) and isinstance(obj.get("config"), dict) else None
    seg_models = [n for n in sorted(MODELS) if n != "lemore_cls"]
    if model_name is None and saved is not None:
        cfg = from_dict(saved)
        if num_classes is not None:
            cfg.data.num_classes = num_classes
        model_name = cfg.model.name
        model = build_model(cfg) if model_name in seg_models else None
    elif model_name is None or num_classes is None:
        raise CheckpointError(f"{str(checkpoint)!r} holds no training config: pass --model and --num-classes")
    else:
        model = create_model(model_name, num_classes=num_classes) if model_name in seg_models else None
    if model is None:
        raise CheckpointError(f"model {model_name!r} is not a segmentation model; choose from {seg_models}")
    load_state_dict(model, load_weights(checkpoint), source=str(checkpoint))
    return fuse_for_inference(model.eval(), inplace=True)


def cli_main(args: argparse.Namespace) -> int:
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF
    from tqdm import tqdm

    from lemore.checkpoint import atomic_write_bytes, check_writable
    from lemore.data.io import read_image
    from lemore.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    if args.threads:
        torch.set_num_threads(args.threads)
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {missing}")
    check_writable(args.out, "output folder")  # before the model runs, not after
    model = load_for_inference(args.checkpoint, args.model, args.num_classes)
    dtype = np.uint8 if model.num_classes <= 256 else np.uint16
    for path in tqdm(args.images, desc="predict", unit="image", disable=len(args.images) < 2):
        img = read_image(path)  # (3, H, W) uint8; a bad file raises DatasetError naming it
        x = TF.normalize(img.float() / 255, IMAGENET_MEAN, IMAGENET_STD)[None]  # (1, 3, H, W)
        labels = predict(model, x)[0].numpy().astype(dtype)  # (H, W) class indices
        buf = io.BytesIO()
        Image.fromarray(labels).save(buf, format="PNG")
        atomic_write_bytes(args.out / f"{path.stem}.png", buf.getvalue())
    print(f"wrote {len(args.images)} label map(s) ({dtype.__name__} class indices) to {args.out}")
    return 0

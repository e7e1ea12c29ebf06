"""ConfusionMatrix / summarize against hand-worked matrices and MMSegmentation's definition."""

import math

import numpy as np
import pytest
import torch

from lemore.metrics import ConfusionMatrix, jsonable, summarize

# Rows = ground truth, columns = prediction. Worked by hand:
#   intersect = diag = (3, 4, 5); GT area = row sums = (4, 7, 5); predicted area = column sums = (5, 5, 6)
#   union = GT + pred - intersect = (6, 8, 6) -> IoU = (1/2, 1/2, 5/6), mIoU = 11/18 = 61.11 %
#   Acc = intersect / GT = (3/4, 4/7, 1) -> mAcc = 77.38 %; aAcc = 12 / 16 = 75 %
HAND = torch.tensor([[3, 1, 0],
                     [2, 4, 1],
                     [0, 0, 5]])


def _pixels_for(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, pred) pixel lists whose confusion matrix is ``mat``, plus some ignored pixels."""
    t, p = [], []
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            t += [i] * int(mat[i, j])
            p += [j] * int(mat[i, j])
    t += [255] * 5  # ignored pixels, with arbitrary predictions: must not count anywhere
    p += [0, 1, 2, 0, 1]
    perm = torch.randperm(len(t), generator=torch.Generator().manual_seed(0))
    return torch.tensor(t)[perm].reshape(1, 3, 7), torch.tensor(p)[perm].reshape(1, 3, 7)


def test_hand_worked_3x3():
    target, pred = _pixels_for(HAND)
    cm = ConfusionMatrix(3)
    cm.update(target, pred)
    assert torch.equal(cm.mat, HAND)
    m = cm.compute(["a", "b", "c"])
    assert m["aacc"] == pytest.approx(75.0)
    assert m["miou"] == pytest.approx(100 * 11 / 18)
    assert m["macc"] == pytest.approx(100 * (3 / 4 + 4 / 7 + 1) / 3)
    assert m["per_class_iou"] == pytest.approx({"a": 50.0, "b": 50.0, "c": 100 * 5 / 6})
    assert m["num_pixels"] == 16


def test_accumulates_over_batches_not_per_image():
    # Two images: per-image averaging would give a different number than the dataset-level matrix.
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 0, 0, 1]]), torch.tensor([[0, 0, 0, 0]]))  # image 1
    cm.update(torch.tensor([[1]]), torch.tensor([[1]]))  # image 2
    assert torch.equal(cm.mat, torch.tensor([[3, 0], [1, 1]]))
    assert cm.compute()["miou"] == pytest.approx(100 * (3 / 4 + 1 / 2) / 2)


def test_absent_classes_are_nan_and_excluded():
    # Class 2: in neither GT nor prediction -> NaN, left out of the mean.
    # Class 3: predicted but never in GT -> IoU 0 (counts), Acc NaN (no GT pixels).
    target = torch.tensor([0, 0, 1, 1, 1, 0])
    pred = torch.tensor([0, 3, 1, 1, 0, 0])
    m = ConfusionMatrix(4)
    m.update(target, pred)
    r = m.compute()
    iou = r["per_class_iou"]
    assert math.isnan(iou["2"]) and iou["3"] == 0.0
    assert iou["0"] == pytest.approx(100 * 2 / 4) and iou["1"] == pytest.approx(100 * 2 / 3)
    assert r["miou"] == pytest.approx(100 * (2 / 4 + 2 / 3 + 0) / 3)  # nanmean over 3 classes, not 4
    assert math.isnan(r["per_class_acc"]["3"]) and math.isnan(r["per_class_acc"]["2"])
    assert r["macc"] == pytest.approx(100 * (2 / 3 + 2 / 3) / 2)
    assert jsonable(r)["per_class_iou"]["2"] is None  # strict JSON


def _mmseg_reference(preds, labels, num_classes, ignore_index=255):
    """MMSegmentation's IoUMetric (mmseg/evaluation/metrics/iou_metric.py), transcribed with numpy:
    intersect_and_union per image with torch.histc-style counts, summed, then total_area_to_metrics."""
    area_i = np.zeros(num_classes)
    area_u = np.zeros(num_classes)
    area_p = np.zeros(num_classes)
    area_l = np.zeros(num_classes)
    for pred, label in zip(preds, labels):
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        inter = pred[pred == label]
        ai = np.histogram(inter, bins=num_classes, range=(0, num_classes - 1))[0]
        ap = np.histogram(pred, bins=num_classes, range=(0, num_classes - 1))[0]
        al = np.histogram(label, bins=num_classes, range=(0, num_classes - 1))[0]
        area_i += ai
        area_p += ap
        area_l += al
        area_u += ap + al - ai
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = area_i / area_u
        acc = area_i / area_l
    return {"aAcc": area_i.sum() / area_l.sum() * 100, "mIoU": np.nanmean(iou) * 100,
            "mAcc": np.nanmean(acc) * 100, "IoU": iou * 100}


def test_equals_mmseg_definition_on_random_images():
    rng = np.random.default_rng(0)
    k = 6
    preds, labels = [], []
    cm = ConfusionMatrix(k)
    for _ in range(5):
        h, w = rng.integers(5, 20, size=2)
        label = rng.integers(0, k - 1, size=(h, w))  # class k-1 never in GT
        label[rng.random((h, w)) < 0.2] = 255
        pred = np.where(rng.random((h, w)) < 0.6, np.clip(label, 0, k - 1), rng.integers(0, k - 2, size=(h, w)))
        preds.append(pred)
        labels.append(label)
        cm.update(torch.from_numpy(label), torch.from_numpy(pred))
    ref = _mmseg_reference(preds, labels, k)
    ours = cm.compute()
    assert ours["aacc"] == pytest.approx(ref["aAcc"])
    assert ours["miou"] == pytest.approx(ref["mIoU"])
    assert ours["macc"] == pytest.approx(ref["mAcc"])
    np.testing.assert_allclose(list(ours["per_class_iou"].values()), ref["IoU"], equal_nan=True)


def test_pascal_context_miou60_and_miou59_from_one_matrix():
    k = 60
    mat = torch.zeros(k, k, dtype=torch.int64)
    mat[0, 0], mat[0, 1] = 10, 10  # background: IoU 10 / 30 (predicted 10 more pixels as class 1)
    for c in range(1, k):
        mat[c, c] = 5  # perfect foreground classes, except class 1 which also got background pixels
    r = summarize(mat, background_index=0)
    iou = torch.tensor(list(r["per_class_iou"].values()))
    assert r["miou60"] == r["miou"] == pytest.approx(float(iou.mean()))
    assert r["miou59"] == pytest.approx(float(iou[1:].mean()))
    assert r["miou59"] > r["miou60"]


def test_bad_inputs_name_the_problem():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"labels \[7\] outside \[0, 3\)"):
        cm.update(torch.tensor([0, 7]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="upsample the logits"):
        cm.update(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="predictions must be in"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 3]))


def test_all_reduce_without_process_group_is_a_noop():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    cm.all_reduce()
    assert int(cm.mat.sum()) == 2


def test_update_equals_the_boolean_index_formulation():
    """The extra-bin bincount gives the matrix of the textbook formulation (drop ignored pixels, then count)."""
    g = torch.Generator().manual_seed(0)
    for k in (2, 11, 150):
        target = torch.randint(0, k, (3, 37, 53), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.2] = 255
        pred = torch.randint(0, k, target.shape, generator=g)
        cm = ConfusionMatrix(k)
        cm.update(target, pred)
        keep = target != 255
        expected = torch.bincount(k * target[keep] + pred[keep], minlength=k * k).reshape(k, k)
        assert torch.equal(cm.mat, expected)
    cm = ConfusionMatrix(3)
    cm.update(torch.full((4, 4), 255), torch.zeros(4, 4, dtype=torch.int64))  # all ignored: nothing counted
    assert cm.mat.sum() == 0


def test_max_indices_is_argmax():
    """The evaluator takes ``logits.max(1).indices`` (faster on CPU): the first maximum, as argmax, ties included."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 11, 37, 53, generator=g)
    x[:, 4] = x[:, 7]  # exact ties between two classes everywhere
    x[0, :, :5] = 0.0  # and among all of them
    assert torch.equal(x.max(1).indices, x.argmax(1))

"""Training-pipeline throughput at the ADE20K recipe, per DataLoader worker.

Protocol (also written into the results):
- Fixture: 32 generated images of 683x512 (W x H, the typical ADE20K size) in the ADE20K layout, JPEG quality
  90, with 8-bit PNG labels of 150 classes + 0 ("other"), made in a temporary folder.
- Per-sample work = what one DataLoader worker does for ``dataset[i]``: decode image and label, remap the
  label (reduce_zero_label), then the ADE20K training pipeline of ``lemore.data.transforms.train_transform``:
  random resize to ratio 0.5-2.0 of (2048, 512), 512x512 crop with cat_max_ratio 0.75, flip, photometric
  distortion, normalisation, padding to 512x512.
- One process, ``torch.set_num_threads(1)`` (what DataLoader workers use), 10 warm-up samples, then 3 rounds
  of 96 samples cycling through the fixture; the median round is reported. Every variant uses the same seeds.
- Rates are images per second of CPU time of this process (``time.process_time``): that is what a worker gets
  from a core of its own, and it does not change when other programs share the machine. Wall-clock rates are
  recorded too, with the load average, for reference.

Variants: "tv.io + v2 (uint8 tensors)" is lemore's dataset as shipped; "PIL decode + v2" swaps only the
decoding (Pillow, as torchvision's ImageFolder and mmseg's pillow backend do) to give the number a peer; "v2
pipeline only" times the transforms on pre-decoded tensors, to split decoding from transforming.

    python benchmarks/data_pipeline.py            # writes results/benchmarks/data_pipeline.{json,md}
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors

from lemore.config import recipe
from lemore.data.ade20k import ADE20K
from lemore.data.transforms import train_transform

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks"
N_IMAGES, SIZE_HW, WARMUP, ROUNDS, PER_ROUND = 32, (512, 683), 10, 3, 96


def make_fixture(root: Path) -> Path:
    """ADE20K-layout tree of N_IMAGES 683x512 scenes: smooth colour fields, label regions of 150 classes."""
    rng = np.random.default_rng(0)
    h, w = SIZE_HW
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    for i in range(N_IMAGES):
        cells = rng.integers(0, 151, (8, 11))  # ~64-px regions, values 0..150
        label = np.kron(cells, np.ones((64, 64), np.int64))[:h, :w].astype(np.uint8)
        low = rng.uniform(0, 255, (9, 12, 3)).astype(np.float32)
        image = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32)
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / "training" / f"ADE_train_{i + 1:08d}.jpg", quality=90)
        Image.fromarray(label).save(root / "annotations" / "training" / f"ADE_train_{i + 1:08d}.png")
    return root


class PILDecodedADE20K(ADE20K):
    """The same dataset with Pillow decoding (the peer): images converted to RGB, labels as stored."""

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img_path, lbl_path = self.files[i]
        with Image.open(img_path) as im:
            image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
        with Image.open(lbl_path) as im:
            raw = torch.from_numpy(np.asarray(im).astype(np.int64))
        return image, self.remap(raw, lbl_path)


def _time(fn, n_items: int) -> dict[str, float]:
    """Median-of-rounds rates for calling ``fn(k)`` on k = 0, 1, ... (warm-up excluded)."""
    for k in range(WARMUP):
        fn(k)
    cpu, wall = [], []
    for r in range(ROUNDS):
        torch.manual_seed(r)
        c0, w0 = time.process_time(), time.perf_counter()
        for k in range(PER_ROUND):
            fn(k % n_items)
        cpu.append(PER_ROUND / (time.process_time() - c0))
        wall.append(PER_ROUND / (time.perf_counter() - w0))
    return {
        "images_per_s_cpu": round(statistics.median(cpu), 2),
        "images_per_s_wall": round(statistics.median(wall), 2),
        "ms_per_image_cpu": round(1000 / statistics.median(cpu), 2),
        "rounds_images_per_s_cpu": [round(x, 2) for x in cpu],
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    torch.set_num_threads(1)
    cfg = replace(recipe("ade20k").data)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_fixture(Path(tmp) / "ADEChallengeData2016")
        ours = ADE20K(root, "train", transform=train_transform(cfg))
        peer = PILDecodedADE20K(root, "train", transform=train_transform(cfg))
        decoded = [ours._load(i) for i in range(N_IMAGES)]
        pipeline = train_transform(cfg)

        def transforms_only(k: int) -> None:
            image, mask = decoded[k]
            pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))

        image, mask = ours[0]
        assert image.shape == (3, 512, 512) and mask.shape == (512, 512)
        load = os.getloadavg()
        results = {
            "tv.io + v2 (uint8 tensors)": _time(lambda k: ours[k], N_IMAGES),
            "PIL decode + v2 (uint8 tensors)": _time(lambda k: peer[k], N_IMAGES),
            "v2 pipeline only (pre-decoded)": _time(transforms_only, N_IMAGES),
        }
    report = {
        "benchmark": "data_pipeline",
        "protocol": {
            "what": "ADE20K training pipeline per sample: decode image+label, reduce_zero_label, "
            "RandomResize (2048,512) ratio 0.5-2.0, RandomCrop 512x512 cat_max_ratio 0.75, flip, "
            "PhotoMetricDistortion, normalise, pad to 512x512",
            "images": f"{N_IMAGES} generated {SIZE_HW[1]}x{SIZE_HW[0]} (WxH) JPEG q90 + 8-bit PNG labels, "
            "ADE20K layout",
            "process": "one process = one DataLoader worker; torch.set_num_threads(1)",
            "workers": 1,
            "warmup_samples": WARMUP,
            "rounds": ROUNDS,
            "samples_per_round": PER_ROUND,
            "statistic": "median over rounds; images_per_s_cpu = samples / process CPU seconds",
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "load_average_1_5_15": [round(x, 2) for x in load],
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": PIL.__version__,
        },
        "results": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    _write_atomic(OUT / "data_pipeline.json", json.dumps(report, indent=2) + "\n")
    rows = [
        "| variant | images/s per worker (CPU time) | ms/image (CPU) | images/s (wall) |",
        "|---|---|---|---|",
    ]
    rows += [
        f"| {k} | {v['images_per_s_cpu']} | {v['ms_per_image_cpu']} | {v['images_per_s_wall']} |"
        for k, v in results.items()
    ]
    p = report["protocol"]
    md = (
        "# Data pipeline throughput (ADE20K training recipe)\n\n"
        + "\n".join(rows)
        + f"\n\nProtocol: {p['what']}. {p['images']}. {p['process']}; {p['warmup_samples']} warm-up "
        f"samples, median of {p['rounds']} rounds of {p['samples_per_round']}. CPU: {p['cpu']} "
        f"({p['cpu_count']} cores, load average {p['load_average_1_5_15']} during the run: wall-clock rates "
        f"are affected, CPU-time rates much less). torch {p['torch']}, torchvision {p['torchvision']}, "
        f"Pillow {p['pillow']}.\n"
    )
    _write_atomic(OUT / "data_pipeline.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

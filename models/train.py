"""`python -m models.train`: generate data if missing, train the detector (on a GPU if there is
one, else on the CPU), export ONNX, train the cross-vendor control, evaluate on held-out seeds and
write the manifest and model card.

Defaults reproduce the committed model (models/xray-detector.onnx) on any device: the recipe's
stages (RECIPE), each a fixed number of steps over the same generated images from the previous
stage's export; models/REPORT.md gives each stage's measured wall time. `--steps`, `--epochs` or
`--time-budget-s` make a single run instead (as on a lent GPU, with `--init` to continue);
`--device-augment` augments on the training device from a pool that may grow while the
generator writes it (models/device_augment.py, models/lent_gpu.sh).

Training: anchor-free FCOS-style assignment (centre sampling, scale ranges per stride),
quality focal loss with the IoU as the soft target (so scores rank box quality, which mAP
rewards), GIoU box loss, AdamW with a cosine schedule, weight EMA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from models.device_augment import (
    Feed,
    Jitter,
    folder_stems,
    image_files,
    in_pixels,
    read_yolo,
    synth_stems,
)
from models.network import NECK, STRIDES, WIDTH, Detector, Exported, FlipEnsemble, decode, grid
from models.synth import GENERATOR_VERSION
from models.synth.dataset import style_of
from models.taxonomy import CLASSES
from screening.inference.preprocess import LETTERBOX_VALUE

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
RUNS = ROOT / "runs"
MODEL_PATH = ROOT / "xray-detector.onnx"

# Level scale ranges on max(l, t, r, b) in input pixels (FCOS): small objects on stride 8.
SCALE_RANGES = ((0.0, 40.0), (40.0, 90.0), (90.0, 1e5))
CENTRE_RADIUS = 2.5  # strides


def load_split(data: Path, split: str, styles: set[str] | None = None,
               limit: int | None = None, threads: int = 8
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images (RGB uint8) and labels (n, 5: class, x1, y1, x2, y2 in pixels) of a YOLO-format
    split (images/<split>/*.png|jpg, labels/<split>/*.txt): any such folder trains the same way.
    `styles` keeps only our synthetic images of those vendor styles (named by seed)."""
    files = image_files(data, split)[:limit]
    if styles is not None:
        files = [p for p in files if style_of(int(p.stem), ("A", "B", "C")) in styles]

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        img, rows = read_yolo(data, split, path)
        h, w = img.shape[:2]
        return np.ascontiguousarray(img[..., ::-1]), in_pixels(rows, w, h)

    with ThreadPoolExecutor(max(threads, 1)) as pool:
        return list(pool.map(read, files))


def pool_stems(data: Path, limit: int, styles: set[str] | None) -> list[str]:
    """The training images a device-augmented run reads, in order: our generator's seeds
    1..`limit` (written or still being written) where `data` is ours (it has meta/), else the
    folder's images (the first `limit`, 0: all); `styles` keeps our seeds of those styles."""
    if (data / "meta").is_dir() and limit:
        stems = synth_stems(limit)
    else:
        stems = folder_stems(data, "train")[: limit or None]
    if styles is not None:
        stems = [s for s in stems if s.isdigit() and style_of(int(s), ("A", "B", "C")) in styles]
    return stems


# A time-budgeted run times steps CALIBRATE_FROM..+CALIBRATE_STEPS (inside the warm-up, past
# start-up) to fix its length, and stops early if it runs past OVERRUN × its budget; it cannot
# stop before the timing ends (on two CPU cores, 250 steps of batch 64 take about 20 minutes).
# A device-augmented run's pool grows at steps 100 and 200, inside the timed steps.
CALIBRATE_FROM, CALIBRATE_STEPS, OVERRUN = 100, 150, 1.1
EMA_FROM = CALIBRATE_FROM + CALIBRATE_STEPS
# A device-augmented run adds the parcels read so far to its pool every this many steps.
POOL_REFRESH = 100


# Scanner-to-scanner variation beyond our three colour tables, so the detector leans on shape
# and relative colour. NARROW is what every stage used up to the fourth; WIDE, for a late stage,
# adds any hue, strong gamma, blur and noise, and JPEG screen captures.
NARROW = Jitter(hue_p=0.3, hue=25, shuffle_p=0.1, grey_p=0.1, gamma_p=0.3, gamma=(0.7, 1.4),
                blur_p=0.2, blur=(0.3, 1.2), blur_kernel=(3, 3), noise_p=0.25, noise=(2, 8))
WIDE = Jitter(hue_p=0.5, hue=90, shuffle_p=0.15, grey_p=0.15, gamma_p=0.4, gamma=(0.45, 1.8),
              blur_p=0.3, blur=(0.3, 2.5), blur_kernel=(0, 0), noise_p=0.3, noise=(2, 14),
              jpeg_p=0.25)


def _photometric(img: np.ndarray, rng: random.Random, j: Jitter = NARROW) -> np.ndarray:
    """Hue rotation, channel order, grey rendering, gamma, blur, noise, JPEG, each drawn in
    that order (a recorded run replays only with the same draws)."""
    if rng.random() < j.hue_p:  # another vendor's palette: rotate hue
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + rng.randint(-j.hue, j.hue)) % 180
                       ).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.random() < j.shuffle_p:
        img = np.ascontiguousarray(img[..., rng.sample(range(3), 3)])
    if rng.random() < j.grey_p:  # grey-scale workstation view
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if rng.random() < j.gamma_p:
        lut = (255 * (np.arange(256) / 255) ** rng.uniform(*j.gamma)).astype(np.uint8)
        img = cv2.LUT(img, lut)
    if rng.random() < j.blur_p:
        img = cv2.GaussianBlur(img, j.blur_kernel, rng.uniform(*j.blur))
    if rng.random() < j.noise_p:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(*j.noise),
                                                                  img.shape)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
    # No draw when 0, so runs without it keep the augmentation stream they always had.
    if j.jpeg_p > 0 and rng.random() < j.jpeg_p:
        buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(*j.jpeg)])[1]
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img


def augment(img: np.ndarray, boxes: np.ndarray, size: int, rng: random.Random,
            invert_p: float = 0.0, wide: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox with scale jitter and random placement, flips, photometric jitter; with
    probability ``invert_p`` the parcel is shown as a negative (an operator's display mode),
    before letterboxing, as the serving path pads an inverted frame with the usual grey."""
    h, w = img.shape[:2]
    boxes = boxes.copy()
    # No draw when 0, so runs without inversion keep the augmentation stream they always had.
    if invert_p > 0 and rng.random() < invert_p:
        img = 255 - img
    if rng.random() < 0.5:  # mirror across the belt
        img = img[:, ::-1]
        boxes[:, [1, 3]] = w - boxes[:, [3, 1]]
    if rng.random() < 0.5:  # parcel fed the other way round
        img = img[::-1]
        boxes[:, [2, 4]] = h - boxes[:, [4, 2]]
    gain = min(size / h, size / w) * rng.uniform(0.7, 1.0)
    nw, nh = max(round(w * gain), 1), max(round(h * gain), 1)
    left, top = rng.randint(0, size - nw), rng.randint(0, size - nh)
    canvas = np.full((size, size, 3), LETTERBOX_VALUE, np.uint8)
    canvas[top : top + nh, left : left + nw] = cv2.resize(np.ascontiguousarray(img), (nw, nh),
                                                          interpolation=cv2.INTER_AREA)
    boxes[:, [1, 3]] = boxes[:, [1, 3]] * gain + left
    boxes[:, [2, 4]] = boxes[:, [2, 4]] * gain + top
    if rng.random() < 0.5:
        alpha, beta = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
        canvas = cv2.convertScaleAbs(canvas, alpha=alpha, beta=beta)
    return _photometric(canvas, rng, WIDE if wide else NARROW), boxes


class Augmented(torch.utils.data.Dataset[tuple[np.ndarray, np.ndarray]]):
    """Endless augmented samples: item k draws image `order[k % n]` with a per-item RNG, so a
    run is the same for any number of loader workers."""

    def __init__(self, data: list[tuple[np.ndarray, np.ndarray]], size: int, seed: int,
                 steps: int, batch: int, invert_p: float = 0.0, wide: bool = False) -> None:
        self.data, self.size, self.seed, self.invert_p = data, size, seed, invert_p
        self.wide = wide
        self.length = steps * batch
        self._perm: tuple[int, list[int]] = (-1, [])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, i = divmod(k, len(self.data))
        if self._perm[0] != epoch:  # each epoch is a fresh shuffle, the same in every worker
            order = list(range(len(self.data)))
            random.Random(self.seed * 7919 + epoch).shuffle(order)
            self._perm = (epoch, order)
        rng = random.Random(self.seed * 1_000_003 + k)
        return augment(*self.data[self._perm[1][i]], self.size, rng, self.invert_p, self.wide)


def collate(batch: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [B, H, W, 3] and targets padded to [B, G, 5] (class -1 = padding)."""
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    g = max(1, max(len(b[1]) for b in batch))
    targets = torch.full((len(batch), g, 5), -1.0)
    for i, (_, boxes) in enumerate(batch):
        targets[i, : len(boxes)] = torch.from_numpy(boxes)
    return images, targets


def box_iou_giou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise IoU and GIoU of x1y1x2y2 boxes."""
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    return iou, iou - (hull - union) / (hull + 1e-7)


def assign(centres: torch.Tensor, strides: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per image and location: index of its ground-truth box or -1, for a padded batch `gt`
    [B, G, 5] (class -1 = padding). FCOS centre sampling + scale ranges, ties to the smallest
    box; every box gets at least its nearest location inside it. No host sync."""
    g = gt.shape[1]
    valid = gt[..., 0] >= 0  # [B, G]
    boxes = gt[..., 1:]  # [B, G, 4]
    x, y = centres[None, :, 0, None], centres[None, :, 1, None]  # [1, N, 1]
    ltrb = torch.stack([x - boxes[:, None, :, 0], y - boxes[:, None, :, 1],
                        boxes[:, None, :, 2] - x, boxes[:, None, :, 3] - y], -1)  # [B, N, G, 4]
    inside = (ltrb.min(-1).values > 0) & valid[:, None, :]
    cxy = (boxes[..., :2] + boxes[..., 2:]) / 2  # [B, G, 2]
    r = CENTRE_RADIUS * strides[None, :, None]
    near = ((x - cxy[:, None, :, 0]).abs() < r) & ((y - cxy[:, None, :, 1]).abs() < r)
    m = ltrb.max(-1).values
    ranges = torch.tensor(SCALE_RANGES, device=centres.device)
    level = torch.log2(strides / STRIDES[0]).long()
    lo, hi = ranges[level, 0][None, :, None], ranges[level, 1][None, :, None]
    ok = inside & near & (m >= lo) & (m <= hi)
    area = (boxes[..., 2:] - boxes[..., :2]).prod(-1)  # [B, G]
    cost = torch.where(ok, area[:, None, :].expand_as(m), torch.full_like(m, float("inf")))
    best_cost, best = cost.min(-1)  # [B, N]
    idx = torch.where(torch.isfinite(best_cost), best, torch.full_like(best, -1))
    # A box with no location: give it the location nearest its centre inside it.
    has = (idx[:, :, None] == torch.arange(g, device=idx.device)).any(1)  # [B, G]
    d = ((centres[None, :, None, :] - cxy[:, None, :, :]) ** 2).sum(-1) + (~inside) * 1e9
    nearest = d.argmin(1)  # [B, G]
    missing = valid & ~has
    bi, gi = missing.nonzero(as_tuple=True)
    idx[bi, nearest[bi, gi]] = gi
    return idx


def level_layout(levels: list[tuple[torch.Tensor, torch.Tensor]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Location centres [N, 2] and their strides [N] in `decode`'s order."""
    dev = levels[0][0].device
    centres = torch.cat([grid(c.shape[2], c.shape[3], s, dev)
                         for (c, _), s in zip(levels, STRIDES, strict=True)])
    strides = torch.cat([torch.full((c.shape[2] * c.shape[3],), float(s), device=dev)
                         for (c, _), s in zip(levels, STRIDES, strict=True)])
    return centres, strides


def loss_fn(levels: list[tuple[torch.Tensor, torch.Tensor]], targets: torch.Tensor,
            nc: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Quality focal loss (Li et al. 2020: BCE against the IoU, modulated by |σ − target|²) +
    2 × GIoU loss over assigned locations, both per positive location."""
    levels = [(c.float(), r.float()) for c, r in levels]
    logits, boxes = decode(levels)
    centres, strides = level_layout(levels)
    idx = assign(centres, strides, targets)  # [B, N]
    pos = idx >= 0
    bi, ni = pos.nonzero(as_tuple=True)
    gt = targets[bi, idx[bi, ni]]  # [P, 5]
    iou, giou = box_iou_giou(boxes[bi, ni], gt[:, 1:])
    n_pos = pos.sum().clamp(min=1).float()
    cls_target = torch.zeros_like(logits)
    cls_target[bi, ni, gt[:, 0].long()] = iou.detach().clamp(min=0.05)
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="none")
    cls_loss = (bce * (prob - cls_target).abs().pow(2)).sum() / n_pos
    box_loss = (1 - giou).sum() / n_pos
    return cls_loss + 2.0 * box_loss, {"cls": cls_loss.detach(), "box": box_loss.detach()}


class EMA:
    """Exponential moving average of weights; decay ramps up over the first steps."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = deepcopy(model).eval()
        self.decay, self.updates = decay, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 100))
        with torch.no_grad():
            msd = model.state_dict()
            mine = self.model.state_dict()
            floats = [k for k, v in mine.items() if v.dtype.is_floating_point]
            ema_t = [mine[k] for k in floats]
            torch._foreach_mul_(ema_t, d)
            torch._foreach_add_(ema_t, [msd[k].detach() for k in floats], alpha=1 - d)
            for k, v in mine.items():
                if not v.dtype.is_floating_point:
                    v.copy_(msd[k])


def export(net: Detector, path: Path, size: int, meta: dict[str, str],
           flips: bool = False) -> None:
    import onnx

    model: torch.nn.Module = Exported(net).eval()
    if flips:
        model = FlipEnsemble(model, size).eval()
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(model, (dummy,), str(path), opset_version=17, input_names=["images"],
                      output_names=["output0"], dynamic_axes={"images": {0: "batch"},
                                                               "output0": {0: "batch"}},
                      dynamo=False)
    proto = onnx.load(str(path))
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))


def load_onnx_weights(net: Detector, path: Path, size: int) -> None:
    """Initialise `net` from one of our exports, whose convs carry their folded batch norm.

    Convs are matched by execution order; each BatchNorm becomes identity plus the folded bias
    (mean 0, var 1 − eps, γ 1, β = bias). Train such a net with `freeze_bn` so batch statistics
    do not re-normalise the folded scales."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    onnx_convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    order: list[torch.nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    bn_after = {}
    for mod in net.modules():
        if isinstance(mod, torch.nn.Sequential) and len(mod) == 3 and \
                isinstance(mod[1], torch.nn.BatchNorm2d):
            bn_after[id(mod[0])] = mod[1]
    if len(order) != len(onnx_convs):
        raise RuntimeError(f"{path}: {len(onnx_convs)} convs, model has {len(order)}")
    with torch.no_grad():
        for conv, node in zip(order, onnx_convs, strict=True):
            w = torch.from_numpy(weights[node.input[1]].copy())
            b = torch.from_numpy(weights[node.input[2]].copy()) if len(node.input) > 2 else None
            conv.weight.copy_(w)
            bn = bn_after.get(id(conv))
            if bn is None:
                if b is not None and conv.bias is not None:
                    conv.bias.copy_(b)
                continue
            bn.weight.fill_(1.0)
            bn.bias.copy_(b if b is not None else torch.zeros_like(bn.bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)


def make_flip_ensemble(path: Path, size: int, keep_plain: Path, version: str) -> None:
    """Rewrite the export at ``path`` as its flip ensemble (network.FlipEnsemble): the same
    weights, read back from the export, each image run four times (as it is, mirrored
    left-right, top-bottom and both). The export as trained is kept at ``keep_plain``, and the
    training record says ``flip_ensemble: 4``. ``version`` names the ensemble (its answers
    differ from the plain export's, and every verdict records the version)."""
    import onnx

    record = path.with_suffix(".train.json")
    doc = json.loads(record.read_text()) if record.exists() else {}
    net = Detector(len(CLASSES), tuple(doc.get("width", WIDTH)), int(doc.get("neck", NECK)))
    load_onnx_weights(net, path, size)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props} | {"version": version}
    keep_plain.parent.mkdir(parents=True, exist_ok=True)
    keep_plain.write_bytes(path.read_bytes())
    export(net.eval(), path, size, meta, flips=True)
    if doc:
        doc.update(flip_ensemble=4, version=version)
        record.write_text(json.dumps(doc, indent=2))


def freeze_bn(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(args: argparse.Namespace) -> Path:
    """One training run: `args.steps` optimiser steps (or `args.epochs` over the images, or as
    many as fit in `args.time_budget_s`, measured on the first steps), then an ONNX export of
    the weight average. The run records what it did in `<out>.train.json`; passing its `steps`
    back reproduces it on any device."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    train_dir = args.data / "images" / "train"
    n_total = len(list(train_dir.iterdir())) if train_dir.exists() else 0
    styles = set(args.styles.split(",")) if args.styles else None
    feed: Feed | None = None
    if args.device_augment:
        jitter = WIDE if args.wide_photometric else NARROW
        if jitter.jpeg_p > 0:
            raise SystemExit("--device-augment does not do JPEG re-compression "
                             "(--wide-photometric)")
        feed = Feed(args.data, "train", pool_stems(args.data, args.limit_images, styles),
                    args.imgsz, device, args.seed, args.batch, args.invert_p, jitter,
                    replay=args.pool_schedule, min_pool=args.min_pool,
                    refresh_every=POOL_REFRESH)
        feed.fill()
        data: list[tuple[np.ndarray, np.ndarray]] = []
        print(f"{feed.pool.n} training images to start with on {device}", file=sys.stderr)
    else:
        data = load_split(args.data, "train", styles, args.limit_images or None,
                          threads=max(args.workers, args.threads))
        print(f"{len(data)} training images on {device}", file=sys.stderr)
    width = tuple(int(c) for c in args.width.split(","))
    net = Detector(len(CLASSES), width, args.neck)
    if args.init:
        load_onnx_weights(net, args.init, args.imgsz)
    net.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    budgeted = not args.steps and args.time_budget_s > 0
    total = args.steps or (len(data) // args.batch) * args.epochs
    if budgeted:  # a provisional length; fixed once the first steps are timed
        total = 10**7
    elif total <= 0:
        raise SystemExit("nothing to train: give --steps, --epochs (not with --device-augment) "
                         "or --time-budget-s")
    batches = iter(torch.utils.data.DataLoader(
        Augmented(data, args.imgsz, args.seed, total if not budgeted else 10**6, args.batch,
                  args.invert_p, args.wide_photometric),
        batch_size=args.batch, num_workers=args.workers, collate_fn=collate,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if args.workers else None)) if feed is None else None
    ema: EMA | None = None
    # `total` is how many steps the run takes; `horizon` is the length its schedule (warm-up,
    # cosine decay, EMA decay) is planned for. They differ in a replay of a run that stopped
    # short of its plan (`lr_steps`), and in a budgeted run until its length is fixed.
    horizon, warmup, decay = 0, 0, 0.0

    def plan(n_steps: int) -> None:
        nonlocal horizon, warmup, decay
        horizon = n_steps
        # EMA horizon about a tenth of the run: long enough to smooth, short enough to forget
        # the untrained start of a short run.
        decay = min(max(1 - 10 / horizon, 0.99), 0.9995)
        if ema is not None:
            ema.decay = decay
        warmup = min(300, horizon // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return float(args.lr * (step + 1) / warmup)
        return float(args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(
            math.pi * min(step - warmup, horizon - warmup) / max(horizon - warmup, 1)))))

    # A budgeted run starts on the plan of a long run (300 warm-up steps, the longest EMA):
    # the same as its final plan over the steps timed before it is fixed (when that is 3,000
    # steps or more), so replaying the recorded length replays the run.
    plan(args.lr_steps or (total if not budgeted else 10**7))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    step, calib_at = 0, CALIBRATE_FROM
    start = time.monotonic()
    last_ckpt = start
    lr_steps = args.lr_steps or None
    bar = tqdm(total=None if budgeted else total, desc="train", mininterval=10)
    net.train()
    if args.init:
        freeze_bn(net)
    while step < total:
        if feed is not None:
            x, targets = feed.next(step)
        else:
            assert batches is not None
            images, targets = next(batches)
            x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            targets = targets.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with autocast:
            levels = net(x)
        loss, parts = loss_fn(levels, targets, len(CLASSES))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        # The weight average starts once a budgeted run has fixed its length (any run: so that
        # a replay of the recorded length averages the same steps).
        if ema is None and step + 1 >= min(EMA_FROM, total // 2):
            ema = EMA(net, decay)
        elif ema is not None:
            ema.update(net)
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", cls=f"{float(parts['cls']):.3f}",
                            box=f"{float(parts['box']):.3f}")
        if budgeted and step == calib_at:
            # Time CALIBRATE_STEPS steps past start-up, then fix the run's length.
            if device.type == "cuda":
                torch.cuda.synchronize()
            mark = time.monotonic()
            calib_at = -1
            mark_step = step
        elif budgeted and calib_at == -1 and step == mark_step + CALIBRATE_STEPS:
            if device.type == "cuda":
                torch.cuda.synchronize()
            rate = CALIBRATE_STEPS / (time.monotonic() - mark)
            left = args.time_budget_s - (time.monotonic() - start)
            plan(step + max(int(left * rate * 0.95), 1))
            total = horizon
            bar.total = total
            print(f"\n{rate:.1f} steps/s: this run takes {total} steps", file=sys.stderr)
            calib_at = -2
        if budgeted and calib_at == -2 and step % 50 == 0 and \
                time.monotonic() - start > OVERRUN * args.time_budget_s:
            # Slower than timed (say, a second run began sharing the GPU): stop here. The
            # record keeps the planned length as lr_steps, so a replay has the same schedule.
            print(f"\nover budget: stopping at step {step} of {total}", file=sys.stderr)
            lr_steps = total
            break
        if ema is not None and args.checkpoint_every_s and \
                time.monotonic() - last_ckpt > args.checkpoint_every_s:
            _export_run(ema.model, args, width, step, time.monotonic() - start,
                        feed.pool.n if feed else len(data), n_total, device, feed)
            last_ckpt = time.monotonic()
    bar.close()
    if feed is not None:
        feed.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.monotonic() - start
    assert ema is not None
    args.lr_steps = lr_steps
    _export_run(ema.model, args, width, step, wall, feed.pool.n if feed else len(data), n_total,
                device, feed)
    print(f"exported {args.out} after {wall / 60:.1f} min, {step} steps", file=sys.stderr)
    return args.out


def _export_run(model: torch.nn.Module, args: argparse.Namespace, width: tuple[int, ...],
                steps: int, wall: float, n_images: int, n_total: int,
                device: torch.device, feed: Feed | None) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "names": str(dict(enumerate(CLASSES))),  # Ultralytics' format: "{0: 'firearm', ...}"
        "stride": str(max(STRIDES)),
        "imgsz": str([args.imgsz, args.imgsz]),
        "task": "detect",
        "version": args.version,
        "author": "parcel-screening models/train.py",
    }
    cpu_model = deepcopy(model).float().cpu().eval()
    export(cpu_model, args.out, args.imgsz, meta)
    (args.out.with_suffix(".train.json")).write_text(json.dumps(
        {"train_wall_s": round(wall, 1), "steps": steps, "epochs": round(
            steps * args.batch / max(n_images, 1), 1), "images": n_images,
         "batch": args.batch, "imgsz": args.imgsz, "width": list(width), "neck": args.neck,
         "seed": args.seed, "lr": args.lr, "device": torch.cuda.get_device_name(device)
         if device.type == "cuda" else "cpu", "threads": args.threads,
         "workers": args.workers, "styles": args.styles or "A,B,C", "version": args.version,
         # For a device-augmented run: the last seed its pool held (seeds 1.. that one).
         "images_total": feed.pool.seeds[-1] if feed is not None else n_total,
         "init": str(args.init.name) if args.init else None,
         "invert_p": args.invert_p, "wide_photometric": args.wide_photometric,
         "generator": getattr(args, "generator", GENERATOR_VERSION),
         "time_budget_s": args.time_budget_s if not args.steps and args.time_budget_s else None}
        | ({"lr_steps": args.lr_steps} if getattr(args, "lr_steps", None) else {})
        | ({"device_augment": True, "pool": [list(p) for p in (feed.replay or feed.schedule)],
            "pool_refresh_steps": POOL_REFRESH} if feed is not None else {}),
        indent=2))


@dataclass(frozen=True)
class Stage:
    """One run of a recipe: `steps` optimiser steps of `batch` over seeds 1..`images`, each stage
    continuing from the previous one's export."""

    steps: int
    lr: float
    batch: int
    images: int
    invert_p: float
    wide_photometric: bool = False
    # Augmented on the training device from a pool that grew as the record named here (a file
    # beside this module) says: its "pool" (step, last seed) list is replayed.
    pool_record: str | None = None
    lr_steps: int | None = None  # the schedule's length, where the run stopped short of it
    generator: str = GENERATOR_VERSION  # the version that rendered its parcels


def stage_data(root: Path, generator: str) -> Path:
    """Where the parcels of a generator version live: `root` for the current one, a folder
    beside its splits for an older one (the seeds are the same, the images are not)."""
    return root if generator == GENERATOR_VERSION else root / f"generator-{generator}"


# The committed model's recipe, as models/xray-detector.train.json records it: the lengths are
# what time-boxed runs reached (see each stage's note there); replaying them needs no budget.
# Its parcels came from generator 1.0.0, which put concealing covers in threat parcels only.
RECIPE = (
    Stage(steps=4302, lr=2e-3, batch=64, images=3087, invert_p=0.0,  # GPU, from scratch
          generator="1.0.0"),
    Stage(steps=843, lr=6e-4, batch=64, images=3087, invert_p=0.2,  # 2 CPU cores
          generator="1.0.0"),
    Stage(steps=2707, lr=1.5e-3, batch=192, images=27047, invert_p=0.2,  # GPU
          generator="1.0.0"),
    Stage(steps=3000, lr=8e-4, batch=192, images=27047, invert_p=0.2,  # GPU
          generator="1.0.0"),
)
# The cross-vendor control: from scratch on styles A and B only, tested on C. One time-boxed
# run on a lent H200 (models/lent_gpu.sh), augmented on the GPU while the generator wrote its
# parcels; its length and its pool's growth are replayed from its record.
# Pinned to the generator it was trained on, as RECIPE's stages are: a later version would
# otherwise move its replay onto other parcels.
XVENDOR = Stage(steps=3864, lr=2e-3, batch=256, images=41230, invert_p=0.2,
                pool_record="xvendor.train.json", generator="1.1.0")


def run_stages(args: argparse.Namespace, stages: Sequence[Stage], out: Path) -> None:
    """Train `stages` in turn, each from the previous export (the first from `args.init`), the
    last to `out`; its record lists the earlier stages' records under `earlier_stages`."""
    init, records = args.init, []
    for i, st in enumerate(stages):
        last = i == len(stages) - 1
        schedule = json.loads((ROOT / st.pool_record).read_text())["pool"] \
            if st.pool_record else None
        run = argparse.Namespace(**{
            **vars(args), "data": stage_data(args.data, st.generator), "steps": st.steps,
            "lr": st.lr, "batch": st.batch,
            "limit_images": st.images, "invert_p": st.invert_p, "init": init,
            "wide_photometric": st.wide_photometric,
            "device_augment": st.pool_record is not None, "pool_schedule": schedule,
            "lr_steps": st.lr_steps, "generator": st.generator,
            "epochs": 0, "time_budget_s": 0,
            "out": out if last else RUNS / f"{out.stem}-stage{i + 1}.onnx"})
        train(run)
        if not last:
            records.append(json.loads(run.out.with_suffix(".train.json").read_text()))
        init = run.out
    if records:
        record = out.with_suffix(".train.json")
        merged = json.loads(record.read_text())
        merged["earlier_stages"] = records
        record.write_text(json.dumps(merged, indent=2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--stages", type=int, default=len(RECIPE),
                    help="replay the first N stages of the committed recipe (default: all)")
    ap.add_argument("--images", type=int, default=None,
                    help="synthetic training parcels to generate when --data has fewer "
                         "(default: what the recipe uses; for a single run, none)")
    ap.add_argument("--steps", type=int, default=None,
                    help="a single run instead of the recipe: this many optimiser steps "
                         "(0: use --epochs or --time-budget-s)")
    ap.add_argument("--epochs", type=int, default=0, help="single run: passes over the images")
    ap.add_argument("--time-budget-s", type=float, default=0,
                    help="single run: as many steps as fit, timed on the first ones")
    ap.add_argument("--limit-images", type=int, default=0,
                    help="single run: train on the first N only (default: --images; 0: all)")
    ap.add_argument("--batch", type=int, default=64, help="single run only")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--width", default=",".join(map(str, WIDTH)))
    ap.add_argument("--neck", type=int, default=NECK)
    ap.add_argument("--lr", type=float, default=2e-3, help="single run only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                    help="data loader processes (augmentation)")
    ap.add_argument("--styles", default="", help="train only on these vendor styles (A,B,...)")
    ap.add_argument("--init", type=Path, default=None, help="start from one of our ONNX exports")
    ap.add_argument("--invert-p", type=float, default=0.0,
                    help="single run only: share of samples shown as a negative display")
    ap.add_argument("--wide-photometric", action="store_true",
                    help="single run only: wider colour, blur, noise and JPEG jitter")
    ap.add_argument("--version", default="2.3.0")
    ap.add_argument("--device-augment", action="store_true",
                    help="single run only: hold the parcels on the training device and augment "
                         "batches there; the pool grows while the generator writes --data")
    ap.add_argument("--pool-record", type=Path, default=None,
                    help="single run: replay the pool growth (`pool`) and schedule length "
                         "(`lr_steps`) of this device-augmented run's record (implies "
                         "--device-augment; give its steps, batch, lr, ... as recorded)")
    ap.add_argument("--min-pool", type=int, default=1000,
                    help="--device-augment: parcels to wait for before the first step")
    ap.add_argument("--checkpoint-every-s", type=float, default=0,
                    help="also export the weight average this often while training")
    ap.add_argument("--no-evaluate", action="store_true", help="no cross-vendor control, "
                    "no evaluation")
    ap.add_argument("--no-xvendor", action="store_true", help="skip the cross-vendor control")
    ap.add_argument("--no-flips", action="store_true",
                    help="export the model as trained, without the four-flip ensemble")
    args = ap.parse_args(argv)
    args.pool_schedule, args.lr_steps = None, None
    if args.pool_record is not None:
        record = json.loads(args.pool_record.read_text())
        args.pool_schedule, args.lr_steps = record["pool"], record.get("lr_steps")
        args.device_augment = True
    single = args.steps is not None or args.epochs > 0 or args.time_budget_s > 0
    stages = RECIPE[: max(args.stages, 1)]
    control = () if args.no_evaluate or args.no_xvendor else (XVENDOR,)
    if args.images is None:
        args.images = 0 if single else max(st.images for st in (*stages, *control))
    # Parcels to generate, per generator version (a recipe replays on the version it used).
    wanted = {GENERATOR_VERSION: args.images if single else 0}
    for st in () if single else (*stages, *control):
        wanted[st.generator] = max(wanted.get(st.generator, 0), st.images)
    for version, n in wanted.items():
        root = stage_data(args.data, version)
        if n:  # resumable: parcels this version already wrote are kept, others re-rendered
            subprocess.run([sys.executable, "-m", "models.synth", "--out", str(root),
                            "--train", str(n), "--generator", version, "--test", "0",
                            "--workers", str(os.cpu_count() or 1)], check=True)
    if single:
        train_dir = args.data / "images" / "train"  # nothing was generated when no --images
        if not args.images and not (train_dir.exists() and any(train_dir.iterdir())):
            raise SystemExit(f"no training parcels in {args.data}: give --images N to generate "
                             "them (or point --data at a YOLO-format folder)")
        args.steps = args.steps or 0
        args.limit_images = args.limit_images or args.images
        train(args)
    else:
        run_stages(args, stages, args.out)
    if not args.no_flips:
        make_flip_ensemble(args.out, args.imgsz, RUNS / f"{args.out.stem}-plain.onnx",
                           args.version)
    if args.no_evaluate:
        return
    cmd = [sys.executable, "-m", "models.evaluate", "--model", str(args.out), "--data",
           str(args.data)]
    if not args.no_xvendor:
        xv = argparse.Namespace(**{**vars(args), "styles": "A,B", "version": "xvendor",
                                   "init": None})
        run_stages(xv, [XVENDOR], RUNS / "xvendor.onnx")
        if not args.no_flips:  # served as the shipped model is, so the two compare
            make_flip_ensemble(RUNS / "xvendor.onnx", args.imgsz, RUNS / "xvendor-plain.onnx",
                               "xvendor")
        cmd += ["--xvendor-model", str(RUNS / "xvendor.onnx")]
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()

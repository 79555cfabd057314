"""`python -m models.train`: generate data if missing, train the detector on CPU, export ONNX,
evaluate on held-out seeds and write the manifest and model card.

Defaults reproduce the committed model (models/xray-detector.onnx); see models/REPORT.md for the
measured wall time. Training: anchor-free FCOS-style assignment (centre sampling, scale ranges per
stride), quality focal loss with the IoU as the soft target (so scores rank box quality, which
mAP rewards), GIoU box loss, AdamW with a cosine schedule, weight EMA.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from models.network import STRIDES, Detector, Exported, decode, grid
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
               limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images (RGB uint8) and labels (n, 5: class, x1, y1, x2, y2 in pixels) of a YOLO-format
    split (images/<split>/*.png|jpg, labels/<split>/*.txt): any such folder trains the same way.
    `styles` keeps only our synthetic images of those vendor styles (named by seed)."""
    out = []
    files = sorted(p for p in (data / "images" / split).iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:limit]
    for path in files:
        if styles is not None and style_of(int(path.stem), ("A", "B", "C")) not in styles:
            continue
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f"unreadable image {path}")
        h, w = img.shape[:2]
        label = data / "labels" / split / f"{path.stem}.txt"
        rows = [list(map(float, ln.split())) for ln in label.read_text().splitlines()
                if ln.strip()] if label.exists() else []
        boxes = np.array([[c, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                           (cy + bh / 2) * h] for c, cx, cy, bw, bh in rows],
                         np.float32).reshape(-1, 5)
        out.append((np.ascontiguousarray(img[..., ::-1]), boxes))
    return out


def augment(img: np.ndarray, boxes: np.ndarray, size: int, rng: random.Random
            ) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox with scale jitter and random placement, flips, brightness/contrast jitter."""
    h, w = img.shape[:2]
    boxes = boxes.copy()
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
    return canvas, boxes


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


def assign(centres: torch.Tensor, strides: torch.Tensor, gt: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per location: index of its ground-truth box or -1 (FCOS centre sampling + scale ranges,
    ties to the smallest box; every box gets at least its nearest location)."""
    n = centres.shape[0]
    if gt.shape[0] == 0:
        return torch.full((n,), -1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    boxes = gt[:, 1:]
    x, y = centres[:, 0:1], centres[:, 1:2]
    ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], -1)
    inside = ltrb.min(-1).values > 0
    cxy = (boxes[:, :2] + boxes[:, 2:]) / 2
    r = CENTRE_RADIUS * strides[:, None]
    near = ((x - cxy[:, 0]).abs() < r) & ((y - cxy[:, 1]).abs() < r)
    m = ltrb.max(-1).values
    lo = torch.tensor([s[0] for s in SCALE_RANGES])
    hi = torch.tensor([s[1] for s in SCALE_RANGES])
    level = torch.log2(strides / STRIDES[0]).long()
    in_range = (m >= lo[level][:, None]) & (m <= hi[level][:, None])
    ok = inside & near & in_range
    area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    cost = torch.where(ok, area[None, :].expand(n, -1), torch.full_like(m, float("inf")))
    best_cost, best = cost.min(1)
    idx = torch.where(torch.isfinite(best_cost), best, torch.full_like(best, -1))
    for g in range(gt.shape[0]):  # a box with no location: take the nearest inside it
        if not (idx == g).any():
            d = ((centres - cxy[g]) ** 2).sum(1) + (~inside[:, g]).float() * 1e9
            idx[int(d.argmin())] = g
    return idx, gt[:, 0].long()


def loss_fn(levels: list[tuple[torch.Tensor, torch.Tensor]], targets: list[torch.Tensor],
            nc: int) -> tuple[torch.Tensor, dict[str, float]]:
    logits, boxes = decode(levels)
    b = logits.shape[0]
    centres = torch.cat([grid(c.shape[2], c.shape[3], s) for (c, _), s in zip(levels, STRIDES,
                                                                               strict=True)])
    strides = torch.cat([torch.full((c.shape[2] * c.shape[3],), float(s))
                         for (c, _), s in zip(levels, STRIDES, strict=True)])
    cls_target = torch.zeros_like(logits)
    box_losses, n_pos = [], 0
    for i in range(b):
        idx, cls = assign(centres, strides, targets[i])
        pos = idx >= 0
        if not pos.any():
            continue
        gt_boxes = targets[i][idx[pos], 1:]
        iou, giou = box_iou_giou(boxes[i, pos], gt_boxes)
        box_losses.append((1 - giou).sum())
        cls_target[i, pos, cls[idx[pos]]] = iou.detach().clamp(min=0.05)
        n_pos += int(pos.sum())
    # Quality focal loss (Li et al. 2020): BCE against the IoU, modulated by |σ − target|².
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="none")
    cls_loss = (bce * (prob - cls_target).abs().pow(2)).sum() / max(n_pos, 1)
    box_loss = torch.stack(box_losses).sum() / max(n_pos, 1) if box_losses else logits.sum() * 0
    total = cls_loss + 2.0 * box_loss
    return total, {"cls": cls_loss.item(), "box": box_loss.item(), "pos": n_pos / max(b, 1)}


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
            for k, v in self.model.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
                else:
                    v.copy_(msd[k])


def export(net: Detector, path: Path, size: int, meta: dict[str, str]) -> None:
    import onnx

    model = Exported(net).eval()
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


def freeze_bn(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def train(args: argparse.Namespace) -> Path:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    n_total = len(list((args.data / "images" / "train").iterdir()))
    data = load_split(args.data, "train", set(args.styles.split(",")) if args.styles else None,
                      args.limit_images or None)
    print(f"{len(data)} training images", file=sys.stderr)
    net = Detector(len(CLASSES))
    if args.init:
        load_onnx_weights(net, args.init, args.imgsz)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = len(data) // args.batch
    total = steps_per_epoch * args.epochs
    # EMA horizon about a tenth of the run: long enough to smooth, short enough to forget the
    # untrained start of a short CPU run.
    ema = EMA(net, decay=min(max(1 - 10 / total, 0.99), 0.998))
    warmup = min(300, total // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup)
                                                            / max(total - warmup, 1))))

    step = 0
    start = time.monotonic()
    bar = tqdm(total=total, desc="train", mininterval=10)
    for epoch in range(args.epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        net.train()
        if args.init:
            freeze_bn(net)
        for k in range(steps_per_epoch):
            batch = [augment(*data[j], args.imgsz, rng) for j in
                     order[k * args.batch:(k + 1) * args.batch]]
            x = torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2)
            x = x.float() / 255.0
            targets = [torch.from_numpy(b[1]) for b in batch]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss, parts = loss_fn(net(x), targets, len(CLASSES))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            ema.update(net)
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{float(loss):.3f}", cls=f"{parts['cls']:.3f}",
                            box=f"{parts['box']:.3f}")
    bar.close()
    wall = time.monotonic() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "names": str(dict(enumerate(CLASSES))),  # Ultralytics' format: "{0: 'firearm', ...}"
        "stride": str(max(STRIDES)),
        "imgsz": str([args.imgsz, args.imgsz]),
        "task": "detect",
        "version": args.version,
        "author": "parcel-screening models/train.py",
    }
    export(ema.model, args.out, args.imgsz, meta)
    (args.out.with_suffix(".train.json")).write_text(json.dumps(
        {"train_wall_s": round(wall, 1), "epochs": args.epochs, "images": len(data),
         "batch": args.batch, "imgsz": args.imgsz, "seed": args.seed, "lr": args.lr,
         "threads": args.threads, "styles": args.styles or "A,B,C", "version": args.version,
         "images_total": n_total, "init": str(args.init.name) if args.init else None},
        indent=2))
    print(f"exported {args.out} after {wall / 60:.1f} min", file=sys.stderr)
    return args.out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--epochs", type=int, default=12, help="stage 1: from scratch")
    ap.add_argument("--limit-images", type=int, default=3000, help="stage 1 uses the first N")
    ap.add_argument("--finetune-epochs", default="6,6,6",
                    help="later stages, comma-separated: each continues from the previous "
                         "export on all images with BN frozen (empty: none)")
    ap.add_argument("--finetune-lr", default="1e-3,1e-3,1e-3")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--styles", default="", help="train only on these vendor styles (A,B,...)")
    ap.add_argument("--init", type=Path, default=None, help="start from one of our ONNX exports")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--no-evaluate", action="store_true")
    ap.add_argument("--xvendor-epochs", type=int, default=5,
                    help="reduced cross-vendor run on styles A,B (0: skip)")
    args = ap.parse_args(argv)
    if not (args.data / "meta" / "test.jsonl").exists():
        subprocess.run([sys.executable, "-m", "models.synth", "--out", str(args.data)],
                       check=True)
    if args.no_evaluate:  # a single stage, as given (used for experiments)
        train(args)
        return
    stage1 = argparse.Namespace(**{**vars(args), "out": RUNS / "stage1.onnx"})
    train(stage1)
    cmd = [sys.executable, "-m", "models.evaluate", "--model", str(args.out), "--data",
           str(args.data)]
    if args.xvendor_epochs > 0:
        xv = argparse.Namespace(**{**vars(args), "styles": "A,B", "epochs": args.xvendor_epochs,
                                   "out": RUNS / "xvendor.onnx", "version": "xvendor"})
        train(xv)
        cmd += ["--xvendor-model", str(xv.out)]
    epochs = [int(e) for e in args.finetune_epochs.split(",") if e.strip()]
    lrs = [float(x) for x in args.finetune_lr.split(",") if x.strip()]
    stages = [stage1.out]
    for k, (ep, lr) in enumerate(zip(epochs, lrs, strict=True), start=2):
        nxt = argparse.Namespace(**{**vars(args), "init": stages[-1], "limit_images": 0,
                                    "epochs": ep, "lr": lr, "out": RUNS / f"stage{k}.onnx"})
        train(nxt)
        stages.append(nxt.out)
    shutil.copy(stages[-1], args.out)
    merge_stages(stages, args.out)
    subprocess.run(cmd, check=True)


def merge_stages(stages: list[Path], final: Path) -> None:
    """Record every stage in the final model's training record (wall time is their sum)."""
    records = [json.loads(s.with_suffix(".train.json").read_text()) for s in stages]
    merged = {**records[-1], "stages": records,
              "train_wall_s": round(sum(r["train_wall_s"] for r in records), 1),
              "epochs": " + ".join(str(r["epochs"]) for r in records),
              "images": " then ".join(str(r["images"]) for r in records),
              "lr": " then ".join(str(r["lr"]) for r in records)}
    final.with_suffix(".train.json").write_text(json.dumps(merged, indent=2))


if __name__ == "__main__":
    main()

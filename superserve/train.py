"""Train the SuperNet with the sandwich rule and in-place distillation (Yu et al., BigNAS /
Universally Slimmable Networks): every step trains the largest SubNet on the labels, and the
smallest plus `num_random` random SubNets on the largest's soft predictions.

Deterministic for a seed on a given machine; resumable at epoch boundaries; the checkpoint is
read back with torch.load(weights_only=True) (no pickle of arbitrary objects).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .bundle_layout import DATA, WEIGHTS, DataInfo
from .datasets import (DEFAULT_FMNIST, Split, holdout_size, is_idx_dir, load_fashion_mnist, load_image_folder,
                       normalize, train_val_split)
from .profiling.accuracy import accuracy, calibration_batches
from .supernet import SuperNetSpec, SuperResNet, calibrate, fashion_mnist_spec, save_weights
from .supernet.vit import FAMILY_VIT, SuperTransformer, TransformerSpec, fashion_mnist_vit_spec
from .supernet.space_file import load_space, space_spec


@dataclass
class TrainConfig:
    data: str = str(DEFAULT_FMNIST)
    out: str = "runs/train"
    epochs: int = 14  # the embedded default's
    batch_size: int = 128
    lr: float = 0.2
    weight_decay: float = 5e-5
    num_random: int = 2
    label_smoothing: float = 0.1
    seed: int = 0
    threads: int = 0  # 0: torch's default
    val_size: int = 5000
    limit: int = 0  # train on the first N training images only (smoke tests)
    precision: str = "auto"  # "bf16": bfloat16 autocast (fp32 master weights); "fp32"; "auto": bf16 if native
    device: str = "cpu"  # "cpu" or "cuda:N": where the model, its SubnetNorm table and the batches live
    space: str = ""  # a SuperNet space file (superserve/supernet/space_file.py); "": Fashion-MNIST's space
    family: str = "resnet"  # "resnet" (superserve's conv SuperNet) or "vit" (supernet/vit: transformer)
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw" (what transformers want)
    reschedule: bool = False  # resuming may change `epochs` (the cosine is recomputed over the new total)
    init_from: str = ""  # start from these trained SuperNet weights (same sizes; the space may grow)


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """bf16 autocast only where oneDNN runs bfloat16 natively (AVX512-BF16 / AMX); emulated
    bf16 would be slower than fp32. On cuda: where the GPU supports bf16."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if precision == "auto" and device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if precision == "auto":
        native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return "bf16" if native else "fp32"
    return precision


def augment(x_u8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random H x W crop of the 2-pixel-padded image and random horizontal flip, per sample
    (N x H x W, or N x C x H x W images)."""
    b = x_u8.shape[0]
    h, w = x_u8.shape[-2:]
    padded = F.pad(x_u8, (2, 2, 2, 2))
    oy = torch.randint(0, 5, (b,), generator=gen)
    ox = torch.randint(0, 5, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]
    flip = torch.rand(b, generator=gen) < 0.5
    cols = torch.where(flip[:, None, None], w + 3 - cols, cols)
    if x_u8.ndim == 3:
        return padded[torch.arange(b)[:, None, None], rows, cols]
    c = x_u8.shape[1]
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None], cols[:, None]]


def _param_groups(model: SuperResNet, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 else decay).append(p)  # no decay on norm affine and biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def quick_eval(model: SuperResNet, spec: SuperNetSpec, train: Split, val: Split) -> dict[str, float]:
    """Validation accuracy of the largest and smallest SubNets (calibrated on training data)."""
    configs = [spec.largest(), spec.smallest()]
    batches = calibration_batches(train, 1000)
    device = next(model.parameters()).device
    calibrate(model, configs, lambda: (b.to(device) for b in batches()))
    out = {"val_largest": accuracy(model, configs[0], val), "val_smallest": accuracy(model, configs[1], val)}
    model.train()
    return out


def load_training_data(cfg: TrainConfig, spec: SuperNetSpec | None = None
                       ) -> tuple[Split, Split, SuperNetSpec, DataInfo]:
    """The training and validation splits (the first ``cfg.limit`` images of each, if set),
    the SuperNet spec and the input description the bundle will carry. ``cfg.data``: a
    Fashion-MNIST IDX directory, or an image folder (datasets.load_image_folder) whose images
    are resized to the space's input size, with its class count and channels."""
    if cfg.family not in ("resnet", FAMILY_VIT):
        raise ValueError(f"family must be resnet or {FAMILY_VIT}, got {cfg.family!r}")
    vit = cfg.family == FAMILY_VIT
    if vit and not is_idx_dir(cfg.data):
        raise ValueError("the vit family trains on Fashion-MNIST IDX files only (no image folder)")
    if is_idx_dir(cfg.data) and (vit or not cfg.space):
        full_train, _ = load_fashion_mnist(cfg.data)
        spec = spec or (fashion_mnist_vit_spec(cfg.space) if vit else fashion_mnist_spec())
        info = DataInfo.fashion_mnist()
    else:
        space = load_space(cfg.space) if cfg.space else {"input_size": 28}
        if spec is not None:
            space = {"input_size": spec.input_size, "in_channels": spec.in_channels}
        if is_idx_dir(cfg.data):
            raise ValueError(f"{cfg.data} holds Fashion-MNIST IDX files; --space is for image folders")
        folder = load_image_folder(cfg.data, space["input_size"], space.get("in_channels"), seed=cfg.seed)
        full_train = folder.train
        spec = spec or space_spec(space, len(folder.classes), folder.channels, cfg.space)
        if (spec.num_classes, spec.in_channels) != (len(folder.classes), folder.channels):
            raise ValueError(f"the spec has {spec.num_classes} classes / {spec.in_channels} channels, "
                             f"{cfg.data} has {len(folder.classes)} / {folder.channels}")
        info = DataInfo((folder.channels, folder.size, folder.size), folder.mean, folder.std, folder.classes)
    train_split, val_split = train_val_split(full_train, holdout_size(len(full_train), cfg.val_size), cfg.seed)
    if cfg.limit:
        train_split, val_split = train_split.take(slice(0, cfg.limit)), val_split.take(slice(0, cfg.limit))
    return train_split, val_split, spec, info


def _parent_meta(path: str) -> dict[str, str]:
    """What the weights file a run started from says about its own training."""
    from .supernet.checkpoint import WEIGHTS_FORMAT, read_safetensors

    _, meta = read_safetensors(path, WEIGHTS_FORMAT)
    return {"init_from": json.dumps({"path": path, "spec": meta.get("spec"), "history": meta.get("history"),
                                     "train_config": meta.get("train_config")})}


def _init_from(cfg: TrainConfig, model: torch.nn.Module) -> dict[str, str]:
    """Load trained weights of the same sizes into ``model`` (a later stage of progressive
    shrinking: the space may have grown smaller SubNets; the tensors are the same)."""
    from .supernet.checkpoint import load_supernet

    parent = load_supernet(cfg.init_from)
    if type(parent) is not type(model):
        raise ValueError(f"{cfg.init_from} holds a {type(parent).__name__}, this run trains a {type(model).__name__}")
    norm = (".stats", ".offsets")  # SubnetNorm tables: recalibrated per SubNet, not carried over
    state = {k: v for k, v in parent.state_dict().items() if not k.endswith(norm)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{cfg.init_from}: its tensors do not fit this SuperNet's sizes ({exc})") from None
    missing = [k for k in missing if not k.endswith(norm)]
    if missing or unexpected:
        raise ValueError(f"{cfg.init_from}: its tensors do not fit this SuperNet's sizes "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    print(f"starting from {cfg.init_from}")
    return _parent_meta(cfg.init_from)


def _resume(state_path: Path, cfg: TrainConfig, model: SuperResNet,
            opt: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Load the last finished epoch's state if there is one: (epochs done, history)."""
    if not state_path.exists():
        return 0, []
    state = torch.load(state_path, weights_only=True, map_location=cfg.device)
    # Where it ran (device) and where it is written (out) may change between runs.
    # Settings added since the state was written count as their defaults.
    # --reschedule: the run may end at another epoch count (the cosine continues over the new
    # total from the step reached; the history records the change).
    free = ("out", "device", "reschedule") + (("epochs",) if cfg.reschedule else ())
    same = {k: v for k, v in {**asdict(TrainConfig()), **state["config"]}.items() if k not in free}
    if same != {k: v for k, v in asdict(cfg).items() if k not in free}:
        raise SystemExit(f"{state_path} was written with other settings; use another --out or delete it")
    model.load_state_dict(state["model"], strict=False)
    opt.load_state_dict(state["optimizer"])
    print(f"resuming from epoch {state['epoch']} ({state_path})")
    if state["config"].get("epochs", cfg.epochs) != cfg.epochs:
        print(f"rescheduled: {state['config'].get('epochs')} -> {cfg.epochs} epochs")
        for h in state["history"]:
            h.setdefault("scheduled_epochs", state["config"].get("epochs"))
    return state["epoch"], state["history"]


def _save_state(state_path: Path, cfg: TrainConfig, model: SuperResNet, opt: torch.optim.Optimizer, epoch: int,
                history: list[dict]) -> None:
    """The state after ``epoch`` finished epochs (the norm statistics are recalibrated, not kept)."""
    weights_only = {k: v for k, v in model.state_dict().items() if not k.endswith((".stats", ".offsets"))}
    torch.save({"model": weights_only, "optimizer": opt.state_dict(), "epoch": epoch,
                "history": history, "config": asdict(cfg)}, state_path)


def _sandwich_step(model: SuperResNet, spec: SuperNetSpec, cfg: TrainConfig, opt: torch.optim.Optimizer,
                   x: torch.Tensor, y: torch.Tensor, rng: random.Random,
                   bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step: the largest SubNet on the labels, the smallest and ``num_random``
    random SubNets on its soft predictions. Returns the largest's (logits, loss)."""
    opt.zero_grad(set_to_none=True)
    model.actuate(spec.largest())
    with torch.autocast(_autocast_type(cfg), dtype=torch.bfloat16, enabled=bf16):
        logits = model(x).float()
    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    loss.backward()
    soft = F.softmax(logits.detach(), dim=1)
    for sub in [spec.smallest()] + [spec.sample(rng) for _ in range(cfg.num_random)]:
        model.actuate(sub)
        with torch.autocast(_autocast_type(cfg), dtype=torch.bfloat16, enabled=bf16):
            student = model(x).float()
        distill = torch.sum(-soft * F.log_softmax(student, dim=1), dim=1).mean()
        distill.backward()
    opt.step()
    return logits, loss


def _autocast_type(cfg: TrainConfig) -> str:
    return "cuda" if cfg.device.startswith("cuda") else "cpu"


def _progress(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not show)


@dataclass
class _Schedule:
    steps_per_epoch: int
    total: int
    warmup: int


def _train_epoch(model: SuperResNet, spec: SuperNetSpec, cfg: TrainConfig, opt: torch.optim.Optimizer,
                 data: Split, epoch: int, sched: _Schedule, bf16: bool,
                 report: Callable[[int, str], object]) -> dict[str, float]:
    """One epoch over a seeded permutation of ``data``; ``report(step, stats)`` now and then.
    Returns the epoch's mean loss and training accuracy of the largest SubNet."""
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    perm = torch.randperm(len(data), generator=gen)
    loss_sum, correct, seen = 0.0, 0, 0
    for i in range(sched.steps_per_epoch):
        step = epoch * sched.steps_per_epoch + i
        for group in opt.param_groups:
            group["lr"] = lr_at(step, sched.total, sched.warmup, cfg.lr)
        idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        x = normalize(augment(data.images[idx], gen), data.mean, data.std).contiguous(
            memory_format=torch.channels_last)
        y = data.labels[idx]
        if cfg.device != "cpu":
            x, y = x.to(cfg.device, non_blocking=True), y.to(cfg.device, non_blocking=True)
        logits, loss = _sandwich_step(model, spec, cfg, opt, x, y, random.Random(cfg.seed * 1_000_003 + step), bf16)
        loss_sum += float(loss.detach())
        correct += int((logits.argmax(1) == y).sum())
        seen += y.numel()
        if i % 20 == 0 or i == sched.steps_per_epoch - 1:
            report(step + 1, f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / (i + 1):.3f} "
                   f"train-acc(largest) {correct / seen:.3f}")
    return {"loss": loss_sum / sched.steps_per_epoch, "train_acc_largest": correct / seen}


def train(cfg: TrainConfig, spec: SuperNetSpec | None = None, show_progress: bool = True,
          stop_after_epoch: int | None = None) -> Path | None:
    """Train and write <out>/weights.safetensors; returns its path. stop_after_epoch ends the
    run early, as an interruption would (returns None; run again to resume)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_split, val_split, spec, info = load_training_data(cfg, spec)
    if len(train_split) < cfg.batch_size:
        raise ValueError(f"{len(train_split)} training images, fewer than one batch of {cfg.batch_size}; "
                         "use a smaller --batch-size")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    # channels_last + bf16 autocast (where native): faster steps; parameters stay float32.
    net = SuperTransformer(spec) if isinstance(spec, TransformerSpec) else SuperResNet(spec)
    model = net.train().to(memory_format=torch.channels_last)
    if cfg.device != "cpu":
        model = model.to(cfg.device)  # parameters and the SubnetNorm buffers
    bf16 = resolve_precision(cfg.precision, cfg.device) == "bf16"
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=0.9, nesterov=True)
    else:
        raise ValueError(f"optimizer must be sgd or adamw, got {cfg.optimizer!r}")
    steps_per_epoch = len(train_split) // cfg.batch_size
    sched = _Schedule(steps_per_epoch, cfg.epochs * steps_per_epoch, steps_per_epoch // 2)
    state_path = out / "train_state.pt"
    parent = _init_from(cfg, model) if cfg.init_from and not state_path.exists() else None
    start_epoch, history = _resume(state_path, cfg, model, opt)
    if parent is None and cfg.init_from:
        parent = _parent_meta(cfg.init_from)

    with _progress(show_progress) as progress:
        task = progress.add_task("train", total=sched.total, completed=start_epoch * steps_per_epoch, stats="")
        for epoch in range(start_epoch, cfg.epochs):
            stats = _train_epoch(model, spec, cfg, opt, train_split, epoch, sched, bf16,
                                 lambda done, text: progress.update(task, completed=done, stats=text))
            ev = quick_eval(model, spec, train_split, val_split)
            history.append({"epoch": epoch + 1, "precision": "bf16" if bf16 else "fp32", **stats, **ev})
            progress.console.print(f"epoch {epoch + 1}: " + " ".join(
                f"{k}={v:.4f}" for k, v in history[-1].items() if k not in ("epoch", "precision")))
            _save_state(state_path, cfg, model, opt, epoch + 1, history)
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
                return None

    weights = out / WEIGHTS
    meta = {"history": history, "train_config": asdict(cfg), **(parent or {}), "data": json.dumps({**info.to_dict(), "source": cfg.data, "split_seed": cfg.seed})}
    save_weights(model.cpu(), weights, meta)
    info.save(out / DATA)
    return weights

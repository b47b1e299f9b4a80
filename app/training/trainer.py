"""Train a model on crowd soft labels: one loop, full tensors on the device, no DataLoader.

The data is small and tabular, so it is moved to the device once and minibatches are gathered
with a shuffled index; a DataLoader's per-sample Python work would dominate the run time.

Reproducibility: the same config on the same data gives bit-identical metrics on CPU (same
torch build and thread count). Inside `train` torch's global RNG is seeded from cfg.seed (and
restored afterwards), deterministic algorithms are switched on (CPU only; restored afterwards),
and shuffles use their own seeded generator. CUDA runs are seeded too but not bit-reproducible.
These switches are process-global: run one training at a time per process (the worker does).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from app.training.config import TrainingConfig
from app.training.data import TEST, TRAIN, VALIDATION, TrainingData, split_items
from app.training.encoders import build_trunk
from app.training.errors import JobError
from app.training.evaluate import evaluate, predict_logits
from app.training.heads import Head, probs_of
from app.training.losses import (
    distillation_term,
    lwr_beta,
    lwr_term,
    with_distillation,
    with_lwr,
)
from app.training.metrics import reliability_bins
from app.training.models import build_model, standardizer
from app.training.task_metrics import eval_set

CHECKPOINT_FORMAT = 1


class DeviceUnavailableError(JobError):
    """cfg.device asks for CUDA on a machine without it (a job error, not a config error)."""


@dataclass
class TrainResult:
    # {"splits", "validation", "test", "test_gold", "calibrated", "history", "best_epoch", ...}
    metrics: dict[str, Any]
    model: nn.Module  # in eval mode, on the training device; the best model if early stopping
    checkpoint: bytes  # torch.save of the checkpoint dict (see `_checkpoint`)
    checkpoint_path: Path | None  # where it was also written, if asked
    stopped_early: bool
    cancelled: bool
    # per-item predictions by split: "<split>_ids", "<split>_probs", "<split>_counts",
    # "<split>_gold" (and "_probs_calibrated"); "unlabeled_*" with cfg.predict_unlabeled
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    # train_on_content: the fitted encoder (app/training/encoders), to encode new content
    encoder: Any = None


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda if available else cpu; "cuda" without CUDA raises DeviceUnavailableError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError('device "cuda" was requested but CUDA is not available here')
    return torch.device(name)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and numpy and, on CPU, require deterministic kernels; restore all on exit."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    det, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(det, warn_only=warn_only)
            np.random.set_state(np_state)


def train(
    cfg: TrainingConfig,
    data: TrainingData,
    *,
    teacher: nn.Module | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: Path | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `cfg` on `data`; `teacher` is the model of cfg.distill.teacher_job (required then).
    `checkpoint_extra`: more entries for the checkpoint (the fitted encoder of a content job).

    on_epoch(row) is called after every epoch with {"epoch" (1-based), "epochs", "train_loss"
    (the mean optimized objective, distillation/LWR terms included), "val_loss" (the chosen
    loss on the validation split; None if it is empty), <metrics.METRIC_KEYS> on validation}.
    should_stop() is polled once per epoch, after on_epoch; True ends the run (cancelled=True)
    with the model as it is, and the checkpoint is still produced. Raises
    DeviceUnavailableError, or ValueError when the training split is empty or the teacher is
    missing or does not fit the data.
    """
    if cfg.distill is not None and teacher is None:
        raise JobError("cfg.distill is set: pass the teacher job's model as `teacher`")
    device = resolve_device(cfg.device)
    with _seeded(cfg.seed, device):
        result = _train(cfg, data, device, teacher, on_epoch, should_stop, checkpoint_extra)
    if checkpoint_path is not None:
        _write_atomic(Path(checkpoint_path), result.checkpoint)
        result.checkpoint_path = Path(checkpoint_path)
    return result


def _train(
    cfg: TrainingConfig,
    data: TrainingData,
    device: torch.device,
    teacher: nn.Module | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    should_stop: Callable[[], bool] | None,
    checkpoint_extra: dict[str, Any] | None,
) -> TrainResult:
    val_frac, test_frac = cfg.fractions
    split = split_items(data.item_ids, cfg.effective_split_seed, val_frac, test_frac)
    tr, va = split == TRAIN, split == VALIDATION
    n = int(tr.sum())
    if n == 0:
        raise JobError(f"no training items ({len(data.item_ids)} items, all held out)")

    def to_dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

    # Everything lives on the device for the whole run. A hard loss becomes its soft form on
    # hard targets, so one loss call serves both (see heads.Head.targets).
    head = Head(data.task_type, cfg.loss)
    x, x_va = to_dev(data.features[tr]), to_dev(data.features[va])
    y, y_va = head.targets(to_dev(data.targets[tr])), head.targets(to_dev(data.targets[va]))
    val_labels = _eval_set(data, va)  # once, not every epoch

    model = build_model(cfg.model, data.n_features, data.n_classes, build_trunk(cfg.encoder))
    standardizer(model).fit(data.features[tr])  # training split only: no held-out leakage
    model.to(device)
    opt = _optimizer(cfg, model)
    shuffle = torch.Generator().manual_seed(cfg.seed)  # CPU: same shuffles on every device

    teacher_logits = None
    if cfg.distill is not None and teacher is not None:
        teacher_logits = _teacher_logits(teacher, data.features[tr], data.n_classes).to(device)
    kd_t, kd_alpha = (cfg.distill.temperature, cfg.distill.alpha) if cfg.distill else (1.0, 0.0)
    lwr_k, tau = (cfg.lwr.k, cfg.lwr.tau) if cfg.lwr else (0, 1.0)
    stored: torch.Tensor | None = None  # LWR: softmax(z / tau) from the last record epoch

    history: list[dict[str, Any]] = []
    best_loss, best_epoch, best_state, since_best = math.inf, 0, None, 0
    stopped_early = cancelled = False
    for epoch in range(cfg.epochs):  # 0-based here; reported 1-based
        model.train()
        beta = lwr_beta(epoch, lwr_k, cfg.epochs) if lwr_k else 0.0  # 0 until `stored` exists
        record = lwr_k > 0 and (epoch + 1) % lwr_k == 0  # last epoch of each k-epoch period
        fresh = torch.empty_like(y) if record else None
        total = torch.zeros((), device=device)  # summed on the device: no sync per step
        for idx in torch.randperm(n, generator=shuffle).to(device).split(cfg.batch_size):
            logits = model(x[idx])
            loss = head.loss(logits, y[idx])
            if stored is not None and beta > 0:
                loss = with_lwr(loss, lwr_term(logits, stored[idx], tau), beta)
            if teacher_logits is not None:
                kd = distillation_term(logits, teacher_logits[idx], kd_t)
                loss = with_distillation(loss, kd, kd_alpha)
            if fresh is not None:
                fresh[idx] = torch.softmax(logits.detach() / tau, dim=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        if fresh is not None:
            stored = fresh  # used from the next epoch on, until the next record epoch

        # Per-epoch figures are on the validation split only: the test split is never looked
        # at before the model is final.
        metrics = evaluate(model, x_va, val_labels, n_train=n, head=head, loss_targets=y_va)
        val_loss = metrics.pop("loss")
        row = {
            "epoch": epoch + 1,
            "epochs": cfg.epochs,
            "train_loss": float(total) / n,
            "val_loss": val_loss,
            **metrics,
        }
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)

        # Early stopping monitors the validation loss (the chosen loss, no distillation/LWR
        # terms); with an empty validation split there is nothing to monitor.
        if val_loss is not None and val_loss < best_loss:
            best_loss, best_epoch, since_best = val_loss, epoch + 1, 0
            if cfg.early_stopping is not None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif val_loss is not None:
            since_best += 1
            if cfg.early_stopping is not None and since_best >= cfg.early_stopping:
                stopped_early = True
        if stopped_early or (should_stop is not None and should_stop()):
            cancelled = not stopped_early
            break

    if best_state is not None:
        model.load_state_dict(best_state)  # early stopping keeps the best model, not the last
    model.eval()
    final, predictions = _final_metrics(cfg, data, model, device, split, n, head)
    result_metrics = {
        **final,
        "history": history,
        "epochs_run": len(history),
        "best_epoch": best_epoch or None,
        "best_val_loss": best_loss if best_epoch else None,
        "device": str(device),
    }
    ckpt = _checkpoint(
        cfg, data, model, opt, result_metrics, stopped_early, cancelled, checkpoint_extra or {}
    )
    return TrainResult(
        metrics=result_metrics,
        model=model,
        checkpoint=ckpt,
        checkpoint_path=None,
        stopped_early=stopped_early,
        cancelled=cancelled,
        predictions=predictions,
    )


def _eval_set(data: TrainingData, rows: np.ndarray) -> Any:
    voters = None if data.n_voters is None else data.n_voters[rows]
    return eval_set(data.task_type, data.counts[rows], data.gold[rows], voters, data.scale)


SPLIT_NOTE = (
    "train: fitted on; validation: early stopping and temperature scaling; test: held-out voted "
    "items, reported only; test_gold: items with gold and no votes, reported only."
)


def _final_metrics(
    cfg: TrainingConfig,
    data: TrainingData,
    model: nn.Module,
    device: torch.device,
    split: np.ndarray,
    n_train: int,
    head: Head,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Figures per split for the final model (and its temperature-scaled copy), and the
    per-item predictions the sweep report and the model-in-the-loop methods use."""
    multi = data.task_type == "multi_label"
    sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray | None]] = {}
    for name, code in (("validation", VALIDATION), ("test", TEST)):
        rows = np.flatnonzero(split == code)
        sets[name] = (
            data.features[rows],
            data.counts[rows],
            data.gold[rows],
            [data.item_ids[i] for i in rows],
            None if data.n_voters is None else data.n_voters[rows],
        )
    # Multi-label items carry no gold (their truth is a set): no test_gold split there.
    if cfg.gold_test and len(data.extra_ids) and not multi:
        rows = np.flatnonzero(data.extra_gold >= 0)
        sets["test_gold"] = (
            data.extra_features[rows],
            np.zeros((len(rows), data.n_classes), np.int64),
            data.extra_gold[rows],
            [data.extra_ids[i] for i in rows],
            None,
        )
    logits = {
        name: _logits(model, feats, device, data.n_classes) for name, (feats, *_) in sets.items()
    }
    out: dict[str, Any] = {
        "splits": {
            "train": n_train,
            **{name: len(s[3]) for name, s in sets.items()},
        },
        "split_note": SPLIT_NOTE,
        "test_gold": None,
    }
    preds: dict[str, np.ndarray] = {}
    if data.scale is not None:  # an ordinal project's level values: the sweep's metrics
        preds["scale"] = data.scale
    for name, (_, counts, gold, ids, voters) in sets.items():
        probs = _probs(logits[name], data.task_type)
        labels = eval_set(data.task_type, counts, gold, voters, data.scale)
        out[name] = labels.metrics(probs, n_train=n_train)
        if name == "test" and not multi:  # the dashboard's reliability diagram
            has_gold = gold >= 0
            out["reliability"] = reliability_bins(probs[has_gold], gold[has_gold])
        preds |= {
            f"{name}_ids": np.asarray(ids, dtype=str),
            f"{name}_probs": probs,
            f"{name}_counts": counts,
            f"{name}_gold": gold,
        }
        if voters is not None:
            preds[f"{name}_voters"] = voters
    out["calibrated"] = None
    if cfg.temperature_scaling and len(logits["validation"]):  # softmax heads only (config)
        va = split == VALIDATION
        targets = head.targets(torch.from_numpy(data.targets[va])).numpy()
        t = fit_temperature(logits["validation"], targets)
        cal: dict[str, Any] = {"temperature": t, "fitted_on": "validation"}
        for name, (_, counts, gold, _, voters) in sets.items():
            probs = _probs(logits[name] / t, data.task_type)
            labels = eval_set(data.task_type, counts, gold, voters, data.scale)
            cal[name] = labels.metrics(probs, n_train=n_train)
            preds[f"{name}_probs_calibrated"] = probs
        out["calibrated"] = cal
    if cfg.predict_unlabeled and len(data.extra_ids):
        preds["unlabeled_ids"] = np.asarray(data.extra_ids, dtype=str)
        preds["unlabeled_probs"] = _probs(
            _logits(model, data.extra_features, device, data.n_classes), data.task_type
        )
        if data.extra_db_ids is not None:
            preds["unlabeled_db_ids"] = data.extra_db_ids
    return out, preds


def _logits(model: nn.Module, feats: np.ndarray, device: torch.device, k: int) -> np.ndarray:
    if len(feats) == 0:
        return np.zeros((0, k))
    x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).to(device)
    return predict_logits(model, x).double().cpu().numpy()  # type: ignore[no-any-return]


def _probs(z: np.ndarray, task_type: str) -> np.ndarray:
    # torch's softmax or sigmoid, as in evaluate.evaluate: the final figures equal the best
    # epoch's exactly
    return probs_of(torch.from_numpy(np.asarray(z, np.float64)), task_type).numpy()  # type: ignore[no-any-return]


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature scaling (Guo, Pleiss, Sun & Weinberger, ICML 2017): the T > 0 minimizing the
    mean cross-entropy of softmax(z / T) against `targets` (rows of probabilities).

    With b = 1/T the objective mean(logsumexp(b z) - b <t, z>) is convex in b, hence unimodal
    in log b: a golden-section search over log b in [log 1e-3, log 1e3] finds it.
    """
    z = np.asarray(logits, np.float64)
    tz = (np.asarray(targets, np.float64) * z).sum(axis=1)

    def f(log_b: float) -> float:
        bz = np.exp(log_b) * z
        m = bz.max(axis=1)
        lse = m + np.log(np.exp(bz - m[:, None]).sum(axis=1))
        return float((lse - np.exp(log_b) * tz).mean())

    lo, hi = math.log(1e-3), math.log(1e3)
    g = (math.sqrt(5) - 1) / 2
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(80):
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - g * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + g * (hi - lo)
            fd = f(d)
    return float(1.0 / math.exp((lo + hi) / 2))


def _optimizer(cfg: TrainingConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
    )


def _teacher_logits(teacher: nn.Module, features: np.ndarray, n_classes: int) -> torch.Tensor:
    """The teacher's logits on the training items, once (it is frozen). It keeps its own device
    and input standardization; only its train/eval mode is touched (and restored)."""
    param = next(iter(teacher.parameters()), None)
    teacher_device = param.device if param is not None else torch.device("cpu")
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(teacher_device)
    try:
        logits = predict_logits(teacher, x)
    except RuntimeError as exc:
        raise JobError(f"teacher model does not fit these features: {exc}") from None
    if logits.shape != (len(features), n_classes):
        raise JobError(f"teacher gives {tuple(logits.shape[1:])} outputs, need {n_classes}")
    return logits.float()


def _checkpoint(
    cfg: TrainingConfig,
    data: TrainingData,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    metrics: dict[str, Any],
    stopped_early: bool,
    cancelled: bool,
    extra: dict[str, Any],
) -> bytes:
    """torch.save of a dict of tensors and JSON-able values (loadable with weights_only=True).

    optimizer_state is the optimizer at the last epoch run, even when early stopping restored
    an earlier model_state.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": opt.state_dict(),
        "config": cfg.model_dump(mode="json"),
        "n_features": data.n_features,
        "n_classes": data.n_classes,
        "task_type": data.task_type,
        "epoch": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "best_val_loss": metrics["best_val_loss"],
        "test": metrics["test"],
        "stopped_early": stopped_early,
        "cancelled": cancelled,
        **extra,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)  # readers never see a half-written checkpoint


def load_checkpoint(
    path_or_bytes: str | Path | bytes | BinaryIO,
) -> tuple[nn.Module, TrainingConfig, dict[str, Any]]:
    """Rebuild (model on CPU in eval mode, its config, the raw checkpoint dict)."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unsupported checkpoint format {ckpt.get('format')!r}")
    ckpt.setdefault("task_type", "single")  # checkpoints from before task types
    cfg = TrainingConfig.model_validate(ckpt["config"], context={"task_type": ckpt["task_type"]})
    trunk = build_trunk(cfg.encoder)
    model = build_model(cfg.model, ckpt["n_features"], ckpt["n_classes"], trunk)
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, cfg, ckpt


def predict_probs(model: nn.Module, features: np.ndarray, task_type: str = "single") -> np.ndarray:
    """(n, K) float64 probabilities for raw (n, F) features, on the model's device: a
    distribution over the classes, or for a multi-label model (`task_type`, as its checkpoint
    records it) each class's probability that it applies."""
    param = next(iter(model.parameters()))
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(param.device)
    logits = predict_logits(model, x)
    return probs_of(logits, task_type).cpu().numpy()  # type: ignore[no-any-return]

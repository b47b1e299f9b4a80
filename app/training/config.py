"""Training-job configuration (pydantic v2): what a client may send in a training job request.

Every model forbids unknown keys, every field has a default (stated in its description), and
cross-field rules raise errors located at the field they are about (e.g. `lwr.k`), so the API
can report them the same way as per-field errors. The defaults give a sensible model on
scikit-learn's digits (1,797 images, 64 features in 0..16, 10 classes): see tests/test_trainer.py.

This module is pure (no database, no web framework, no torch import).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from app.aggregation.params import ParamError
from app.aggregation.registry import METHODS, METHODS_BY_TASK, resolve_method
from app.training.encoders.options import EncoderOptions, FeaturesInput

DEFAULT_LABELS: dict[str, Any] = {"method": "normalized"}

Loss = Literal["soft-ce", "hard-ce", "squared-emd", "soft-bce", "hard-bce"]
# The losses that train each task type (app/training/heads.py says what each reads), the
# type's soft loss first: the default when a request names none.
LOSSES_BY_TASK: dict[str, tuple[str, ...]] = {
    "single": ("soft-ce", "hard-ce"),
    "ordinal": ("soft-ce", "hard-ce", "squared-emd"),
    "multi_label": ("soft-bce", "hard-bce"),
}
TYPE_WORDS = {"single": "single-label", "ordinal": "ordinal", "multi_label": "multi-label"}
# The options that read the model's softmax (a distribution over classes); a multi-label
# model's outputs are K separate sigmoids, which none of them is written for.
SOFTMAX_ONLY = {
    "distill": "distillation matches softmax distributions",
    "lwr": "Learning with Retrospection stores softmax distributions",
    "temperature_scaling": "temperature scaling is fitted on a softmax",
    "oos_folds": "out-of-sample predictions feed crowdlab, a single-label method",
}


def task_of(info: ValidationInfo) -> str | None:
    """The project's task type when the validation was given one (TrainingConfig.for_task)."""
    return (info.context or {}).get("task_type")


def _of_some_type(method: str) -> bool:
    return any(method in table for table in METHODS_BY_TASK.values())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field_error(title: str, loc: tuple[str | int, ...], msg: str, value: Any) -> ValidationError:
    """A ValidationError at `loc`. Raised inside a validator, pydantic keeps `loc` and prefixes
    the validator's own location, so a client sees e.g. ("labels", "alpha") or ("lwr", "k")."""
    err = PydanticCustomError("value_error", "{reason}", {"reason": msg})
    return ValidationError.from_exception_data(
        title, [InitErrorDetails(type=err, loc=loc, input=value)]
    )


class LinearModel(_Strict):
    kind: Literal["linear"] = Field("linear", description='"linear": multinomial logistic model.')


class MLPModel(_Strict):
    kind: Literal["mlp"] = Field("mlp", description='"mlp": fully connected, ReLU activations.')
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [256],
        min_length=1,
        max_length=16,
        description="Hidden layer widths, input side first. Default [256].",
    )
    dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="Dropout after each hidden ReLU (0 = off). Default 0.2."
    )


ModelConfig = Annotated[LinearModel | MLPModel, Field(discriminator="kind")]


class DistillConfig(_Strict):
    """Knowledge distillation from an earlier job's model (Hinton, Vinyals & Dean 2015).

    loss = alpha * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T))
           + (1 - alpha) * <the chosen loss>
    """

    teacher_job: int = Field(
        ..., gt=0, description="Id of the finished training job to learn from. Required."
    )
    temperature: float = Field(
        2.0, gt=0.0, le=1000.0, description="Softening temperature T (> 0). Default 2."
    )
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="Weight of the distillation term, 0..1. Default 0.5."
    )


class LWRConfig(_Strict):
    """Learning with Retrospection (Deng & Zhang, AAAI 2021).

    With 0-based epoch e, t = floor(e / k) * k, beta = 0.9 * t / epochs, alpha = 1 - beta:
    epochs 0..k-1 use the chosen loss alone (beta = 0). During the last epoch of every k-epoch
    period the model's softmax(z / tau) for each training item is recorded; from epoch k on the
    loss is alpha * loss + beta * tau^2 * KL(stored || softmax(z / tau)) with the latest record.
    beta grows stepwise and stays below 0.9. (The authors' code divides by a hard-coded 240
    training epochs; we divide by `epochs`.)
    """

    k: int = Field(
        5, ge=1, description="Epochs between refreshes of the stored soft labels. Default 5."
    )
    tau: float = Field(
        5.0, gt=0.0, le=1000.0, description="Temperature of the stored soft labels. Default 5."
    )


class TrainingConfig(_Strict):
    """A training job: which soft labels, which loss, which model, how to optimize."""

    labels: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_LABELS),
        validate_default=True,  # so the default, too, is stored with its parameters filled in
        description=(
            'Soft-label method and its parameters, e.g. {"method": "normalized", "alpha": 1}; '
            "validated by app.aggregation.methods.resolve and stored with defaults filled in. "
            'Default {"method": "normalized"} (vote proportions).'
        ),
    )
    loss: Loss = Field(
        "soft-ce",
        description=(
            '"soft-ce": -sum_c p_hum(c) log p_model(c) against the soft labels (Uma et al., '
            'HCOMP 2020); "hard-ce": cross-entropy on the argmax of the soft labels (the '
            'baseline). Ordinal projects also: "squared-emd", sum_k (CDF_model(k) - '
            "CDF_hum(k))^2 (Hou, Yu & Samaras 2016). Multi-label projects (per-class sigmoids): "
            '"soft-bce", binary cross-entropy against each class\'s probability that it '
            'applies, and "hard-bce", the same on those thresholded at 0.5. Default "soft-ce" '
            '("soft-bce" on a multi-label project).'
        ),
    )
    model: ModelConfig = Field(
        default_factory=MLPModel,
        description=(
            'Model: {"kind": "linear"} or {"kind": "mlp", "hidden": [...], "dropout": p}. '
            "Inputs are standardized with the training split's mean and std (kept in the "
            'model). Default {"kind": "mlp", "hidden": [256], "dropout": 0.2}.'
        ),
    )
    encoder: EncoderOptions = Field(
        default_factory=FeaturesInput,
        description=(
            'How items become model inputs. {"name": "features"}: their feature vectors. '
            'Texts: {"name": "tfidf-svd", "dim": 256} (TF-IDF + SVD fitted on the training '
            'split), {"name": "hashing", "n_features": 262144, "dim": 256}, '
            '{"name": "sentence-transformer", "path": "/models/minilm"} or {"name": '
            '"transformers", "path": ..., "pooling": "mean"} (local weights only; '
            'softlabels[text]). Images: {"name": "small-cnn", "size": 32} (trained end to '
            'end, `model` is its head) or {"name": "torchvision", "arch": "resnet18", '
            '"weights_path": ...} (frozen; softlabels[vision]). Frozen embeddings feed `model`, '
            "and are cached per item and encoder. The items' content is what POST /items, a "
            "connector's content field or a file import stored (docs/training.md, Training on "
            'texts and images). Default {"name": "features"}.'
        ),
    )
    optimizer: Literal["adam", "sgd"] = Field(
        "adam", description='"adam" or "sgd" (momentum 0.9). Default "adam".'
    )
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Learning rate (> 0). Default 0.001.")
    weight_decay: float = Field(
        1e-4, ge=0.0, le=1.0, description="L2 weight decay (>= 0). Default 0.0001."
    )
    epochs: int = Field(100, ge=1, le=10000, description="Training epochs, 1..10000. Default 100.")
    batch_size: int = Field(
        64, ge=1, le=1_000_000, description="Minibatch size, 1..1000000. Default 64."
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description=(
            "Seeds initialization, shuffling, dropout and the eval split. Same config on the same "
            "data gives identical results on CPU. Default 0."
        ),
    )
    validation_fraction: float = Field(
        0.15,
        ge=0.0,
        lt=1.0,
        description=(
            "Share of voted items in the validation split, used for early stopping, temperature "
            "scaling and any other selection; never for the reported figures. 0 = no validation "
            "(no early stopping). Default 0.15."
        ),
    )
    test_fraction: float = Field(
        0.15,
        ge=0.0,
        lt=1.0,
        description=(
            "Share of voted items in the test split, on which the reported figures are computed "
            "(nothing is selected on it). Items go to a split by a hash of (item id, split "
            "seed): jobs with the same split seed share their test items. Default 0.15."
        ),
    )
    split_seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description=(
            "Seed of the train / validation / test split; null = `seed`. Sweeps fix it so that "
            "every cell is tested on the same items. Default null."
        ),
    )
    eval_fraction: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description=(
            "Deprecated (jobs before the three-way split): the held-out share, divided equally "
            "between validation and test; overrides validation_fraction and test_fraction. "
            "Default null."
        ),
    )
    gold_test: bool = Field(
        True,
        description=(
            "Also report figures on `test_gold`: items with features and a gold label but no "
            "votes (a classic held-out test set; never trained on). Default true."
        ),
    )
    temperature_scaling: bool = Field(
        False,
        description=(
            "Fit one temperature T on the validation split (Guo et al., ICML 2017) and report "
            "the model with logits / T beside the raw model (metrics.calibrated). Default false."
        ),
    )
    oos_folds: int | None = Field(
        None,
        ge=2,
        le=20,
        description=(
            "K-fold out-of-sample predictions: K extra models, each trained without one fold, "
            "predict that fold, so every voted item gets a prediction from a model that never "
            "saw its labels (used by the crowdlab method, routing and /items/suspect). null = "
            "off. Default null."
        ),
    )
    predict_unlabeled: bool = Field(
        False,
        description=(
            "Score every item with features and no votes with the trained model; exported as "
            "`/soft-labels?method=model:<job id>`, marked as predictions. Default false."
        ),
    )
    early_stopping: int | None = Field(
        20,
        ge=1,
        le=10000,
        description=(
            "Patience in epochs: stop when the validation loss has not improved for this many "
            "epochs "
            "and keep the best model; null = off (keep the last). Default 20."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description=(
            '"auto" (CUDA when available, else CPU), "cpu" or "cuda". Asking for "cuda" where '
            "it is unavailable is not a config error: the job fails when it starts, with a "
            'message saying so. Default "auto".'
        ),
    )
    distill: DistillConfig | None = Field(
        None,
        description=(
            'Distillation: {"teacher_job": id, "temperature": T, "alpha": a}; null = off. '
            "Default null."
        ),
    )
    lwr: LWRConfig | None = Field(
        None,
        description='Learning with Retrospection: {"k": k, "tau": tau}; null = off. Default null.',
    )

    # The labels as the request gave them: a method name can mean another class in the project's
    # type ("auto" of ticks takes other parameters than "auto" of votes), so for_task resolves
    # these, not the single-label defaults filled in while the project was unknown.
    _raw_labels: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw_labels(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        model = handler(data)
        if isinstance(data, dict) and isinstance(data.get("labels"), dict):
            model._raw_labels = dict(data["labels"])
        return model

    def __eq__(self, other: object) -> bool:
        # The fields decide (the request's raw labels are how this config was made, not what
        # it is): a config equals its own JSON round trip.
        if not isinstance(other, TrainingConfig):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    @field_validator("labels", mode="before")
    @classmethod
    def _check_labels(cls, raw: Any, info: ValidationInfo) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise ValueError('must be an object such as {"method": "normalized"}')
        params = dict(raw)
        method = params.pop("method", None)
        if not isinstance(method, str):
            raise _field_error("labels", ("method",), "a method name is required", method)
        task = task_of(info)
        if task is None and method not in METHODS and _of_some_type(method):
            # No project yet (a request body as it arrives): a method only another task type
            # has is resolved when the project's type is known (for_task), not refused here.
            return {"method": method, **params}
        try:
            resolved = resolve_method(method, params, task or "single")
        except ParamError as exc:
            raise _field_error("labels", (exc.field,), exc.reason, raw.get(exc.field)) from None
        return {"method": resolved.name, **resolved.params()}

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> TrainingConfig:
        task = task_of(info)
        if task is not None:
            self._check_task(task)
        val, test = self.fractions
        if self.eval_fraction is None and val + test >= 1.0:
            raise _field_error(
                "TrainingConfig",
                ("test_fraction",),
                f"validation_fraction + test_fraction must be below 1 (got {val + test:g})",
                self.test_fraction,
            )
        if self.lwr is not None and self.lwr.k >= self.epochs:
            raise _field_error(
                "TrainingConfig",
                ("lwr", "k"),
                f"must be less than epochs ({self.epochs}), or LWR never starts",
                self.lwr.k,
            )
        return self

    def _check_task(self, task: str) -> None:
        losses = LOSSES_BY_TASK[task]
        if self.loss not in losses:
            raise _field_error(
                "TrainingConfig",
                ("loss",),
                f"{self.loss!r} does not train a {TYPE_WORDS[task]} project; its losses: "
                + ", ".join(losses),
                self.loss,
            )
        if task == "multi_label":
            for name, why in SOFTMAX_ONLY.items():
                if getattr(self, name) not in (None, False):
                    raise _field_error(
                        "TrainingConfig",
                        (name,),
                        f"not for a multi-label project: {why}, and its model has per-class "
                        "sigmoids",
                        getattr(self, name),
                    )

    def for_task(self, task_type: str) -> TrainingConfig:
        """This config for a project of `task_type`: the label method resolved in that type's
        table, the loss (the type's soft loss when the request named none) and the options
        checked against it. Raises ValidationError located at the field, as on parsing."""
        raw = self.model_dump(mode="json")
        if self._raw_labels is not None:
            raw["labels"] = self._raw_labels
        if "loss" not in self.model_fields_set:
            raw["loss"] = LOSSES_BY_TASK[task_type][0]
        return TrainingConfig.model_validate(raw, context={"task_type": task_type})

    @property
    def fractions(self) -> tuple[float, float]:
        """(validation, test) shares of the voted items."""
        if self.eval_fraction is not None:
            return self.eval_fraction / 2, self.eval_fraction / 2
        return self.validation_fraction, self.test_fraction

    @property
    def effective_split_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def label_method(self) -> str:
        return str(self.labels["method"])

    @property
    def label_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.labels.items() if k != "method"}

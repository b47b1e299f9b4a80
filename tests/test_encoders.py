"""Every encoder path, offline: content (texts, images) -> encoder -> the soft-label trainer.

Nothing is downloaded: the pretrained models are built here and saved to tmp_path (a 2-layer,
32-wide BERT with a WordPiece tokenizer trained on the fly; a resnet18 with random weights),
then loaded through the same path-based code a user's job takes.

Synthetic crowds: each item's true class is known (gold); 5 votes per item, each right with
probability 0.7, else a uniformly random class. Texts: 3 topics, each text 3 topic words among
6 filler words. Images: 32x32 noise with one square of the class's color.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from app.training.config import TrainingConfig
from app.training.content import predict_content, train_on_content
from app.training.data import TEST, split_items
from app.training.encoders import EncoderUnavailableError, build_encoder
from app.training.encoders.base import import_torchvision
from app.training.encoders.options import (
    SentenceTransformerOptions,
    SmallCNNOptions,
    TfidfSvdOptions,
    TorchvisionOptions,
    TransformersOptions,
)
from app.training.errors import JobError
from app.training.trainer import load_checkpoint, predict_probs

TOPICS = [
    "goal match team score coach league player stadium",
    "soup bread spicy bake recipe flavor dinner salad",
    "rain storm sunny cloud forecast wind snow thunder",
]
FILLER = "the a of and to in is it was for on with as at by this that from"
COLORS = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [220, 200, 40]])
# Short runs: learning is checked against chance, not tuned.
QUICK = {"device": "cpu", "early_stopping": None}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny models on a busy 2-core machine (see tests/test_trainer.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def crowd(truth: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    counts = np.zeros((len(truth), k), np.int64)
    for _ in range(5):
        vote = np.where(rng.random(len(truth)) < 0.7, truth, rng.integers(0, k, len(truth)))
        counts[np.arange(len(truth)), vote] += 1
    return counts


@pytest.fixture(scope="module")
def texts() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = 300
    truth = rng.integers(0, 3, n)
    words = [t.split() for t in TOPICS]
    docs = [
        " ".join([*rng.choice(words[c], 3), *rng.choice(FILLER.split(), 6)]) for c in truth.tolist()
    ]
    ids = [f"t{i}" for i in range(n)]
    return {"ids": ids, "texts": docs, "truth": truth, "counts": crowd(truth, 3, rng)}


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n)
    x = rng.integers(0, 80, (n, 32, 32, 3)).astype(np.uint8)
    for i, c in enumerate(truth.tolist()):
        s = int(rng.integers(8, 16))
        y0, x0 = rng.integers(0, 32 - s, 2)
        x[i, y0 : y0 + s, x0 : x0 + s] = np.clip(COLORS[c] + rng.integers(-30, 30, 3), 0, 255)
    return x, truth


def run(encoder: dict[str, Any], data: dict[str, Any], content: Any, **cfg: Any) -> Any:
    config = TrainingConfig(encoder=encoder, **QUICK, **cfg)
    return train_on_content(config, data["ids"], content, data["counts"], data["truth"])


# ---- text, no pretrained weights ----


def test_tfidf_svd_learns_and_fits_on_training_split_only(texts: dict[str, Any]) -> None:
    # A token only test items carry must not enter the vocabulary (fit on train only).
    split = split_items(texts["ids"], 0, 0.15, 0.15)
    docs = [t + " zzleak" if s == TEST else t for t, s in zip(texts["texts"], split, strict=True)]
    progress: list[tuple[int, int]] = []
    res = train_on_content(
        TrainingConfig(encoder={"name": "tfidf-svd", "dim": 16}, epochs=30, **QUICK),
        texts["ids"],
        docs,
        texts["counts"],
        texts["truth"],
        on_encode=lambda done, total: progress.append((done, total)),
    )
    assert res.metrics["test"]["accuracy"] > 0.8  # chance: 1/3
    assert not any("zzleak" in term for term in res.encoder._vectorizer.vocabulary_)
    enc = res.metrics["encoder"]
    assert enc["name"] == "tfidf-svd" and enc["dim"] == 16 and not enc["end_to_end"]
    assert progress[-1] == (300, 300)
    # new texts go through the fitted encoder and the head
    probs = predict_content(res, ["a great goal by the team", "spicy soup for dinner"])
    assert probs.argmax(axis=1).tolist() == [0, 1]


@pytest.mark.parametrize("dim", [16, None])
def test_hashing_learns(texts: dict[str, Any], dim: int | None) -> None:
    res = run({"name": "hashing", "n_features": 1024, "dim": dim}, texts, texts["texts"], epochs=30)
    assert res.metrics["test"]["accuracy"] > 0.6
    assert res.metrics["encoder"]["dim"] == (dim or 1024)


def test_version_names_what_the_output_depends_on(texts: dict[str, Any]) -> None:
    def version(options: TfidfSvdOptions, docs: list[str]) -> str:
        enc = build_encoder(options)
        enc.fit(docs)
        return enc.version

    base = TfidfSvdOptions(name="tfidf-svd", dim=8)
    v = version(base, texts["texts"][:100])
    assert v == version(base, texts["texts"][:100])
    assert v != version(base, texts["texts"][:101])  # fitted on other texts
    assert v != version(TfidfSvdOptions(name="tfidf-svd", dim=9), texts["texts"][:100])


# ---- text, pretrained (built here, loaded by path) ----


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, texts: dict[str, Any]) -> Path:
    """A 2-layer, 32-wide BERT and a WordPiece tokenizer trained on the crowd's texts, saved
    with save_pretrained: what a user's model directory holds."""
    import_torchvision("test")  # transformers imports torchvision (see that function)
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=special)
    tok.train_from_iterator(texts["texts"], trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    path = tmp_path_factory.mktemp("tiny-bert")
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **{f"{k}_token": f"[{k.upper()}]" for k in ("unk", "pad", "cls", "sep", "mask")},
        model_max_length=64,
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_sentence_model(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved them
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    path = tmp_path_factory.mktemp("tiny-st")
    modules = [Transformer(str(tiny_bert)), Pooling(32, "mean")]
    SentenceTransformer(modules=modules, device="cpu").save(str(path))
    return path


def test_transformers_encoder_trains(texts: dict[str, Any], tiny_bert: Path) -> None:
    # Random weights still give topic-dependent mean embeddings: above chance, not more.
    res = run({"name": "transformers", "path": str(tiny_bert)}, texts, texts["texts"], epochs=30)
    assert res.metrics["test"]["accuracy"] > 0.5
    assert res.metrics["encoder"]["dim"] == 32


def test_sentence_transformer_matches_mean_pooling(
    texts: dict[str, Any], tiny_bert: Path, tiny_sentence_model: Path
) -> None:
    st_opts = SentenceTransformerOptions(name="sentence-transformer", path=str(tiny_sentence_model))
    st = build_encoder(st_opts)
    hf = build_encoder(TransformersOptions(name="transformers", path=str(tiny_bert)))
    sample = texts["texts"][:20]
    np.testing.assert_allclose(st.encode(sample), hf.encode(sample), atol=1e-5)
    res = run(st_opts.model_dump(), texts, sample * 15, epochs=2)
    assert res.metrics["encoder"]["name"] == "sentence-transformer"


@pytest.mark.parametrize("name", ["sentence-transformer", "transformers"])
def test_missing_text_model_is_one_line_naming_the_fix(name: str, tmp_path: Path) -> None:
    opts = {"sentence-transformer": SentenceTransformerOptions, "transformers": TransformersOptions}
    for path in (str(tmp_path / "minilm"), "some-org/not-in-cache"):
        with pytest.raises(EncoderUnavailableError) as info:
            build_encoder(opts[name](name=name, path=path))
        msg = str(info.value)
        assert "\n" not in msg and path in msg and "set encoder.path" in msg


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import raises
    with pytest.raises(EncoderUnavailableError, match=r"pip install 'softlabels\[text\]'"):
        build_encoder(SentenceTransformerOptions(name="sentence-transformer", path="/m"))


# ---- images ----


def test_small_cnn_learns_colored_squares(tmp_path: Path) -> None:
    x, truth = images(400)
    rng = np.random.default_rng(1)
    data = {"ids": [f"img{i}" for i in range(400)], "truth": truth, "counts": crowd(truth, 4, rng)}
    res = run({"name": "small-cnn", "widths": [8, 16]}, data, x, epochs=5, lr=3e-3)
    assert res.metrics["test"]["accuracy"] > 0.6  # chance: 1/4
    assert res.metrics["encoder"]["end_to_end"] and res.metrics["encoder"]["dim"] == 3 * 32 * 32
    # the checkpoint rebuilds the CNN from the config alone
    model, _, _ = load_checkpoint(res.checkpoint)
    rows = res.encoder.encode(x[:8])
    np.testing.assert_allclose(predict_probs(model, rows), predict_content(res, x[:8]), atol=1e-5)


def test_images_as_bytes_or_other_sizes_become_the_same_pixels() -> None:
    from PIL import Image

    x, _ = images(3)
    enc = build_encoder(SmallCNNOptions(name="small-cnn"))
    png = []
    for a in x:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        png.append(buf.getvalue())
    np.testing.assert_array_equal(enc.encode(png), enc.encode(x))
    big = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)  # 64x64 -> resized to 32x32
    # bilinear smooths the pixel noise; each image's mean color stays
    assert np.abs(enc.encode(big).mean(axis=1) - enc.encode(x).mean(axis=1)).max() < 1
    gray = x[..., 0]
    assert enc.encode(gray).shape == (3, 3 * 32 * 32)
    with pytest.raises(JobError, match="uint8"):
        enc.encode(x.astype(np.float32))


def test_torchvision_backbone_from_a_local_weights_file(tmp_path: Path) -> None:
    tv = import_torchvision("test")
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pt"
    torch.save(tv.models.resnet18(num_classes=10).state_dict(), path)  # any head size loads
    x, truth = images(60)
    counts = crowd(truth, 4, np.random.default_rng(2))
    data = {"ids": [f"i{i}" for i in range(60)], "truth": truth, "counts": counts}
    enc = {"name": "torchvision", "arch": "resnet18", "weights_path": str(path), "size": 32}
    res = run(enc, data, x, epochs=2)
    assert res.metrics["encoder"]["dim"] == 512 and not res.metrics["encoder"]["end_to_end"]
    # the embedding is the file's weights: same file, same embedding
    again = build_encoder(TorchvisionOptions(**enc))  # type: ignore[arg-type]
    np.testing.assert_allclose(again.encode(x[:4]), res.encoder.encode(x[:4]), atol=1e-5)
    assert again.version == res.encoder.version

    torch.save(tv.models.resnet34().state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(JobError, match="not a resnet18 state_dict"):
        build_encoder(TorchvisionOptions(**enc | {"weights_path": str(tmp_path / "resnet34.pt")}))


def test_missing_weights_file_is_one_line(tmp_path: Path) -> None:
    where = str(tmp_path / "none.pt")
    with pytest.raises(EncoderUnavailableError) as info:
        build_encoder(TorchvisionOptions(name="torchvision", weights_path=where))
    assert "\n" not in str(info.value) and where in str(info.value)


def test_content_of_the_wrong_kind(texts: dict[str, Any]) -> None:
    x, _ = images(300)
    with pytest.raises(JobError, match="reads texts"):
        run({"name": "tfidf-svd"}, texts, x, epochs=1)
    with pytest.raises(JobError, match="reads images"):
        run({"name": "small-cnn"}, texts, texts["texts"], epochs=1)


# ---- config ----


@pytest.mark.slow  # a fresh interpreter
def test_api_imports_no_encoder_library() -> None:
    import subprocess

    heavy = ["torch", "sklearn", "transformers", "sentence_transformers", "torchvision", "PIL"]
    code = f"import sys, app.main; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_encoder_is_the_features() -> None:
    assert TrainingConfig().encoder.name == "features"
    cfg = TrainingConfig(encoder={"name": "tfidf-svd"})
    assert cfg.encoder.dim == 256  # type: ignore[union-attr]
    assert TrainingConfig.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"name": "bert"}, ("encoder",)),
        ({"dim": 3}, ("encoder",)),
        ({"name": "tfidf-svd", "dim": 1}, ("encoder", "tfidf-svd", "dim")),
        ({"name": "tfidf-svd", "path": "/x"}, ("encoder", "tfidf-svd", "path")),
        ({"name": "sentence-transformer"}, ("encoder", "sentence-transformer", "path")),
        ({"name": "transformers", "path": ""}, ("encoder", "transformers", "path")),
        ({"name": "torchvision", "arch": "resnet18"}, ("encoder", "torchvision", "weights_path")),
        (
            {"name": "torchvision", "arch": "../x", "weights_path": "/w"},
            ("encoder", "torchvision", "arch"),
        ),
        ({"name": "small-cnn", "size": 16}, ("encoder", "small-cnn", "size")),
        ({"name": "small-cnn", "widths": [8] * 6}, ("encoder", "small-cnn")),
        ({"name": "hashing", "dim": None}, ("encoder", "hashing")),
    ],
)
def test_encoder_config_errors_name_the_field(raw: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        TrainingConfig.model_validate({"encoder": raw})
    assert [e["loc"] for e in info.value.errors()] == [loc]


def test_a_job_on_content_needs_items_that_carry_it(client, project) -> None:
    """Refused at submit, naming `encoder`, when no voted item has the content the encoder
    reads: never a job that fails later. (Jobs that train: tests/test_content_training.py.)"""
    items = [{"id": f"x{i}", "features": [float(i), 1.0]} for i in range(4)]
    assert client.post(f"/v1/projects/{project}/items", json={"items": items}).status_code == 200
    votes = [{"item": f"x{i}", "worker": "w", "label": i % 3} for i in range(4)]
    assert client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).status_code == 200
    r = client.post(
        f"/v1/projects/{project}/training-jobs", json={"encoder": {"name": "tfidf-svd"}}
    )
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == "encoder" and err["reason"].startswith("0 of 4 voted items have a text")
    enc = {"name": "small-cnn"}
    r = client.post(f"/v1/projects/{project}/training-sweeps", json={"base": {"encoder": enc}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "base.encoder", r.text
    assert "0 of 4 voted items have an image" in r.json()["errors"][0]["reason"]
    # with texts on two items the job is queued; distillation is for features jobs only
    texts = [{"id": "x0", "text": "a goal"}, {"id": "x1", "text": "a soup"}]
    assert client.post(f"/v1/projects/{project}/items", json={"items": texts}).status_code == 200
    r = client.post(f"/v1/projects/{project}/training-jobs", json={"encoder": {"name": "hashing"}})
    assert r.status_code == 202, r.text
    cfg = {"encoder": {"name": "hashing"}, "distill": {"teacher_job": r.json()["id"]}}
    r = client.post(f"/v1/projects/{project}/training-jobs", json=cfg)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "distill", r.text
    # the model-size limit counts the head on the CNN's 1024 channels (1024 * 65536 > 50M)
    from tests.test_item_content import b64, png

    image = [{"id": "x2", "image": b64(png())}]
    assert client.post(f"/v1/projects/{project}/items", json={"items": image}).status_code == 200
    cfg = {
        "encoder": {"name": "small-cnn", "widths": [1024]},
        "model": {"kind": "mlp", "hidden": [65536]},
    }
    r = client.post(f"/v1/projects/{project}/training-jobs", json=cfg)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "model", r.text


def test_fitted_encoder_travels_in_the_checkpoint(texts: dict[str, Any]) -> None:
    """A fresh process rebuilds the fitted TF-IDF + SVD from the checkpoint alone."""
    from app.training.content import restore_encoder

    res = run({"name": "tfidf-svd", "dim": 8}, texts, texts["texts"], epochs=3)
    model, cfg, ckpt = load_checkpoint(res.checkpoint)
    encoder = restore_encoder(cfg, ckpt)
    new = ["a goal by the team", "spicy soup", "snow and wind"]
    np.testing.assert_array_equal(encoder.encode(new), res.encoder.encode(new))
    np.testing.assert_allclose(
        predict_probs(model, encoder.encode(new)), predict_content(res, new), atol=1e-6
    )
    ckpt["encoder"]["version"] = "tfidf-svd/1/0000000000000000"  # another fit or library
    with pytest.raises(EncoderUnavailableError, match="changed since it trained"):
        restore_encoder(cfg, ckpt)


def test_which_encoders_are_cached() -> None:
    from app.training.embedding_cache import cacheable
    from app.training.encoders.options import HashingOptions

    assert cacheable(build_encoder(HashingOptions(name="hashing", n_features=64, dim=None)))
    assert not cacheable(build_encoder(HashingOptions(name="hashing")))  # its SVD is the job's
    assert not cacheable(build_encoder(TfidfSvdOptions(name="tfidf-svd")))
    assert not cacheable(build_encoder(SmallCNNOptions(name="small-cnn")))  # trained end to end

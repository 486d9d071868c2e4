"""Encoder task classifier: a sentence encoder fine-tuned with a
classification head (``AutoModelForSequenceClassification``), fp32 on CPU.

The paper fine-tuned DeBERTa-v3; the offline default is the embedded
all-MiniLM-L6-v2 (``base="minilm"``); any encoder folder or hub id works.
A trained classifier is a folder with the transformers model, its tokenizer
and ``tapir_classifier.json`` (labels, base, accuracy, split sizes).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.options import InputFile, Options, OutputFolder, option
from tapir.resources import cache_dir
from tapir_classifiers.labelled import Example, evaluate, load_labelled, present_labels, stratified_split

META_FILE = "tapir_classifier.json"
DEFAULTS: dict[str, Any] = {"epochs": 12, "lr": 2e-4, "batch_size": 16, "max_length": 128, "warmup": 0.1}


def is_trained(model_dir: str | Path | None) -> bool:
    return model_dir is not None and (Path(model_dir) / META_FILE).is_file()


def _cache_dir(labels_path: Path, settings: dict[str, Any]) -> Path:
    """Where a classifier trained from ``labels_path`` with ``settings`` is kept."""
    digest = hashlib.sha256(labels_path.read_bytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return cache_dir() / "classifiers" / f"encoder-{digest.hexdigest()[:16]}"


def train_encoder(
    train: Sequence[Example],
    out_dir: str | Path,
    *,
    heldout: Sequence[Example] = (),
    base: str = "minilm",
    epochs: int = DEFAULTS["epochs"],
    lr: float = DEFAULTS["lr"],
    head_lr: float | None = None,
    seed: int = 0,
    batch_size: int = DEFAULTS["batch_size"],
    max_length: int = DEFAULTS["max_length"],
    warmup: float = DEFAULTS["warmup"],
    class_weights: bool = False,
    freeze_embeddings: bool = True,
    labels: Sequence[str] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``train``, evaluate on ``heldout`` (if any), save
    into ``out_dir`` and return the metadata written to ``tapir_classifier.json``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from tapir_hf.encoder import encoder_path

    if not train:
        raise TapirError("no training examples for the encoder classifier")
    labels = list(labels) if labels is not None else present_labels([*train, *heldout])
    index = {label: i for i, label in enumerate(labels)}
    random.seed(seed)
    torch.manual_seed(seed)
    path = encoder_path(base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=index,
        dtype=torch.float32,
    )
    if freeze_embeddings:
        # The token embeddings are half of MiniLM's weights; a few hundred
        # examples cannot improve them, and freezing halves the optimizer's work.
        model.get_input_embeddings().weight.requires_grad_(False)
    enc = tokenizer([ex.text for ex in train], truncation=True, max_length=max_length)
    targets = [index[ex.label] for ex in train]
    weight = None
    if class_weights:
        counts = torch.bincount(torch.tensor(targets), minlength=len(labels)).float()
        weight = torch.where(counts > 0, counts.sum() / (len(labels) * counts.clamp(min=1)), torch.zeros_like(counts))
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    # The new head (and the pooler feeding it) may learn faster than the encoder body.
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(("classifier", "pooler"))]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(("classifier", "pooler"))]
    params = head + body
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": lr}, {"params": head, "lr": head_lr or lr}], weight_decay=0.01
    )
    steps_per_epoch = (len(train) + batch_size - 1) // batch_size
    total = max(1, steps_per_epoch * epochs)
    warm = int(total * warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    model.train()
    losses: list[float] = []
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=generator).tolist()
        epoch_loss = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            features = tokenizer.pad(
                {k: [enc[k][i] for i in batch] for k in enc.keys()}, return_tensors="pt"
            )
            logits = model(**features).logits
            loss = loss_fn(logits, torch.tensor([targets[i] for i in batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            epoch_loss += loss.item() * len(batch)
        losses.append(epoch_loss / len(train))
        if progress:
            progress(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta: dict[str, Any] = {
        "labels": labels,
        "base": base,
        "epochs": epochs,
        "lr": lr,
        "head_lr": head_lr or lr,
        "seed": seed,
        "batch_size": batch_size,
        "max_length": max_length,
        "class_weights": class_weights,
        "freeze_embeddings": freeze_embeddings,
        "n_train": len(train),
        "n_heldout": len(heldout),
        "train_loss": losses,
        "train_seconds": round(time.perf_counter() - started, 2),
        "accuracy": None,
        "per_label": None,
    }
    if heldout:
        result = evaluate(EncoderClassifier._from_parts(model, tokenizer, labels, max_length), heldout)
        meta["accuracy"] = result["accuracy"]
        meta["per_label"] = result["per_label"]
        meta["confusions"] = result["confusions"]
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


class EncoderClassifier:
    """A fine-tuned sequence classifier.

    When ``model_dir`` holds no trained model, the classifier is trained first
    from ``labels_path`` and saved into ``model_dir``, or into a cache folder
    keyed by the file's content and the settings when no ``model_dir`` is
    given. The pipeline reads the ``model_dir`` option to keep a trained
    classifier with the run's outputs.
    """

    needs_model = False

    class Options(Options):
        model_dir: OutputFolder | None = option(None, "a trained classifier folder (trained into when it holds none)")
        labels_path: InputFile | None = option(
            None, "labelled JSONL to train from when model_dir holds no model (default the shipped seed set)")
        base: str = option("minilm", "encoder to fine-tune: 'minilm' (embedded) or an encoder folder / hub id")
        epochs: int = option(DEFAULTS["epochs"], "training epochs", ge=1)
        lr: float = option(DEFAULTS["lr"], "learning rate of the encoder body", gt=0)
        head_lr: float | None = option(None, "learning rate of the new head (default lr)", gt=0)
        seed: int = option(0, "seed of the split and the training")
        holdout: float = option(0.2, "fraction held out per label to measure accuracy (0 trains on all)", ge=0, lt=1)
        batch_size: int = option(DEFAULTS["batch_size"], "training batch size", ge=1)
        class_weights: bool = option(False, "weight the loss by inverse label frequency")
        freeze_embeddings: bool = option(True, "keep the token embeddings frozen")
        max_length: int = option(DEFAULTS["max_length"], "tokens per instruction", ge=8)
        batch_size_infer: int = option(64, "batch size when classifying", ge=1)

    def __init__(self, backend: Any, options: "EncoderClassifier.Options"):
        self.options = options
        model_dir, labels_path = options.model_dir, options.labels_path
        base, epochs, lr, head_lr, seed = options.base, options.epochs, options.lr, options.head_lr, options.seed
        holdout, batch_size, class_weights = options.holdout, options.batch_size, options.class_weights
        freeze_embeddings, max_length = options.freeze_embeddings, options.max_length
        batch_size_infer = options.batch_size_infer
        self.batch_size_infer = batch_size_infer
        if not is_trained(model_dir):
            examples = load_labelled(labels_path)
            if model_dir is None:
                from tapir_classifiers.labelled import default_labels_path

                source = Path(labels_path) if labels_path is not None else default_labels_path()
                settings = {"base": base, "epochs": epochs, "lr": lr, "head_lr": head_lr, "seed": seed,
                            "holdout": holdout, "batch_size": batch_size, "class_weights": class_weights,
                            "freeze_embeddings": freeze_embeddings, "max_length": max_length}
                model_dir = _cache_dir(source, settings)
                cached = True
            else:
                cached = False
            if not is_trained(model_dir):
                target = Path(model_dir)
                # A cache folder is filled under a temporary name and renamed
                # when complete, so a crash never leaves a half-saved model there.
                work = target.with_name(f"{target.name}.tmp-{os.getpid()}") if cached else target
                train, heldout = stratified_split(examples, holdout, seed) if holdout > 0 else (examples, [])
                train_encoder(train, work, heldout=heldout, base=base, epochs=epochs, lr=lr, head_lr=head_lr,
                              seed=seed, batch_size=batch_size, class_weights=class_weights,
                              freeze_embeddings=freeze_embeddings, max_length=max_length,
                              labels=present_labels(examples))
                if cached:
                    try:
                        os.replace(work, target)
                    except OSError:  # another process finished first: keep its copy
                        import shutil

                        shutil.rmtree(work, ignore_errors=True)
        self.model_dir = Path(model_dir)
        self._load()

    @classmethod
    def _from_parts(cls, model: Any, tokenizer: Any, labels: Sequence[str], max_length: int) -> "EncoderClassifier":
        self = cls.__new__(cls)
        self.model, self.tokenizer, self.labels = model, tokenizer, list(labels)
        self.max_length, self.batch_size_infer, self.model_dir, self.meta = max_length, 64, None, {}
        return self

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.meta = json.loads((self.model_dir / META_FILE).read_text(encoding="utf-8"))
        self.labels = list(self.meta["labels"])
        self.max_length = int(self.meta.get("max_length") or DEFAULTS["max_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, dtype=torch.float32)
        self.model.eval()
        if self.model.config.num_labels != len(self.labels):
            raise TapirError(f"{self.model_dir}: model has {self.model.config.num_labels} outputs "
                             f"but {META_FILE} lists {len(self.labels)} labels")

    @property
    def accuracy(self) -> float | None:
        return self.meta.get("accuracy")

    def classify(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """(label, confidence) per text, in batches of ``batch_size_infer``
        texts of alike lengths (they pad less)."""
        from tapir_classifiers.batching import by_length

        return by_length(self._classify_batches, list(texts))

    def _classify_batches(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        import torch

        out: list[tuple[str, float]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size_infer):
                batch = list(texts[start : start + self.batch_size_infer])
                enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt")
                probs = torch.softmax(self.model(**enc).logits.float(), dim=-1)
                conf, idx = probs.max(dim=-1)
                out.extend((self.labels[i], float(c)) for i, c in zip(idx.tolist(), conf.tolist()))
        return out

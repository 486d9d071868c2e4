"""What a benchmarked model is, for every evaluator: which weights it has and
which prompt format it gets.

* :func:`weights_fingerprint`: a short id of a local checkpoint's weights.
  It changes when a folder is retrained in place and stays the same when a
  folder is copied elsewhere (file names, sizes and sampled contents, no
  paths or mtimes). A benchmark run's id and its stored answers are keyed by
  it, so ``tapir bench run --model ./ckpt`` after retraining ``./ckpt``
  runs again, and a copy of ``./ckpt`` reuses the answers.
* :func:`chat_template_text` / :func:`chat_format`: the chat template a
  local checkpoint carries, which is the format it was trained in (tapir's
  trainer renders every example with the tokenizer's chat template and saves
  it, ChatML when the base had none).
* :func:`prefers_chat_template`: the ``conv_template: auto`` rule. A local
  checkpoint with a chat template is prompted with it, unless the evaluator
  has a real name-based template for the model (FastChat's adapter for a
  known model family); where the evaluator would only fall back to a
  generic template, the training format wins.
* :func:`format_warning`: the line to show when a run's format is not the
  one the checkpoint was trained in.

Nothing here loads a model or imports a heavy library.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

CHAT_TEMPLATE = "chat_template"
_SMALL_FILE = 1 << 20  # files up to 1 MiB are hashed whole
_SAMPLE = 1 << 16  # larger files: their size and 64 KiB at the start, middle and end
_SKIP_SUFFIXES = (".lock", ".log")
_FINGERPRINTS: dict[tuple, str] = {}


def local_folder(model: str) -> Path | None:
    """The checkpoint folder behind a model id (``./ckpt``, ``hf:/abs/ckpt``,
    ``vllm:ckpt``), or None for a hub id, an API model or an embedded model."""
    candidates = [model]
    prefix, sep, rest = model.partition(":")
    if sep and rest and "/" not in prefix and "\\" not in prefix:
        candidates.append(rest)
    for text in candidates:
        path = Path(text).expanduser()
        if path.is_dir():
            return path.resolve()
    return None


def _weight_files(folder: Path) -> list[Path]:
    """The files that make up a checkpoint: the folder's own files (not its
    ``checkpoint-*`` subfolders, not hidden files such as tapir's job marks)."""
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and not f.name.startswith(".") and not f.name.endswith(_SKIP_SUFFIXES))


def _file_digest(path: Path, size: int) -> bytes:
    if size <= _SMALL_FILE:
        return hashlib.sha256(path.read_bytes()).digest()
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        for offset in (0, size // 2, max(0, size - _SAMPLE)):
            fh.seek(offset)
            digest.update(fh.read(_SAMPLE))
    return digest.digest()


def folder_weights_fingerprint(folder: str | Path) -> str:
    """``sha256:`` + 16 hex digits over a checkpoint folder's file names,
    sizes and contents (whole for small files, sampled for large weight
    files, so a 15 GB checkpoint costs milliseconds). Cached per
    (folder, names, sizes, mtimes) within a process."""
    folder = Path(folder)
    files = _weight_files(folder)
    stats = [(f, f.stat()) for f in files]
    memo = (str(folder.resolve()), tuple((f.name, s.st_size, s.st_mtime_ns) for f, s in stats))
    if memo not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for f, st in stats:
            digest.update(f.name.encode() + b"\0" + _file_digest(f, st.st_size))
        _FINGERPRINTS[memo] = "sha256:" + digest.hexdigest()[:16]
    return _FINGERPRINTS[memo]


def weights_fingerprint(model: str) -> str | None:
    """The weights fingerprint of a local checkpoint model id, None for
    anything that is not a local folder (its id names it)."""
    folder = local_folder(model)
    return folder_weights_fingerprint(folder) if folder is not None else None


# ------------------------------------------------------------------ prompt formats


def template_digest(text: str) -> str:
    """The short digest that names a prompt template in labels and keys."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PromptFormat:
    """How prompts are rendered: ``name`` (``chat_template``, or an
    evaluator's named template such as ``fastchat:one_shot``) and a short
    digest of the template (the chat-template text, or a rendering of a
    fixed conversation for a named template); None where it is not known
    here (a remote server's own chat template)."""

    name: str
    digest: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else self.name

    @classmethod
    def named(cls, name: str, rendering: str) -> "PromptFormat":
        return cls(name, template_digest(rendering))


def chat_template_text(folder: str | Path) -> str | None:
    """The chat template saved with a checkpoint (``chat_template.jinja``,
    ``chat_template.json`` or ``tokenizer_config.json``), None if it has none."""
    folder = Path(folder)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text() or None
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text()).get("chat_template")
        except (json.JSONDecodeError, OSError, AttributeError):
            continue
        if isinstance(value, list):  # named templates: the default one
            value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"),
                         None)
        if isinstance(value, str) and value:
            return value
    return None


def chat_format(model: str) -> PromptFormat:
    """The tokenizer chat template of ``model``: with its digest for a local
    checkpoint, without one for a model whose template is not readable here."""
    folder = local_folder(model)
    text = chat_template_text(folder) if folder is not None else None
    return PromptFormat(CHAT_TEMPLATE, template_digest(text) if text else None)


def trained_format(model: str) -> PromptFormat | None:
    """The format a local checkpoint was trained in: its tokenizer's chat
    template (what tapir's trainer renders examples with and saves). None
    for a folder without one, or a model that is no local folder."""
    folder = local_folder(model)
    if folder is None:
        return None
    text = chat_template_text(folder)
    return PromptFormat(CHAT_TEMPLATE, template_digest(text)) if text else None


def prefers_chat_template(model: str, *, has_named_template: bool) -> bool:
    """The ``auto`` rule: True when ``model`` is a local checkpoint that
    carries a chat template and the evaluator has no real name-based template
    for it (``has_named_template``: e.g. FastChat's adapter matched the
    model family rather than falling back to ``one_shot``)."""
    return not has_named_template and trained_format(model) is not None


def format_warning(model: str, used: PromptFormat) -> str | None:
    """A line saying that ``used`` is not the format ``model`` was trained in
    (its chat template), or None when it is, or when nothing is known."""
    trained = trained_format(model)
    if trained is None or used == trained:
        return None
    return (f"{model} was trained with its chat template ({trained.label}) but is prompted with {used.label}: "
            f"its scores are measured off its training format (pass conv_template=chat_template to use it)")

"""Win rate and the length-controlled (LC) win rate.

The win rate is the mean preference for the model's output over the
reference output (a logprob-weighted probability, or 1 / 0 / 0.5), times
100, with its standard error over instructions: what
``alpaca_eval.metrics.get_winrate`` reports.

The LC win rate comes from ``alpaca_eval`` (``pip install alpaca-eval==0.6.6
'setuptools<81'``), through its own ``get_length_controlled_winrate(...,
save_weights_dir=None)`` (``None`` so nothing is written into the installed
package):

* ``glm_name="length_controlled_v1"`` (alpaca_eval's default) for the
  standard 805 instructions, in full. That GLM has a per-instruction
  difficulty term and regularises towards two "gamed" baselines, both from
  the hub file ``df_gamed.csv``;
* ``glm_name="length_controlled_minimal"`` (length term and baseline term
  only) for any other instruction set or any subset (``limit``,
  ``instruction_ids``): their rows have no difficulty estimate of their own.

``alpaca_eval``'s function downloads ``df_gamed.csv`` before it looks at the
GLM name. When that download fails (offline), or a custom set has more rows
than the file, the minimal GLM is fitted here with alpaca_eval's own
``make_dmatrix_for_model`` and ``fit_LogisticRegressionCV`` from that GLM's
formula: the same computation without the download (tests check that both
give the same number); ``meta.lc_path`` says which ran. When the standard
GLM fails the minimal one is used and the row's note says why.

The frame handed to the GLM is indexed by the instruction's position in its
set and, as in ``alpaca_eval.main.evaluate``, holds every instruction with a
model output, a failed judgment included with a missing preference (the GLM
trains on the judged ones and averages its prediction over all).

When ``alpaca_eval`` is not installed, or the fit fails (too few
instructions for its 5-fold cross-validation, outputs all of one length),
the LC row says why instead of a number.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

STANDARD_GLM = "length_controlled_v1"
MINIMAL_GLM = "length_controlled_minimal"


@dataclass
class Annotation:
    """One judged instruction, in alpaca_eval's terms: output_1 is the
    reference (baseline), output_2 the model's, preference in [1, 2] (2: the
    model's output wins)."""

    index: int  # position of the instruction in its set
    instruction: str
    output_1: str
    output_2: str
    generator_1: str
    generator_2: str
    annotator: str
    preference: float


@dataclass
class LCResult:
    value: float | None = None
    stderr: float | None = None
    glm: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def win_rate(p_model: Sequence[float]) -> tuple[float | None, float | None]:
    """(win rate, standard error) in percent from P(model better) values."""
    n = len(p_model)
    if n == 0:
        return None, None
    mean = sum(p_model) / n
    if n < 2:
        return mean * 100, None
    var = sum((p - mean) ** 2 for p in p_model) / (n - 1)
    return mean * 100, math.sqrt(var / n) * 100


def discrete_win_rate(p_model: Sequence[float]) -> float | None:
    """Each preference rounded to a win, loss or draw (0.5): alpaca_eval's
    ``discrete_win_rate``."""
    if not p_model:
        return None
    return sum(1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5 for p in p_model) / len(p_model) * 100


def annotations_frame(annotations: Sequence[Annotation]):
    """A DataFrame indexed by instruction position (alpaca_eval reads the
    index as the instruction's row in the standard set)."""
    import pandas as pd

    records = [{k: v for k, v in a.__dict__.items() if k != "index"} for a in annotations]
    return pd.DataFrame.from_records(records, index=[a.index for a in annotations])


def _alpaca_eval_available() -> str | None:
    try:
        from alpaca_eval.metrics import glm_winrate  # noqa: F401
    except Exception as exc:  # ImportError, or pkg_resources missing with setuptools>=81
        return f"alpaca_eval is not importable ({type(exc).__name__}: {exc}); pip install alpaca-eval==0.6.6 'setuptools<81'"
    return None


def minimal_lc(annotations: Sequence[Annotation]) -> tuple[float, float]:
    """The ``length_controlled_minimal`` GLM of alpaca_eval, fitted with its
    own functions, without its hub download. Returns (LC win rate, stderr)."""
    import numpy as np
    import pandas as pd
    from alpaca_eval.metrics import glm_winrate as glm

    info = glm.GLM_INFO[MINIMAL_GLM]
    df = annotations_frame(annotations)
    if df["generator_1"].iloc[0] == df["generator_2"].iloc[0]:
        return 50.0, 0.0  # a model against itself, as alpaca_eval does
    delta = df["output_1"].str.len() - df["output_2"].str.len()
    feats = pd.DataFrame(
        {
            "preference": df["preference"].astype(float).replace({0.0: 1.5}) - 1,
            "std_delta_len": delta / delta.std(),
            "not_gamed_baseline": True,
        }
    ).reset_index(drop=True)
    test = feats[["not_gamed_baseline"]].copy()
    test["std_delta_len"] = 0
    train, x_test = glm.make_dmatrix_for_model(feats, test, formula=info["formula"])
    train = train[train["preference"].notna()]
    model = glm.fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True, **info["kwargs"])
    predicted = model.predict_proba(x_test)[:, 1]
    if not np.all(np.isfinite(predicted)):
        raise ValueError("the GLM predicted non-finite preferences")
    return float(predicted.mean() * 100), float(pd.Series(predicted).sem() * 100)


def alpaca_eval_lc(annotations: Sequence[Annotation], glm_name: str) -> tuple[float, float]:
    """alpaca_eval's own ``get_length_controlled_winrate`` (downloads
    ``df_gamed.csv`` from the hub whatever the GLM)."""
    from alpaca_eval.metrics import get_length_controlled_winrate

    out = get_length_controlled_winrate(
        annotations_frame(annotations), glm_name=glm_name, save_weights_dir=None,
        is_add_glm_preference_inplace=False,
    )
    return float(out["length_controlled_winrate"]), float(out["lc_standard_error"])


def standard_lc(annotations: Sequence[Annotation]) -> tuple[float, float]:
    """alpaca_eval's own LC win rate with its default GLM (needs the hub)."""
    return alpaca_eval_lc(annotations, STANDARD_GLM)


def reference_winrate(annotations: Sequence[Annotation]) -> dict[str, Any]:
    """``alpaca_eval.metrics.get_winrate`` on the annotations (a missing
    preference is dropped, as alpaca_eval drops it)."""
    from alpaca_eval.metrics import get_winrate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = get_winrate(annotations_frame(annotations))
    return {k: (float(v) if v is not None else None) for k, v in out.items()}


def length_controlled(annotations: Sequence[Annotation], *, glm: str = "auto", standard: bool = False) -> LCResult:
    """The LC win rate (see the module docstring for which GLM and why)."""
    missing = _alpaca_eval_available()
    if missing:
        return LCResult(note=missing)
    judged = sum(1 for a in annotations if a.preference == a.preference)  # NaN: a failed judgment
    if judged < 10:
        return LCResult(note=f"too few judged instructions ({judged}) for the GLM's 5-fold fit")
    chosen = glm if glm != "auto" else (STANDARD_GLM if standard else MINIMAL_GLM)
    if chosen not in (STANDARD_GLM, MINIMAL_GLM):
        return LCResult(note=f"unknown lc_glm {glm!r}: use auto, {STANDARD_GLM} or {MINIMAL_GLM}")
    with warnings.catch_warnings():  # sklearn / pkg_resources deprecation noise
        warnings.simplefilter("ignore")
        return _fit(annotations, chosen)


def _fit(annotations: Sequence[Annotation], chosen: str) -> LCResult:
    notes = []
    if chosen == STANDARD_GLM:
        try:
            value, stderr = standard_lc(annotations)
            return LCResult(value, stderr, STANDARD_GLM, extra={"lc_path": "alpaca_eval.get_length_controlled_winrate"})
        except Exception as exc:
            notes.append(f"{STANDARD_GLM} failed ({type(exc).__name__}: {str(exc)[:200]}); used {MINIMAL_GLM}")
    try:
        value, stderr = alpaca_eval_lc(annotations, MINIMAL_GLM)
        return LCResult(value, stderr, MINIMAL_GLM, "; ".join(notes) or None,
                        extra={"lc_path": "alpaca_eval.get_length_controlled_winrate"})
    except Exception as exc:
        why = f"{type(exc).__name__}: {str(exc)[:160]}"
    try:
        value, stderr = minimal_lc(annotations)
    except Exception as exc:
        notes.append(f"{MINIMAL_GLM} failed: {type(exc).__name__}: {str(exc)[:200]}")
        return LCResult(note="; ".join(notes))
    return LCResult(value, stderr, MINIMAL_GLM, "; ".join(notes) or None,
                    extra={"lc_path": "alpaca_eval glm_winrate functions, without the df_gamed.csv download",
                           "lc_download_error": why})

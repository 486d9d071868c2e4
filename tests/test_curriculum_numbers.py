"""The curriculum's numbers without a model: the seed cut (ties at the cut
value, MFD <= 0, the cap), Eq. 3 in a round's training set (every pair
covered, the task mix reached by up-sampling), coverage, and zero-weight
examples left out of the training set."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tapir.config import MFDConfig
from tapir.pipeline.mfd import candidate_deltas, describe_cut, select_hard
from tapir.pipeline.stages.train import group_weights, sampled, weighted_examples
from tapir.pipeline.taskmix import cover_counts, coverage, task_cover, task_draws
from tapir.roles import Item
from tapir.tasks import paper_weights

# --------------------------------------------------------------------------- the seed cut


def _flat_judge() -> dict[str, float]:
    """Issue 17's judge: MFD 0 for 29 of 32 items, three items above it."""
    mfd = {f"i{k:02d}": 0.0 for k in range(32)}
    mfd.update({"i05": 3.0, "i17": 2.5, "i30": 1.0})
    return mfd


def test_relative_cut_never_takes_nonpositive_mfd_by_default():
    cut = select_hard(_flat_judge(), MFDConfig(delta=None, top_fraction=0.5), seed=0)
    assert cut.hard == {"i05", "i17", "i30"}
    assert cut.excluded_nonpositive == 13  # 16 wanted, 3 with MFD > 0
    info = cut.info()
    assert info["hard"] == 3 and info["easy"] == 29 and info["judged"] == 32
    text = describe_cut(info)
    assert "3 of 32 judged items" in text and "13 excluded for MFD <= 0" in text


def test_allow_nonpositive_takes_ties_by_seeded_draw_not_by_id():
    cfg = MFDConfig(delta=None, top_fraction=0.5, allow_nonpositive=True)
    cuts = [select_hard(_flat_judge(), cfg, seed=s) for s in range(6)]
    for cut in cuts:
        assert len(cut.hard) == 16 and {"i05", "i17", "i30"} <= cut.hard
        assert cut.at_cut == 29 and cut.taken_at_cut == 13 and cut.tie_break == "seeded draw"
        assert cut.threshold == 0.0 and cut.excluded_nonpositive == 0
    first_ids = {f"i{k:02d}" for k in range(16)} - {"i05"}
    assert all(cut.hard - {"i05", "i17", "i30"} != first_ids for cut in cuts)  # not the lowest ids
    assert len({frozenset(c.hard) for c in cuts}) > 1  # the draw depends on the seed ...
    assert select_hard(_flat_judge(), cfg, seed=3).hard == cuts[3].hard  # ... and only on it
    assert "29 items share the cut value 0, 13 of them taken by a seeded draw" in describe_cut(cuts[0].info())


def test_absolute_and_quantile_cuts_and_the_cap():
    mfd = {"a": 5.0, "b": 3.0, "c": 2.0, "d": -1.0, "e": 2.5}
    cut = select_hard(mfd, MFDConfig(delta=2.0))
    assert cut.hard == {"a", "b", "e"} and cut.rule == "MFD > 2" and cut.at_cut == 0
    assert select_hard(mfd, MFDConfig(delta=None, top_fraction=0.4)).hard == {"a", "b"}
    q = select_hard(mfd, MFDConfig(delta=None, quantile=0.5))
    assert q.threshold == 2.5 and q.hard == {"a", "b"} and q.rule.startswith("MFD > q0.5")
    negative = select_hard(mfd, MFDConfig(delta=-2.0))
    assert negative.hard == {"a", "b", "c", "e"} and negative.excluded_nonpositive == 1
    assert select_hard(mfd, MFDConfig(delta=-2.0, allow_nonpositive=True)).hard == set(mfd)
    # The cap keeps the highest MFD; equal values at the cap are drawn, seeded.
    tied = {"a": 4.0, "b": 3.0, "c": 3.0, "d": 3.0, "e": 3.0}
    capped = [select_hard(tied, MFDConfig(delta=2.0), seed=s, cap=3) for s in range(8)]
    for cut in capped:
        assert len(cut.hard) == 3 and "a" in cut.hard
        assert (cut.at_cut, cut.taken_at_cut, cut.capped_at) == (4, 2, 3)
        assert cut.rule == "MFD > 2, capped at seed_size 3"
    assert len({frozenset(c.hard) for c in capped}) > 1


def test_candidate_deltas_follow_the_judges_scale():
    assert candidate_deltas([0.0, 0.1, 0.6]) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert candidate_deltas([-2.0, 9.0])[-1] == 7.5
    assert candidate_deltas([-1.0, 0.0]) == [0.0]


# --------------------------------------------------------------------------- Eq. 3 in the training set


def _pool(per_type: dict[str, int]) -> list[Item]:
    return [Item(f"{t[:4]}-{k:03d}", f"do {t} {k}", output="y", task_type=t)
            for t, n in per_type.items() for k in range(n)]


def test_cover_keeps_every_pair_and_reaches_the_task_mix():
    weights = paper_weights()
    pool = _pool({"Math": 5, "Reasoning": 5, "Writing": 40, "Code Debug": 2, "Art": 8})
    trained = task_cover(pool, weights, seed=1)
    assert {it.id for it in trained} == {it.id for it in pool}  # no pair dropped
    mass = weights["Math"] + weights["Reasoning"] + weights["Writing"] + weights["Code Debug"] + weights["Art"]
    counts = Counter(it.task_type for it in trained)
    total = len(trained)
    # Writing (40 pairs at 1/56) sets the size: 40 / (w / mass); every type within one example of its share.
    assert total == pytest.approx(40 / (weights["Writing"] / mass), abs=1)
    for t in counts:
        assert counts[t] == pytest.approx(total * weights[t] / mass, abs=1.0), t
    # Each pair repeated q or q + 1 times within its type.
    per_pair = Counter(it.id for it in trained if it.task_type == "Math")
    assert max(per_pair.values()) - min(per_pair.values()) <= 1
    assert task_cover(pool, weights, seed=1) == trained  # seeded
    cov = coverage(pool, trained, weights, seeds={"Math-000", "Writ-001"})
    assert (cov["available"], cov["used"], cov["fraction"]) == (60, 60, 1.0)
    assert cov["seeds_available"] == 2 and cov["seeds_used"] == 2
    assert cov["per_task"]["Writing"]["examples"] == counts["Writing"]
    assert cov["per_task"]["Math"]["target"] == pytest.approx(weights["Math"] / mass, abs=1e-4)


def test_the_old_draw_drops_pairs_and_coverage_says_so():
    weights = paper_weights()
    pool = _pool({"Math": 5, "Reasoning": 5, "Writing": 40, "Code Debug": 2, "Art": 8})
    drawn = task_draws(pool, weights, seed=1)
    cov = coverage(pool, drawn, weights)
    assert len(drawn) == 60 and cov["used"] < 60 and cov["fraction"] == pytest.approx(cov["used"] / 60, abs=1e-4)
    assert cov["per_task"]["Writing"]["used"] < 40  # the low-weight type loses most
    assert sampled(pool, "task-draw", weights, 1) == drawn
    assert sampled(pool, "natural", weights, 1) == pool


def test_upsample_limit_fills_the_types_furthest_below_their_share():
    counts = {"Math": 10, "Writing": 90}
    share = {"Math": 0.5, "Writing": 0.5}
    assert cover_counts(counts, share) == {"Math": 90, "Writing": 90}
    limited = cover_counts(counts, share, limit=1.5)  # 150 examples at most
    assert limited == {"Math": 60, "Writing": 90}
    assert cover_counts(counts, share, limit=1.0) == counts
    # A type of weight 0 keeps its pairs once and does not set the size.
    assert cover_counts({"Math": 10, "Toxicity": 50}, {"Math": 1.0, "Toxicity": 0.0}) == {"Math": 10, "Toxicity": 50}


# --------------------------------------------------------------------------- zero-weight examples


def test_zero_weight_examples_are_not_in_the_training_set():
    hard, easy = _pool({"Math": 3}), _pool({"Art": 5})
    assert group_weights(3, 5, 1.0) == (1.0, 0.0)
    ex = weighted_examples(hard, easy, 1.0)
    assert len(ex) == 3 and all(e.weight == 1.0 for e in ex)
    assert len(weighted_examples(hard, easy, 0.0)) == 5
    assert len(weighted_examples(hard, easy, 1.0, "share")) == 3
    assert [e.weight for e in weighted_examples(hard, easy, 0.3)] == [0.3] * 3 + [pytest.approx(0.7)] * 5


# --------------------------------------------------------------------------- what the summary shows


def test_runs_show_says_what_the_cut_and_each_round_did(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tapir.cli import _add_commands, cli
    from tapir.runs import Run
    from tapir.store import open_store

    cut = select_hard(_flat_judge(), MFDConfig(delta=None, top_fraction=0.5, allow_nonpositive=True), seed=0)
    pool = _pool({"Math": 5, "Writing": 40})
    trained = task_draws(pool, paper_weights(), seed=2)
    cov = coverage(pool, trained, paper_weights(), seeds={"Math-000", "Writ-000"})
    db = tmp_path / "t.db"
    store = open_store(db)
    run = Run.start(store, {"name": "cut"}, name="cut")
    run.mark_stage("seed_cut", 0, "k-cut", "done", cut.info(), 0.1)
    run.mark_stage("train", 1, "k-train", "done", {"examples": len(trained) + 7, "hard_examples": len(trained),
                                                   "easy_examples": 7, "steps": 5, "coverage": cov,
                                                   "sampling": "task-draw"}, 0.1)
    store.close()
    _add_commands()
    result = CliRunner().invoke(cli, ["--db", str(db), "runs", "show", run.id])
    assert result.exit_code == 0, result.output
    assert ("seed cut: 16 of 32 judged items (top 50% of judged items by MFD); 29 items share the cut value 0, "
            "13 of them taken by a seeded draw") in result.output
    assert (f"round 1 training set: {len(trained) + 7} examples ({len(trained)} hard, 7 easy), 5 steps; "
            f"D_P coverage {cov['used']}/45 unique pairs ({100 * cov['used'] / 45:.1f}%), "
            f"seeds {cov['seeds_used']}/2, sampling task-draw") in result.output
    shown = CliRunner().invoke(cli, ["--db", str(db), "runs", "show", run.id, "--json"])
    assert json.loads(shown.output)["curriculum"][0].startswith("seed cut: 16 of 32")

"""Judges: pairwise (TAPIR), single-answer grading (MT-Bench), preference
with logprobs (AlpacaEval 2.0), reference similarity and student loss."""

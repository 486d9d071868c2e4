"""Open LLM Leaderboard tasks (and any lm-eval task) through lm-eval's Python API."""

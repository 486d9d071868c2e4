"""MT-Bench: 80 two-turn questions, single-answer grading or pairwise."""

"""Task-type classifiers: LLM prompt, fine-tuned encoder, nearest centroid."""

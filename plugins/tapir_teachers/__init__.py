"""Teacher, expansion and task-aware rewriting prompts over any backend."""

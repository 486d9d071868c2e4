"""The TAPIR distillation pipeline: resumable stages over the store."""

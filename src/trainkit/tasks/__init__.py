"""What a training step means: one file per objective. The loop only knows the Task protocol."""

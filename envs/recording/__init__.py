"""Data: ``collect`` records the real env under its data policy; ``episodes`` records any env's episodes
(real, world-model, single or vector) into the training data format."""

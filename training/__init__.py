"""Labels, training frames, models, baselines, tuning, evaluation and promotion."""

"""Using trained models: feature extraction, evaluation, transcription."""

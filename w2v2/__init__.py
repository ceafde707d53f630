"""wav2vec 2.0 pretraining and CTC fine-tuning, compatible with fairseq."""

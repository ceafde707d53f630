"""Which test shows each used config key doing what fairseq's does (read by tests/test_config_keys.py).

Keys are `group.key`, or `group.<_name>.key` where `_name` picks the group's schema. Every named test
sets the key to a non-default value and checks an effect, so it fails if the key were ignored.
"""

from __future__ import annotations

# Keys being implemented in other branches; their tests are named on merging (none now).
PENDING = "PENDING: implemented in another branch; its test is named on merging"
PENDING_KEYS: tuple = ()

# Used keys found to do nothing, or not what fairseq does (none now: the four found were implemented or
# declared `no_effect`).
FINDINGS: dict = {}

CONFIG = "tests/train/test_config.py::"
CHECKPOINTING = "tests/train/test_checkpointing.py::"
EFFECTS = "tests/models/test_config_effects.py::"
SPEED = "tests/models/test_speed_options.py::"
HYDRA = "tests/cli/test_hydra_train.py::"
RUN = "tests/train/test_run_keys.py::"
SCHEDULES = "tests/train/test_lr_schedules.py::"
SETUP = "tests/train/test_setup.py::"
SCALER = "tests/train/test_loss_scaler.py::"
TASK = "tests/train/test_task.py::"
SPEED_KEYS = "tests/train/test_speed_keys.py::"
MODEL = EFFECTS + "test_pretraining_key_changes_the_model"
MASKS = EFFECTS + "test_masking_key_changes_the_masks"
CTC = EFFECTS + "test_finetuning_key_changes_the_model"
ADAM = SETUP + "test_adam_settings_reach_the_optimizer"
DDP = SETUP + "test_ddp_settings_reach_the_ddp_wrapper"
POLYNOMIAL = SCHEDULES + "test_polynomial_decay_base_pretraining"
TRI_STAGE = SCHEDULES + "test_tri_stage_explicit_steps"
PRETRAINED_WEIGHTS = TASK + "test_w2v_path_weights_start_the_model_unless_no_pretrained_weights"

USED_KEY_TESTS = {
    "task.audio_pretraining.enable_padding": TASK + "test_enable_padding_pads_pretraining_batches_instead_of_cropping",
    "task.audio_finetuning.enable_padding": TASK + "test_enable_padding_pads_pretraining_batches_instead_of_cropping",
    "common.no_progress_bar": RUN + "test_no_progress_bar_turns_the_bar_off",
    "common.log_interval": RUN + "test_log_interval_is_the_updates_between_train_inner_records",
    "common.log_format": RUN + "test_log_format_chooses_the_line_format",
    "common.tensorboard_logdir": HYDRA + "test_tensorboard_events_are_written",
    "common.seed": RUN + "test_seed_sets_the_initial_weights",
    "common.cpu": SETUP + "test_cpu_forces_the_cpu_over_the_requested_device",
    "common.bf16": SETUP + "test_bf16_trains_under_bfloat16_autocast",
    "common.fp16": SETUP + "test_fp16_asks_for_float16_with_loss_scaling",
    "common.fp16_init_scale": SETUP + "test_fp16_init_scale_is_the_first_loss_scale",
    "common.fp16_scale_window": SETUP + "test_fp16_scale_window_is_the_growth_interval",
    "common.fp16_scale_tolerance": SCALER + "test_fp16_settings_come_from_the_fp16_keys",
    "common.min_loss_scale": SCALER + "test_fp16_settings_come_from_the_fp16_keys",
    "common.threshold_loss_scale": SCALER + "test_fp16_settings_come_from_the_fp16_keys",
    "common.amp": SETUP + "test_the_trainer_takes_precision_and_loss_scaling_from_fp16_or_amp_keys",
    "common.amp_init_scale": SCALER + "test_amp_settings_come_from_the_amp_keys_without_tolerance_or_threshold",
    "common.amp_scale_window": SCALER + "test_amp_settings_come_from_the_amp_keys_without_tolerance_or_threshold",
    "common.empty_cache_freq": SETUP + "test_amp_and_empty_cache_freq_reach_the_trainer",
    "common.log_file": HYDRA + "test_log_file_gets_the_messages_and_empty_cache_freq_frees_the_cache",
    "common.compile": SPEED_KEYS + "test_compile_wraps_the_training_forward[dynamic_default]",
    "common.compile_dynamic": SPEED_KEYS + "test_compile_wraps_the_training_forward[static]",
    "common.feature_cache": SPEED_KEYS + "test_feature_cache_runs_the_frozen_cnn_once_per_utterance",
    "dataset.required_batch_size_multiple": SETUP + "test_required_batch_size_multiple_cuts_training_and_validation_batches",
    "dataset.skip_invalid_size_inputs_valid_test": SETUP
    + "test_too_long_validation_items_are_refused_unless_skip_invalid_size_inputs_valid_test",
    "dataset.curriculum": RUN + "test_curriculum_keeps_the_length_order_for_its_epochs",
    "checkpoint.save_dir": RUN + "test_save_dir_is_where_checkpoints_go",
    "checkpoint.restore_file": CHECKPOINTING + "test_restore_path",
    "checkpoint.finetune_from_model": RUN + "test_finetune_from_model_takes_only_the_weights",
    "checkpoint.reset_dataloader": RUN + "test_reset_dataloader_starts_the_epoch_over",
    "checkpoint.reset_lr_scheduler": RUN + "test_reset_lr_scheduler_drops_the_schedule_state",
    "checkpoint.reset_meters": RUN + "test_reset_meters_drops_the_history_on_restore",
    "checkpoint.reset_optimizer": RUN + "test_reset_optimizer_drops_the_optimizer_state_and_update_count",
    "checkpoint.optimizer_overrides": RUN + "test_optimizer_overrides_apply_to_every_group_after_restore",
    "checkpoint.save_interval": CHECKPOINTING + "test_save_interval_writes_every_nth_epoch",
    "checkpoint.save_interval_updates": CHECKPOINTING + "test_names_follow_fairseq",
    "checkpoint.keep_interval_updates": CHECKPOINTING + "test_write_copies_and_prunes",
    "checkpoint.keep_interval_updates_pattern": CHECKPOINTING + "test_keep_interval_updates_pattern_spares_multiples",
    "checkpoint.keep_last_epochs": CHECKPOINTING + "test_keep_last_epochs_prunes_older_epoch_checkpoints",
    "checkpoint.keep_best_checkpoints": CHECKPOINTING + "test_keep_best_checkpoints",
    "checkpoint.no_save": RUN + "test_no_save_and_no_save_optimizer_state",
    "checkpoint.no_epoch_checkpoints": CHECKPOINTING + "test_names_follow_fairseq",
    "checkpoint.no_last_checkpoints": CHECKPOINTING + "test_names_follow_fairseq",
    "checkpoint.no_save_optimizer_state": RUN + "test_no_save_and_no_save_optimizer_state",
    "checkpoint.best_checkpoint_metric": RUN + "test_lr_scheduler_best_is_the_lowest_epoch_end_metric",
    "checkpoint.maximize_best_checkpoint_metric": RUN + "test_lr_scheduler_best_is_the_lowest_epoch_end_metric",
    "checkpoint.patience": CHECKPOINTING + "test_patience_counts_validations_without_strict_improvement",
    "checkpoint.checkpoint_suffix": CHECKPOINTING + "test_names_follow_fairseq",
    "dataset.num_workers": SETUP + "test_num_workers_start_loader_processes",
    "dataset.max_tokens": SETUP + "test_max_tokens_and_batch_size_bound_the_training_batches",
    "dataset.batch_size": SETUP + "test_max_tokens_and_batch_size_bound_the_training_batches",
    "dataset.train_subset": SETUP + "test_subsets_name_the_manifests",
    "dataset.valid_subset": SETUP + "test_subsets_name_the_manifests",
    "dataset.validate_interval": RUN + "test_validate_interval_is_in_epochs",
    "dataset.validate_interval_updates": RUN + "test_validate_interval_updates_and_validate_after_updates",
    "dataset.validate_after_updates": RUN + "test_validate_interval_updates_and_validate_after_updates",
    "dataset.fixed_validation_seed": RUN + "test_fixed_validation_seed_draws_the_validation_masks",
    "dataset.disable_validation": SETUP + "test_disable_validation_builds_no_validation_data",
    "dataset.max_tokens_valid": SETUP + "test_valid_batch_limits_default_to_the_training_ones",
    "dataset.batch_size_valid": SETUP + "test_valid_batch_limits_default_to_the_training_ones",
    "dataset.max_valid_steps": RUN + "test_max_valid_steps_bounds_the_validation_batches",
    "distributed_training.distributed_world_size": HYDRA + "test_distributed_world_size_starts_that_many_processes",
    "distributed_training.bucket_cap_mb": DDP + "[bucket_cap_mb]",
    "distributed_training.find_unused_parameters": DDP + "[find_unused_parameters]",
    "distributed_training.heartbeat_timeout": SETUP + "test_heartbeat_timeout_is_the_process_group_timeout",
    "distributed_training.broadcast_buffers": DDP + "[broadcast_buffers]",
    "optimization.max_epoch": RUN + "test_validate_interval_is_in_epochs",
    "optimization.max_update": "tests/train/test_resume.py::test_killed_and_resumed_run_matches_uninterrupted_run",
    "optimization.stop_time_hours": RUN + "test_stop_time_hours_stops_the_run",
    "optimization.clip_norm": SETUP + "test_clip_norm_shrinks_the_update",
    "optimization.sentence_avg": TASK + "test_sentence_avg_normalises_by_utterances",
    "optimization.update_freq": RUN + "test_skip_remainder_batch_drops_the_short_last_update",
    "optimization.lr": SETUP + "test_lr_is_the_peak_of_the_schedule",
    "optimization.stop_min_lr": RUN + "test_stop_min_lr_stops_at_the_start_of_an_epoch",
    "optimization.skip_remainder_batch": RUN + "test_skip_remainder_batch_drops_the_short_last_update",
    **{f"task.{name}.{key}": TASK + f"{test}[{name}]" for name in ("audio_pretraining", "audio_finetuning")
       for key, test in (
           ("data", "test_task_data_is_the_folder_read"),
           ("labels", "test_task_labels_name_the_label_files"),
           ("sample_rate", "test_sample_rate_is_the_rate_every_file_must_have"),
           ("normalize", "test_normalize_gives_zero_mean_unit_variance_audio"),
           ("max_sample_size", "test_max_sample_size_bounds_the_pretraining_crop"),
           ("min_sample_size", "test_min_sample_size_leaves_short_files_out"),
           ("seed", "test_task_seed_picks_the_crops"))},
    **{f"task.{name}.num_batch_buckets": SETUP + f"test_num_batch_buckets_pads_batches_to_bucket_lengths[{name}]"
       for name in ("audio_pretraining", "audio_finetuning")},
    "criterion.wav2vec.infonce": CONFIG + "test_criterion_variants_we_lack_are_refused[infonce]",
    "criterion.wav2vec.loss_weights": TASK + "test_loss_weights_weigh_the_extra_losses",
    "criterion.wav2vec.log_keys": RUN + "test_log_keys_choose_the_logged_model_outputs",
    "criterion.ctc.zero_infinity": TASK + "test_zero_infinity_zeroes_impossible_alignments",
    "criterion.ctc.sentence_avg": TASK + "test_sentence_avg_normalises_by_utterances",
    "criterion.ctc.post_process": CONFIG + "test_criterion_variants_we_lack_are_refused[post_process]",
    "optimizer.adam.adam_betas": ADAM + "[adam_betas]",
    "optimizer.adam.adam_eps": ADAM + "[adam_eps]",
    "optimizer.adam.weight_decay": ADAM + "[weight_decay]",
    "lr_scheduler.polynomial_decay.warmup_updates": POLYNOMIAL,
    "lr_scheduler.polynomial_decay.end_learning_rate": SCHEDULES + "test_polynomial_decay_power_and_end_lr",
    "lr_scheduler.polynomial_decay.power": SCHEDULES + "test_polynomial_decay_power_and_end_lr",
    "lr_scheduler.polynomial_decay.total_num_update": POLYNOMIAL,
    "lr_scheduler.polynomial_decay.lr": POLYNOMIAL,
    "lr_scheduler.tri_stage.warmup_steps": TRI_STAGE,
    "lr_scheduler.tri_stage.hold_steps": TRI_STAGE,
    "lr_scheduler.tri_stage.decay_steps": TRI_STAGE,
    "lr_scheduler.tri_stage.phase_ratio": SCHEDULES + "test_tri_stage_phases_from_ratio",
    "lr_scheduler.tri_stage.init_lr_scale": SCHEDULES + "test_tri_stage_init_lr_scale_is_where_warmup_starts",
    "lr_scheduler.tri_stage.final_lr_scale": SCHEDULES + "test_tri_stage_base_100h",
    "lr_scheduler.tri_stage.max_update": SCHEDULES + "test_tri_stage_phases_from_ratio",
    "lr_scheduler.tri_stage.lr": SCHEDULES + "test_tri_stage_base_100h",
    "lr_scheduler.fixed.warmup_updates": SCHEDULES + "test_fixed_warmup_reaches_lr_one_update_early",
    "lr_scheduler.fixed.lr": SCHEDULES + "test_fixed_warmup_reaches_lr_one_update_early",
    **{f"model.wav2vec2.{key}": f"{MODEL}[{key}]" for key in (
        "extractor_mode", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
        "dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "dropout_input",
        "dropout_features", "final_dim", "layer_norm_first", "conv_feature_layers", "conv_bias", "logit_temp",
        "quantize_targets", "target_glu", "feature_grad_mult", "latent_vars", "latent_groups", "latent_dim",
        "latent_temp", "num_negatives", "negatives_from_everywhere", "cross_sample_negatives", "conv_pos",
        "conv_pos_groups", "crop_seq_to_multiple")},
    **{f"model.wav2vec2.{key}": f"{MASKS}[{key}]" for key in (
        "mask_length", "mask_prob", "mask_selection", "mask_other", "no_mask_overlap", "mask_min_space",
        "require_same_masks", "mask_dropout", "mask_channel_length", "mask_channel_prob", "mask_channel_before",
        "mask_channel_selection", "mask_channel_other", "no_mask_channel_overlap", "mask_channel_min_space")},
    "model.wav2vec2.required_seq_len_multiple": EFFECTS + "test_required_seq_len_multiple_pads_the_encoder_input",
    "model.wav2vec2.checkpoint_activations": SPEED + "test_checkpoint_activations_keeps_less_for_backward_with_the_same_"
                                               "outputs_and_gradients",
    "model.wav2vec_ctc.checkpoint_activations": SPEED + "test_finetuning_checkpoint_activations_replaces_the_pretrained_value",
    **{f"model.wav2vec_ctc.{key}": f"{CTC}[{key}]" for key in (
        "mask_length", "mask_prob", "mask_selection", "mask_other", "no_mask_overlap", "require_same_masks",
        "mask_dropout", "mask_channel_length", "mask_channel_prob", "mask_channel_before", "mask_channel_selection",
        "mask_channel_other", "no_mask_channel_overlap", "apply_mask", "dropout_input", "final_dropout", "dropout",
        "attention_dropout", "activation_dropout", "layerdrop", "blank_weight")},
    "model.wav2vec_ctc.feature_grad_mult": EFFECTS + "test_finetuning_feature_grad_mult_lets_gradients_into_the_cnn",
    "model.wav2vec_ctc.freeze_finetune_updates": "tests/models/test_ctc.py::test_freeze_finetune_updates",
    "model.wav2vec_ctc.w2v_path": PRETRAINED_WEIGHTS,
    "model.wav2vec_ctc.no_pretrained_weights": PRETRAINED_WEIGHTS,
    "model.wav2vec_ctc.w2v_args": TASK + "test_w2v_args_build_the_encoder_without_reading_w2v_path",
    "model.wav2vec_ctc.normalize": TASK + "test_model_normalize_must_match_the_pretraining",
}

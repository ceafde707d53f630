"""Config files and command-line overrides: fairseq's recipes load, and every mistake names its key."""

import re
from pathlib import Path

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.data.config import AudioFinetuningConfig, AudioPretrainingConfig
from w2v2.train.config import CtcCriterionConfig, FinetuningConfig, PretrainingConfig
from w2v2.train.config_loading import bundled_config_names, load_train_config, validate_train_config
from w2v2.train.lr_schedules import PolynomialDecayConfig, TriStageConfig
from w2v2.train.optim import parse_betas

REPO = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "fairseq"
PRETRAINING = ["wav2vec2_base_librispeech", "wav2vec2_large_librivox", "demo_pretrain"]
FINETUNING = ["base_10m", "base_1h", "base_10h", "base_100h", "base_960h", "demo_ctc"]
REQUIRED = ["task.data=/data/manifest", "model.w2v_path=/data/wav2vec_small.pt"]


def load(name, *overrides, config_dir=None):
    """A bundled recipe with its required values given."""
    required = REQUIRED if name in FINETUNING or name == "tiny_ctc" else REQUIRED[:1]
    return load_train_config(config_dir, name, [*required, *overrides])


def error_of(name, *overrides, config_dir=None):
    with pytest.raises(W2v2Error) as caught:
        load(name, *overrides, config_dir=config_dir)
    return str(caught.value)


def test_every_recipe_is_bundled():
    assert sorted(PRETRAINING + FINETUNING) == bundled_config_names()


@pytest.mark.parametrize("name", PRETRAINING)
def test_pretraining_recipes_validate(name):
    cfg = load(name).cfg
    assert isinstance(cfg.model, Wav2Vec2Config) and isinstance(cfg.lr_scheduler, PolynomialDecayConfig)
    assert isinstance(cfg, PretrainingConfig) and cfg.task.data == "/data/manifest"


@pytest.mark.parametrize("name", FINETUNING)
def test_finetuning_recipes_validate(name):
    cfg = load(name).cfg
    assert isinstance(cfg.model, Wav2Vec2CtcConfig) and isinstance(cfg.lr_scheduler, TriStageConfig)
    assert isinstance(cfg.task, AudioFinetuningConfig) and cfg.task.labels == "ltr"
    assert isinstance(cfg, FinetuningConfig) and cfg.model.w2v_path == "/data/wav2vec_small.pt"


@pytest.mark.parametrize("name", ["pretraining/wav2vec2_base_librispeech", "finetuning/base_100h"])
def test_examples_folder_points_at_the_same_recipes(name):
    kind, recipe = name.split("/")
    from_examples = load(recipe, config_dir=str(REPO / "examples" / "wav2vec" / "config" / kind))
    assert from_examples.cfg == load(recipe).cfg


def test_base_pretraining_has_fairseqs_values():
    cfg = load("wav2vec2_base_librispeech").cfg
    assert cfg.optimization.lr == [5e-4] and cfg.optimization.max_update == 400000
    assert parse_betas(cfg.optimizer.adam_betas) == (0.9, 0.98)
    assert (cfg.optimizer.adam_eps, cfg.optimizer.weight_decay) == (1e-6, 0.01)
    assert (cfg.lr_scheduler.warmup_updates, cfg.lr_scheduler.total_num_update) == (32000, 400000.0)
    assert (cfg.dataset.max_tokens, cfg.task.max_sample_size, cfg.task.min_sample_size) == (1400000, 250000, 32000)
    assert cfg.distributed_training.distributed_world_size == 64 and cfg.common.fp16
    assert cfg.criterion.loss_weights == [0.1, 10.0] and cfg.criterion.infonce


def test_base_100h_has_fairseqs_values():
    cfg = load("base_100h").cfg
    assert cfg.optimization.lr == [3e-5] and cfg.optimizer.lr == [3e-5] and cfg.lr_scheduler.lr == [3e-5]
    assert (cfg.optimizer.adam_eps, cfg.optimizer.weight_decay) == (1e-8, 0.0)
    assert (cfg.optimization.max_update, cfg.optimization.update_freq) == (80000, [4])
    assert cfg.lr_scheduler.steps() == (8000, 32000, 40000) and cfg.lr_scheduler.final_lr_scale == 0.05
    assert (cfg.dataset.max_tokens, cfg.dataset.valid_subset) == (3200000, "dev_other")
    assert cfg.distributed_training.distributed_world_size == 2 and cfg.common.fp16
    assert cfg.checkpoint.best_checkpoint_metric == "wer"
    assert isinstance(cfg.criterion, CtcCriterionConfig) and cfg.criterion.sentence_avg
    model = cfg.model
    assert (model.mask_prob, model.mask_channel_prob, model.mask_channel_length) == (0.65, 0.5, 64)
    assert (model.layerdrop, model.activation_dropout, model.feature_grad_mult) == (0.1, 0.1, 0.0)
    assert model.freeze_finetune_updates == 0


@pytest.mark.parametrize(
    "name, max_update, lr, mask_channel_prob, layerdrop, freeze",
    [
        ("base_10m", 13000, 5e-5, 0.25, 0.1, 10000),
        ("base_1h", 13000, 5e-5, 0.25, 0.1, 10000),
        ("base_10h", 20000, 5e-5, 0.5, 0.05, 10000),
        ("base_100h", 80000, 3e-5, 0.5, 0.1, 0),
    ],
)
def test_finetuning_table(name, max_update, lr, mask_channel_prob, layerdrop, freeze):
    cfg = load(name).cfg
    assert (cfg.optimization.max_update, cfg.optimization.lr) == (max_update, [lr])
    assert (cfg.model.mask_channel_prob, cfg.model.layerdrop) == (mask_channel_prob, layerdrop)
    assert cfg.model.freeze_finetune_updates == freeze


@pytest.mark.parametrize("name", ["tiny_pretrain", "tiny_ctc"])
def test_fixture_configs_validate(name, fairseq_dir):
    candidates = (fairseq_dir / "configs", SHARED_FIXTURES / "configs")
    folders = [folder for folder in candidates if (folder / f"{name}.yaml").is_file()]
    if not folders:
        pytest.skip(f"{name}.yaml is in neither tests/fixtures nor ../shared/fixtures")
    cfg = load(name, config_dir=str(folders[0])).cfg
    assert cfg.common.cpu and cfg.optimization.max_update == 20


def test_saved_fairseq_cfg_validates_and_round_trips(fairseq_dir):
    saved = torch.load(fairseq_dir / "pretrain_init.pt", weights_only=True)["cfg"]
    cfg = validate_train_config(saved)
    assert isinstance(cfg.task, AudioPretrainingConfig) and cfg.lr_scheduler.total_num_update == 20.0
    written = cfg.to_dict()
    ours = {"common": {"compile", "compile_dynamic", "feature_cache"}}  # our own keys (docs/SPEED.md), at defaults
    for group in ["common", "checkpoint", "task", "dataset", "distributed_training", "criterion",
                  "optimization", "optimizer", "lr_scheduler", "bmuf", "ema"]:
        assert {k: v for k, v in written[group].items() if k not in ours.get(group, ())} == saved[group], group
    assert {k: written["common"][k] for k in ours["common"]} == {"compile": False, "compile_dynamic": None,
                                                                 "feature_cache": False}


def test_to_dict_reloads_to_the_same_config():
    cfg = load("base_10h").cfg
    assert validate_train_config(cfg.to_dict()) == cfg


def test_missing_required_values_are_named():
    with pytest.raises(W2v2Error) as caught:
        load_train_config(None, "base_100h", [])
    assert "`model.w2v_path`, `task.data` are required" in str(caught.value)
    assert "task.data=..." in str(caught.value)


def test_typed_groups_take_keys_absent_from_the_yaml():
    loaded = load("base_100h", "dataset.batch_size=8", "distributed_training.distributed_world_size=8",
                  "optimization.max_update=1000", "checkpoint.restore_file=/ckpt/last.pt")
    cfg = loaded.cfg
    assert cfg.dataset.batch_size == 8 and cfg.dataset.batch_size_valid == 8
    assert cfg.distributed_training.distributed_world_size == 8
    assert cfg.lr_scheduler.max_update == 1000.0 and cfg.lr_scheduler.steps() == (100, 400, 500)
    assert cfg.checkpoint.restore_file == "/ckpt/last.pt"


def test_misspelled_override_suggests_the_key():
    message = error_of("base_100h", "dataset.batch_sise=8")
    assert "`dataset.batch_sise` is not a key" in message and "`dataset.batch_size`" in message


def test_model_key_absent_from_yaml_needs_plus():
    message = error_of("base_100h", "model.mask_channel_before=true")
    assert "+model.mask_channel_before=" in message and "base_100h.yaml" in message
    assert load("base_100h", "+model.mask_channel_before=true").cfg.model.mask_channel_before


def test_plus_key_present_in_yaml_is_refused():
    assert "already in the config" in error_of("base_100h", "+task.normalize=true")


@pytest.mark.parametrize("override", ["+model.mask_prb=0.5", "model.mask_prb=0.5"])
def test_misspelled_model_key_suggests_the_key(override):
    message = error_of("base_100h", override)
    assert "`model.mask_prb`" in message and "`model.mask_prob`" in message


def test_misspelled_key_in_a_yaml_file_is_named(tmp_path):
    text = (REPO / "w2v2" / "configs" / "pretraining" / "demo_pretrain.yaml").read_text()
    (tmp_path / "typo.yaml").write_text(text.replace("max_tokens:", "max_token:"))
    message = error_of("typo", config_dir=str(tmp_path))
    assert "`dataset.max_token`" in message and "`dataset.max_tokens`" in message


def test_unknown_group_suggests_the_group():
    assert "Did you mean `optimization`?" in error_of("base_100h", "optimisation.max_update=5")


@pytest.mark.parametrize(
    "override, key, words",
    [
        ("optimization.max_update=abc", "optimization.max_update", "must be an integer, but is 'abc'"),
        ("common.fp16=maybe", "common.fp16", "must be a boolean"),
        ("lr_scheduler._name=cosine", "lr_scheduler._name", "must be one of polynomial_decay, tri_stage, fixed"),
        ("task._name=[1,2]", "task._name", "but is [1, 2] instead"),  # found by the config fuzzer
        ("criterion._name=wav2vec ~criterion.zero_infinity +criterion.infonce=true", "model._name", "must be wav2vec2 with the wav2vec"),
        ("distributed_training.ddp_backend=fully_sharded", "distributed_training.ddp_backend", "not supported"),
        ("optimizer.adam_betas=(0.9)", "optimizer.adam_betas", "must be two numbers"),
        # found by the config fuzzer: OmegaConf names no key for these two
        ("lr_scheduler.phase_ratio={a:1}", "lr_scheduler.phase_ratio", "must be a list of numbers or null, but is {'a': 1}"),
        ("lr_scheduler.phase_ratio=${common.seed}", "lr_scheduler.phase_ratio", "but is '${common.seed}' instead"),
    ],
)
def test_bad_values_name_the_key(override, key, words):
    message = error_of("base_100h", *override.split())
    assert f"`{key}`" in message and words in message


def test_delete_restores_the_default():
    assert load("base_100h", "~model.layerdrop").cfg.model.layerdrop == Wav2Vec2CtcConfig().layerdrop
    assert "not in the config" in error_of("base_100h", "~model.no_such_key")


def test_fairseq_quirks_are_accepted():
    overrides = ["optimization.lr=0.0001", "optimizer.adam_betas=(0.9,0.99)", "optimization.update_freq=2"]
    cfg = load("base_100h", *overrides).cfg
    assert cfg.optimization.lr == [1e-4] and cfg.lr_scheduler.lr == [1e-4] and cfg.optimizer.lr == [1e-4]
    assert parse_betas(cfg.optimizer.adam_betas) == (0.9, 0.99) and cfg.optimization.update_freq == [2]


def test_hydra_run_dir_is_returned():
    assert load("base_100h", "hydra.run.dir=/runs/ft").run_dir == "/runs/ft"
    assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", load("base_100h").run_dir)


def test_unknown_config_name_suggests_a_recipe():
    with pytest.raises(W2v2Error, match="Did you mean `base_100h`"):
        load_train_config(None, "base_100", [])


def test_defaults_lists_are_refused(tmp_path):
    (tmp_path / "composed.yaml").write_text("defaults:\n  - model: wav2vec2\n")
    with pytest.raises(W2v2Error, match="`defaults`"):
        load_train_config(str(tmp_path), "composed", [])


def test_non_strict_validation_drops_unknown_keys():
    tree = load("demo_pretrain").cfg.to_dict()
    tree["dataset"]["from_a_newer_fairseq"] = 1
    with pytest.raises(W2v2Error, match="`dataset.from_a_newer_fairseq`"):
        validate_train_config(tree)
    assert validate_train_config(tree, strict=False) == load("demo_pretrain").cfg


@pytest.mark.parametrize("name, override, message", [
    ("wav2vec2_base_librispeech", "criterion.infonce=false", "`criterion.infonce` must be true"),
    ("base_100h", "+criterion.post_process=wordpiece", "`criterion.post_process` must be one of letter"),
], ids=["infonce", "post_process"])
def test_criterion_variants_we_lack_are_refused(name, override, message):
    assert message in error_of(name, override)
    load(name)  # the one value that works: the recipe's

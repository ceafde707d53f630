"""Fuzzing the config reader: any override list or YAML file either gives a config or raises W2v2Error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.corpus import FIXTURE_CONFIGS
from w2v2.errors import W2v2Error
from w2v2.train.config_loading import group_keys, load_train_config

EXAMPLES = int(os.environ.get("W2V2_FUZZ_EXAMPLES", "120"))  # raise it for a longer hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CONFIGS = ("tiny_pretrain", "tiny_ctc")
SCHEMAS = {"common": None, "checkpoint": None, "dataset": None, "distributed_training": None, "optimization": None,
           "task": "audio_finetuning", "model": "wav2vec_ctc", "criterion": "ctc", "lr_scheduler": "tri_stage",
           "optimizer": "adam"}
KEYS = sorted({f"{group}.{key}" for group, name in SCHEMAS.items() for key in group_keys(group, name)}
              | {f"model.{key}" for key in group_keys("model", "wav2vec2")} | {"hydra.run.dir", "model", "task._name"})
# Values that have broken parsers before: Hydra syntax, YAML literals, interpolations, extremes.
TRICKY = st.sampled_from(["null", "[", "[1,2]", "{a: 1}", "???", "${common.seed}", "${nope}", "'x'", "(0.9,0.98)",
                          "nan", "inf", "-inf", "-1", "1e309", "0", "1.5", "true", "[]", "''", "a=b", "\\", "$"])
VALUE = TRICKY | st.integers(-10**12, 10**12).map(str) | st.floats().map(str) | st.text(max_size=6)
KEY = st.sampled_from(KEYS) | st.sampled_from(KEYS) | st.text(max_size=8)  # mostly real keys
OVERRIDE = st.tuples(st.sampled_from(["", "", "", "+", "~"]), KEY, st.sampled_from(["=", "=", ""]), VALUE).map("".join)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_data")


def loads_or_explains(config_dir: str, name: str, overrides) -> None:
    try:
        loaded = load_train_config(config_dir, name, overrides)
    except W2v2Error as error:
        assert str(error).strip()
        return
    assert loaded.cfg.model is not None and loaded.run_dir


@FUZZ
@given(name=st.sampled_from(CONFIGS), overrides=st.lists(OVERRIDE, max_size=4))
def test_overrides_load_or_explain(data_dir: Path, name: str, overrides):
    required = [f"task.data={data_dir}"] + (["model.w2v_path=/x.pt"] if name == "tiny_ctc" else [])
    loads_or_explains(str(FIXTURE_CONFIGS), name, required + overrides)


@FUZZ
@given(name=st.sampled_from(CONFIGS), data=st.data())
def test_mutated_yaml_loads_or_explains(tmp_path_factory, name: str, data):
    lines = (FIXTURE_CONFIGS / f"{name}.yaml").read_text().replace("???", "/x").splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["delete", "value", "duplicate", "insert"]))
        if action == "delete":
            del lines[index]
        elif action == "value" and ":" in lines[index]:
            lines[index] = lines[index].split(":", 1)[0] + ": " + data.draw(VALUE)
        elif action == "duplicate":
            lines.insert(index, lines[index])
        else:
            lines.insert(index, data.draw(st.text(max_size=12)))
    folder = tmp_path_factory.mktemp("fuzz_yaml", numbered=True)
    (folder / "fuzz.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    loads_or_explains(str(folder), "fuzz", [])

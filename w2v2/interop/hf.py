"""Hugging Face `transformers` folders to and from our (fairseq's) checkpoints, needing neither library.

Export writes `Wav2Vec2ForPreTraining` or `Wav2Vec2ForCTC` (+ the `Wav2Vec2Processor` files) with the
weights in safetensors; import turns such a folder into fairseq's checkpoint dict, which
`load_checkpoint_file` returns for a folder path, so `load_model` and `model.w2v_path` take one too.
The name tables are in `hf_mapping`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch
from torch import nn

from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error
from w2v2.fileio import write_texts_atomically
from w2v2.interop.checkpoints import Model, load_model, model_from_checkpoint, save_checkpoint
from w2v2.interop.hf_mapping import (Conversion, hf_config, our_model_group, weights_from_hf, weights_to_hf)
from w2v2.interop.safetensors_io import (is_safetensors, read_safetensors, save_safetensors_checkpoint,
                                         write_safetensors)
from w2v2.models.ctc import Wav2Vec2Ctc

PathLike = Union[str, os.PathLike]
# transformers' names of fairseq's dictionary indices 0-3 (0, the CTC blank, is its pad token).
HF_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
SPECIAL_KEYS = ("pad_token", "bos_token", "eos_token", "unk_token")
WORD_DELIMITER = "|"


@dataclass
class HfConversion:
    """What an export or import wrote: the architecture, and each tensor copied, made or left out."""

    architecture: str
    output: Path
    copied: int
    added: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per fact, for the command line."""
        lines = [f"wrote {self.architecture} to {self.output}: {self.copied} tensors copied unchanged"]
        lines += [f"  added {note}" for note in self.added] + [f"  left out {note}" for note in self.dropped]
        return "\n".join(lines)


def is_hf_folder(path: Path) -> bool:
    """Whether `path` is a folder that looks like a transformers model (it has a config.json)."""
    return path.is_dir() and (path / "config.json").is_file()


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _input_settings(model: Model) -> Tuple[bool, int]:
    """Whether the model takes normalised waveforms, and its sample rate."""
    task = (getattr(model, "fairseq_cfg", None) or {}).get("task") or {}
    normalize = model.cfg.normalize if isinstance(model, Wav2Vec2Ctc) else bool(task.get("normalize", False))
    return normalize, int(task.get("sample_rate") or 16000)


def _processor_files(dictionary: Dictionary, normalize: bool, sample_rate: int, ctc: bool) -> Dict[str, str]:
    """preprocessor_config.json and, for CTC, the tokenizer's vocab.json / tokenizer_config / special tokens."""
    extractor = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                 "sampling_rate": sample_rate, "padding_value": 0.0, "padding_side": "right",
                 "do_normalize": normalize, "return_attention_mask": True}  # our models take padding masks
    if not ctc:
        return {"preprocessor_config.json": _json_text(extractor)}
    vocab = {name: index for index, name in enumerate(HF_SPECIALS + tuple(dictionary.symbols[4:]))}
    specials = dict(zip(SPECIAL_KEYS, HF_SPECIALS))
    tokenizer = {"tokenizer_class": "Wav2Vec2CTCTokenizer", "processor_class": "Wav2Vec2Processor", **specials,
                 "word_delimiter_token": WORD_DELIMITER, "replace_word_delimiter_char": " ", "do_lower_case": False}
    return {"preprocessor_config.json": _json_text({**extractor, "processor_class": "Wav2Vec2Processor"}),
            "vocab.json": _json_text(vocab), "tokenizer_config.json": _json_text(tokenizer),
            "special_tokens_map.json": _json_text(specials)}


def export_hf(checkpoint: Union[PathLike, nn.Module], output_dir: PathLike, trusted: bool = False) -> HfConversion:
    """Write a checkpoint (or a loaded model) as a transformers folder; returns what was converted."""
    model = checkpoint if isinstance(checkpoint, nn.Module) else load_model(checkpoint, trusted=trusted)
    where = str(checkpoint) if not isinstance(checkpoint, nn.Module) else "the model"
    ctc = isinstance(model, Wav2Vec2Ctc)
    network = model.w2v_encoder.w2v_model if ctc else model
    dictionary = getattr(model, "dictionary", None)
    state = model.state_dict()
    vocab_size = state["w2v_encoder.proj.weight"].size(0) if ctc else None
    if ctc and (dictionary is None or len(dictionary) != vocab_size):
        found = "none" if dictionary is None else f"{len(dictionary)} symbols"
        raise W2v2Error(f"{where}: a CTC model needs its letter dictionary ({vocab_size} symbols) for the "
                        f"tokenizer's vocab.json, but the checkpoint stores {found}.")
    config = hf_config(network, model.cfg if ctc else None, vocab_size)
    config["dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")  # as stored: fp16 stays fp16
    masks = config["mask_time_prob"] > 0 or config["mask_feature_prob"] > 0  # else transformers has no mask_emb
    conversion = weights_to_hf(state, ctc, network.cfg.extractor_mode == "layer_norm", network.cfg.encoder_embed_dim,
                               keep_mask_emb=masks, where=where)
    normalize, sample_rate = _input_settings(model)
    output = Path(output_dir)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise W2v2Error(f"cannot create the output folder {output}: {error.strerror}.") from error
    write_safetensors(output / "model.safetensors", conversion.weights, {"format": "pt"})
    texts = {"config.json": _json_text(config), **_processor_files(dictionary, normalize, sample_rate, ctc)}
    write_texts_atomically({output / name: text for name, text in texts.items()})
    return HfConversion(config["architectures"][0], output, conversion.copied, conversion.added, conversion.dropped)


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise W2v2Error(f"cannot read {path}: {error.strerror}.") from error
    except ValueError as error:
        raise W2v2Error(f"{path} is not valid JSON: {error}.") from error
    if not isinstance(value, dict):
        raise W2v2Error(f"{path} must hold a JSON object, but holds a {type(value).__name__}.")
    return value


def read_hf_weights(folder: Path) -> Dict[str, torch.Tensor]:
    """The state dict of a transformers folder: model.safetensors (or its shards), else pytorch_model.bin."""
    if (folder / "model.safetensors").is_file():
        return read_safetensors(folder / "model.safetensors")[0]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weights: Dict[str, torch.Tensor] = {}
        for shard in sorted(set((_read_json(index).get("weight_map") or {}).values())):
            weights.update(read_safetensors(folder / shard)[0])
        return weights
    binary = folder / "pytorch_model.bin"
    if not binary.is_file():
        raise W2v2Error(f"{folder} has a config.json but no weights: it must hold model.safetensors (or "
                        "model.safetensors.index.json and its shards) or pytorch_model.bin.")
    try:
        weights = torch.load(binary, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses anything but tensors, in several exception types
        lines = str(error).splitlines() or [""]
        reason = next((line.strip() for line in lines if "GLOBAL" in line), lines[0])
        raise W2v2Error(f"{binary} is not a plain state dict of tensors (read with weights_only=True, since "
                        f"unpickling more could run code): {reason}") from error
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise W2v2Error(f"{binary} must hold a dict of tensors (a state dict), but does not.")
    return weights


def _is_ctc(config: Dict[str, Any], weights: Dict[str, torch.Tensor], where: str) -> bool:
    """True for Wav2Vec2ForCTC weights, False for Wav2Vec2ForPreTraining; anything else is refused."""
    if "lm_head.weight" in weights:
        return True
    if "quantizer.codevectors" in weights:
        return False
    names = ", ".join(config.get("architectures") or []) or "a model"
    raise W2v2Error(f"{where} holds {names} with neither a CTC head (lm_head) nor the pretraining heads "
                    "(quantizer, project_q, project_hid); only Wav2Vec2ForCTC and Wav2Vec2ForPreTraining "
                    "folders can be imported.")


def _feature_extractor(folder: Path, config: Dict[str, Any]) -> Tuple[bool, int]:
    """(do_normalize, sampling_rate) from preprocessor_config.json or transformers 5's processor_config.json;
    without either, fairseq's convention: normalised input exactly for layer-norm (LARGE) extractors."""
    if (folder / "preprocessor_config.json").is_file():
        extractor = _read_json(folder / "preprocessor_config.json")
    elif (folder / "processor_config.json").is_file():
        extractor = _read_json(folder / "processor_config.json").get("feature_extractor") or {}
    else:
        extractor = {"do_normalize": config.get("feat_extract_norm") == "layer"}
    return bool(extractor.get("do_normalize", True)), int(extractor.get("sampling_rate") or 16000)


def _token(value: Any) -> Any:
    """A special token as tokenizer files store it: a string, or a dict with its `content`."""
    return value.get("content") if isinstance(value, dict) else value


def _dictionary(folder: Path, vocab_size: int) -> Dictionary:
    """Our letter dictionary from the tokenizer's vocab.json, whose indices 0-3 must be fairseq's specials."""
    vocab = _read_json(folder / "vocab.json")
    if any(isinstance(v, dict) for v in vocab.values()):
        raise W2v2Error(f"{folder}/vocab.json holds one vocabulary per language (an adapter model); only a "
                        "single vocabulary can be imported.")
    settings: Dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            settings.update(_read_json(folder / name))
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    if sorted(vocab.values()) != list(range(vocab_size)):
        raise W2v2Error(f"{folder}/vocab.json must number its tokens 0 to {vocab_size - 1}, one per output of "
                        f"lm_head, but it has {len(vocab)} tokens numbered {min(vocab.values(), default=0)} to "
                        f"{max(vocab.values(), default=0)}.")
    specials = [_token(settings.get(key, default)) for key, default in zip(SPECIAL_KEYS, HF_SPECIALS)]
    if tokens[:4] != specials:
        raise W2v2Error(f"{folder}/vocab.json must start with the pad (CTC blank), bos, eos and unk tokens "
                        f"{specials} at indices 0-3, as fairseq's dictionaries do, but starts with {tokens[:4]}; "
                        "a vocabulary ordered otherwise has no fairseq equivalent.")
    delimiter = _token(settings.get("word_delimiter_token", WORD_DELIMITER))
    if delimiter != WORD_DELIMITER:
        raise W2v2Error(f"the tokenizer in {folder} separates words with {delimiter!r}; fairseq's letter "
                        f"dictionaries use {WORD_DELIMITER!r}, so it cannot be imported as it is.")
    dictionary = Dictionary(tokens[4:])
    if len(dictionary) != vocab_size:
        raise W2v2Error(f"{folder}/vocab.json repeats one of fairseq's special symbols {list(dictionary.symbols[:4])} "
                        "after index 3, so it has no fairseq equivalent.")
    return dictionary


def convert_hf_folder(folder: PathLike) -> Tuple[Dict[str, Any], Conversion]:
    """fairseq's checkpoint dict (`cfg`, `model`, `task_state`) for a transformers folder, and what was converted."""
    folder = Path(folder)
    where = str(folder)
    config = _read_json(folder / "config.json")
    weights = read_hf_weights(folder)
    ctc = _is_ctc(config, weights, where)
    normalize, sample_rate = _feature_extractor(folder, config)
    group = our_model_group(config, ctc, normalize, where)
    network = group["w2v_args"]["model"] if ctc else group
    conversion = weights_from_hf(weights, ctc, network["extractor_mode"] == "layer_norm", where)
    # fairseq needs `task.data` (and a fine-tuned model's `w2v_path`) to be strings, though it reads
    # nothing there when loading; they name where the model came from.
    origin = str(folder.resolve())
    pretraining_task = {"_name": "audio_pretraining", "data": origin, "normalize": normalize,
                        "sample_rate": sample_rate}
    task_state: Dict[str, Any] = {}
    if ctc:
        group["w2v_args"]["task"] = pretraining_task
        group["w2v_path"] = origin
        task = {**pretraining_task, "_name": "audio_finetuning", "labels": "ltr"}
        task_state["target_dictionary"] = _dictionary(folder, weights["lm_head.weight"].size(0))
    else:
        task = pretraining_task
    state = {"args": None, "cfg": {"task": task, "model": group}, "model": conversion.weights, "task_state": task_state}
    return state, conversion


def hf_checkpoint_dict(folder: PathLike) -> Dict[str, Any]:
    """fairseq's checkpoint dict for a transformers folder (what `load_checkpoint_file` returns for one)."""
    return convert_hf_folder(folder)[0]


def import_hf(folder: PathLike, output: PathLike) -> HfConversion:
    """Write a transformers folder as our checkpoint: fairseq's `.pt` layout, or safetensors by suffix."""
    state, conversion = convert_hf_folder(folder)
    model = model_from_checkpoint(state, str(folder))
    output = Path(output)
    if is_safetensors(output):
        save_safetensors_checkpoint(output, model)
    else:
        save_checkpoint(output, model)
    kind = "wav2vec_ctc" if isinstance(model, Wav2Vec2Ctc) else "wav2vec2"
    return HfConversion(f"a {kind} checkpoint", output, conversion.copied, conversion.added, conversion.dropped)

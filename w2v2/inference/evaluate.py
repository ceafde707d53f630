"""Word and letter error rates of a fine-tuned CTC model on a manifest subset, greedy or with an n-gram
LM; the hypotheses files of fairseq's `infer.py --results-path`, and decoding speed.

The feature encoder's group norm (BASE models) normalises over the padded length of a batch, so the
batch an utterance lands in can change its letters. By default utterances are therefore batched, read
and computed as the run's own validation did (the checkpoint's `dataset`, `task` and `common` groups),
which reproduces the logged `valid_wer` and `valid_uer`; per-utterance mode encodes every utterance
alone, which no batching can change.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from tqdm import tqdm

from w2v2.data.datasets import FinetuningDataset
from w2v2.data.dictionary import Dictionary
from w2v2.data.loader import build_dataloader
from w2v2.devices import pick_device, synchronize
from w2v2.devices import precision as device_precision
from w2v2.errors import W2v2Error
from w2v2.fileio import write_texts_atomically
from w2v2.inference.decoding import Decoder, LmOptions, alignment_scores, build_decoder
from w2v2.inference.features import check_finite, expects_normalized_input
from w2v2.interop.checkpoints import load_model
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.train.losses import error_counts, greedy_decode, letters_to_words

PathLike = Union[str, os.PathLike]
PRECISIONS = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}  # autocast dtype -> name


@dataclass
class Utterance:
    """One decoded utterance: its dataset index, its audio file (as the manifest lists it) and the hypothesis and
    reference, as words and letters."""

    id: int
    hypothesis: str
    reference: str
    hypothesis_units: str
    reference_units: str
    path: str = ""


@dataclass
class EvalResult:
    """Error counts and speed of one evaluation; rates are percentages, as fairseq logs them."""

    checkpoint: str
    subset: str
    decoder: str
    batching: str = ""
    precision: str = "fp32"
    utterances: int = 0
    left_out: int = 0  # utterances that validation leaves out too: over the checkpoint's budget, under min_sample_size
    word_errors: int = 0
    words: int = 0
    letter_errors: int = 0
    letters: int = 0
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0
    details: List[Utterance] = field(default_factory=list, repr=False)

    @property
    def wer(self) -> float:
        """Word error rate, percent."""
        return 100.0 * self.word_errors / max(self.words, 1)

    @property
    def uer(self) -> float:
        """Letter (unit) error rate, percent; word separators count as letters."""
        return 100.0 * self.letter_errors / max(self.letters, 1)

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio decoded per second of wall time (reading, network and search)."""
        return self.audio_seconds / max(self.decode_seconds, 1e-9)

    def to_json(self) -> Dict[str, Any]:
        """The numbers without the per-utterance details."""
        numbers = {k: v for k, v in asdict(self).items() if k != "details"}
        return {**numbers, "wer": self.wer, "uer": self.uer, "realtime_factor": self.realtime_factor}

    def line(self) -> str:
        """One-line summary for the terminal."""
        return (f"{self.subset}: WER {self.wer:.2f} % ({self.word_errors}/{self.words} words), "
                f"UER {self.uer:.2f} % ({self.letter_errors}/{self.letters} letters), {self.utterances} utterances, "
                f"{self.audio_seconds:.1f} s of audio in {self.decode_seconds:.1f} s "
                f"({self.realtime_factor:.1f}x real time), {self.decoder}, {self.precision}; {self.batching}"
                + (f"; {self.left_out} utterances left out as validation leaves them out (longer than the "
                   "batch budget or shorter than task.min_sample_size)" if self.left_out else ""))


@dataclass(frozen=True)
class Batching:
    """How utterances are grouped: at most `max_tokens` samples and `batch_size` utterances per batch,
    a multiple of `batch_size_multiple` utterances when a batch has that many."""

    max_tokens: Optional[int]
    batch_size: Optional[int]
    description: str
    from_checkpoint: bool = False  # utterances over the budget are then treated as validation treats them
    batch_size_multiple: int = 1
    skip_long: bool = False  # validation leaves utterances over the budget out (else it refuses them)


PER_UTTERANCE = Batching(None, 1, "one utterance per batch (--per-utterance)")


def validation_batching(cfg: Mapping[str, Any]) -> Batching:
    """The batching of the run's validation, from the checkpoint's `dataset` group, as the trainer reads it
    (`w2v2.train.setup.build_pipeline`): `max_tokens_valid` / `batch_size_valid`, when unset the training
    `max_tokens` / `batch_size` (fairseq's defaults); with neither, the longest utterance is the budget;
    `required_batch_size_multiple` (default 8) and `skip_invalid_size_inputs_valid_test` (default false)."""
    if not isinstance(cfg.get("dataset"), Mapping):
        return Batching(None, 1, "one utterance per batch: the checkpoint records no validation batching "
                        "(it has no `dataset` group)", from_checkpoint=True)
    group = cfg["dataset"]
    limits: Dict[str, Optional[int]] = {}
    shown = []
    for name, unit in (("max_tokens", "samples"), ("batch_size", "utterances")):
        key = f"{name}_valid" if group.get(f"{name}_valid") else name
        value = group.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise W2v2Error(f"the checkpoint's `dataset.{key}` must be a positive integer or null, but is "
                            f"{value!r} instead.")
        limits[name] = value
        if value is not None:
            shown.append(f"{value} {unit} (dataset.{key})")
    described = " and ".join(shown) if shown else "the longest utterance's samples (no dataset.max_tokens or batch_size)"
    multiple = group.get("required_batch_size_multiple", 8)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise W2v2Error(f"the checkpoint's `dataset.required_batch_size_multiple` must be a positive integer, but "
                        f"is {multiple!r} instead.")
    if multiple > 1:
        described += f", cut to multiples of {multiple} utterances (dataset.required_batch_size_multiple)"
    return Batching(limits["max_tokens"], limits["batch_size"], f"batches as in validation: at most {described}",
                    from_checkpoint=True, batch_size_multiple=multiple,
                    skip_long=bool(group.get("skip_invalid_size_inputs_valid_test", False)))


def choose_batching(cfg: Mapping[str, Any], max_tokens: Optional[int], batch_size: Optional[int],
                    per_utterance: bool) -> Batching:
    """`--per-utterance`, else the limits given (which replace the checkpoint's), else validation's."""
    for flag, value in (("--max-tokens", max_tokens), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise W2v2Error(f"`{flag}` must be a positive number, but is {value} instead.")
        if value is not None and per_utterance:
            raise W2v2Error(f"`{flag}` has no effect with `--per-utterance`, which encodes every utterance "
                            "alone; give one or the other.")
    if per_utterance:
        return PER_UTTERANCE
    if max_tokens is None and batch_size is None:
        return validation_batching(cfg)
    shown = [f"{max_tokens} samples (--max-tokens)"] * (max_tokens is not None)
    shown += [f"{batch_size} utterances (--batch-size)"] * (batch_size is not None)
    return Batching(max_tokens, batch_size, f"batches of at most {' and '.join(shown)}")


def autocast_dtype(cfg: Mapping[str, Any], precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of `precision`: fp32 (none), fp16, bf16, or auto, the run's `common.fp16` /
    `common.bf16` / `common.amp` as its validation used them (amp validates in fp32; fp32 for an fp16 run
    on a CPU, which has no fp16 kernels)."""
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise W2v2Error(f"`--precision` must be auto, fp32, fp16 or bf16, but is {precision!r} instead.")
    if precision == "fp16" and device.type == "cpu":
        raise W2v2Error("`--precision fp16` needs a GPU or NPU; on the CPU use bf16 or fp32.")
    common = cfg.get("common") or {}
    if precision != "auto":
        return device_precision(device, precision == "fp16", precision == "bf16").validation_dtype
    float16 = device.type != "cpu"
    return device_precision(device, bool(common.get("fp16")) and float16, bool(common.get("bf16")),
                            bool(common.get("amp")) and float16).validation_dtype


def evaluate(
    checkpoint: PathLike,
    data: PathLike,
    subset: str,
    lm: Optional[LmOptions] = None,
    *,
    max_tokens: Optional[int] = None,
    batch_size: Optional[int] = None,
    per_utterance: bool = False,
    precision: str = "auto",
    device: str = "auto",
    trusted: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Decode `{data}/{subset}.tsv` with the CTC model of `checkpoint` and count errors against its labels.

    Without `max_tokens` and `batch_size` the utterances are batched as the run's validation batched them;
    `per_utterance` encodes each alone. `precision` auto follows the run's `common.fp16` / `bf16`."""
    model = load_ctc_model(checkpoint, trusted)
    cfg = model.fairseq_cfg
    batching = choose_batching(cfg, max_tokens, batch_size, per_utterance)
    target_device = pick_device(device)
    dtype = autocast_dtype(cfg, precision, target_device)
    data = Path(data)
    name = resolve_subset(data, subset)
    dictionary = model_dictionary(model, data)
    decoder = build_decoder(dictionary, lm)
    dataset = validation_dataset(cfg, data, name, dictionary, expects_normalized_input(model))
    refuse_long_utterances(dataset, name, batching)
    sampler = dataset.batch_sampler(batching.max_tokens, batching.batch_size, drop_long=batching.skip_long,
                                    shuffle=False, batch_size_multiple=batching.batch_size_multiple)
    loader = build_dataloader(dataset, sampler)
    result = EvalResult(str(checkpoint), name, decoder.description, batching.description, PRECISIONS[dtype],
                        left_out=sampler.num_dropped + dataset.num_skipped)
    model.to(target_device)
    autocast = torch.autocast(target_device.type, dtype) if dtype is not None else contextlib.nullcontext()
    started = time.perf_counter()
    with autocast:
        for batch in tqdm(loader, desc=f"evaluate {name}", unit="batch", disable=not progress):
            _decode_batch(model, decoder, batch, dataset, target_device, result)
    synchronize(target_device)
    if not result.utterances:
        listed = len(dataset) + dataset.num_skipped
        raise W2v2Error(f"{data / (name + '.tsv')} yields no utterance to evaluate ({listed} listed, {result.left_out} "
                        "left out as validation leaves them out), so there is no error rate to report.")
    result.decode_seconds = time.perf_counter() - started
    result.details.sort(key=lambda utterance: utterance.id)
    return result


def refuse_long_utterances(dataset: FinetuningDataset, name: str, batching: Batching) -> None:
    """Raise W2v2Error for utterances over the budget, unless validation left them out (`skip_long`)."""
    too_long = dataset.longer_than(batching.max_tokens)
    if not len(too_long) or batching.skip_long:
        return
    longest = int(dataset.sizes[too_long].max())
    if not batching.from_checkpoint:
        raise W2v2Error(f"`--max-tokens` must be at least the longest utterance of {name}, {longest} "
                        f"samples, but is {batching.max_tokens} instead.")
    raise W2v2Error(f"{len(too_long)} utterances of {name} are longer than the checkpoint's validation budget of "
                    f"{batching.max_tokens} samples (the longest has {longest}), and the run's validation refuses "
                    "such utterances (its `dataset.skip_invalid_size_inputs_valid_test` is false); pass "
                    f"`--max-tokens {longest}` or more, or `--per-utterance`.")


def validation_dataset(cfg: Mapping[str, Any], data: Path, name: str, dictionary: Dictionary,
                       normalize: bool) -> FinetuningDataset:
    """The subset read as the run read its validation data: the checkpoint's `task.labels` (default ltr),
    `sample_rate` and `min_sample_size` (shorter files left out), with fairseq's defaults."""
    task = cfg.get("task") or {}
    labels = data / f"{name}.{task.get('labels') or 'ltr'}"
    if not labels.is_file():
        raise W2v2Error(f"the labels of {name} must be in {labels} (the checkpoint's task.labels), but that "
                        "file does not exist.")
    return FinetuningDataset.from_manifest(data / f"{name}.tsv", labels, dictionary, normalize=normalize,
                                           sample_rate=int(task.get("sample_rate") or 16000),
                                           min_sample_size=int(task.get("min_sample_size") or 0))


def load_ctc_model(checkpoint: PathLike, trusted: bool, letters: bool = False) -> Wav2Vec2Ctc:
    """The fine-tuned model of `checkpoint`; a pretrained-only model cannot transcribe. With `letters`, the
    checkpoint must store its dictionary (nothing else says which letter each output is)."""
    model = load_model(checkpoint, trusted=trusted)
    if not isinstance(model, Wav2Vec2Ctc):
        raise W2v2Error(f"`--checkpoint` must be a fine-tuned CTC model (wav2vec_ctc), but {checkpoint} holds a "
                        "pretrained wav2vec2 model instead; fine-tune it first.")
    if letters and model.dictionary is None:
        raise W2v2Error(f"checkpoint {checkpoint} stores no dictionary (no task_state.target_dictionary), so its "
                        "outputs cannot be turned into letters; use a checkpoint fine-tuned by fairseq or w2v2.")
    return model


def resolve_subset(data: Path, subset: str) -> str:
    """The manifest name of `subset` in `data`, accepting `dev_clean` and `dev-clean` alike."""
    if not data.is_dir():
        raise W2v2Error(f"`--data` must be a folder of fairseq manifests, but {data} is not a folder.")
    for name in dict.fromkeys((subset, subset.replace("-", "_"), subset.replace("_", "-"))):
        if (data / f"{name}.tsv").is_file():
            return name
    available = ", ".join(sorted(path.stem for path in data.glob("*.tsv"))) or "none"
    raise W2v2Error(f"`--subset` must name a manifest in {data}, but {subset}.tsv does not exist "
                    f"(available: {available}).")


def model_dictionary(model: Wav2Vec2Ctc, data: Path) -> Dictionary:
    """The checkpoint's letters, else `{data}/dict.ltr.txt`; their number must match the model's outputs."""
    dictionary = model.dictionary
    source = "the checkpoint"
    if dictionary is None:
        path = data / "dict.ltr.txt"
        if not path.is_file():
            raise W2v2Error(f"the checkpoint stores no dictionary, so {path} must exist, but it does not; "
                            "copy the dict.ltr.txt the model was fine-tuned with there.")
        dictionary, source = Dictionary.load(path), str(path)
    outputs = model.w2v_encoder.proj.out_features
    if len(dictionary) != outputs:
        raise W2v2Error(f"the dictionary from {source} must have one symbol per model output, {outputs}, "
                        f"but has {len(dictionary)} instead.")
    return dictionary


def _paths(batch: Dict[str, Any], dataset: FinetuningDataset, rows: Optional[torch.Tensor] = None) -> str:
    """The audio files of a batch (of its `rows` when given), for error messages."""
    ids = batch["id"] if rows is None else batch["id"][rows]
    return ", ".join(str(dataset.root / dataset.paths[index]) for index in ids.tolist())


@torch.no_grad()
def _decode_batch(model: Wav2Vec2Ctc, decoder: Decoder, batch: Dict[str, Any], dataset: FinetuningDataset,
                  device: torch.device, result: EvalResult) -> None:
    """Decode one padded batch and add its counts and utterances to `result`."""
    dictionary = dataset.dictionary
    finite = torch.isfinite(batch["net_input"]["source"]).all(dim=-1)
    if not bool(finite.all()):
        raise W2v2Error(f"audio files {_paths(batch, dataset, ~finite)} hold NaN or infinite samples; the model's "
                        "output on them would be NaN, so they were refused. Re-export them or leave them out of "
                        "the manifest.")
    net_input = {key: value.to(device) for key, value in batch["net_input"].items()}
    net_output = model(**net_input)
    lprobs = model.get_normalized_probs(net_output, log_probs=True)  # (T, B, V)
    check_finite(lprobs, f"audio files {_paths(batch, dataset)}")
    padding = net_output["padding_mask"]
    lengths = (~padding).long().sum(-1).cpu() if padding is not None else torch.full((lprobs.size(1),), lprobs.size(0))
    scores = alignment_scores(decoder.alignments(lprobs, lengths), len(dictionary))
    counts = error_counts(scores, lengths, batch["target"], dictionary)
    result.utterances += len(batch["id"])
    result.word_errors += counts["w_errors"]
    result.words += counts["w_total"]
    result.letter_errors += counts["c_errors"]
    result.letters += counts["c_total"]
    result.audio_seconds += batch["audio_seconds"]
    # The counts keep predicted `<pad>`s as letters, as fairseq's validation does; people see text only.
    units = greedy_decode(scores, lengths, dictionary.bos())
    for index, tokens, target in zip(batch["id"].tolist(), units, batch["target"]):
        hypothesis_units, reference_units = dictionary.text(tokens), dictionary.text(target)
        result.details.append(Utterance(index, _words(hypothesis_units), _words(reference_units),
                                        hypothesis_units, reference_units, dataset.paths[index]))


def _words(units: str) -> str:
    """Words of letter units, single-spaced."""
    return " ".join(letters_to_words(units).split())


def write_results(result: EvalResult, results_path: PathLike) -> List[Path]:
    """fairseq's `hypo.word-*`, `hypo.units-*`, `ref.word-*`, `ref.units-*` files and a JSON summary."""
    folder = Path(results_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise W2v2Error(f"`--results-path` {folder} cannot be created: {error.strerror}.") from error
    tag = f"{Path(result.checkpoint).name}-{result.subset}"
    columns = {"hypo.word": "hypothesis", "hypo.units": "hypothesis_units",
               "ref.word": "reference", "ref.units": "reference_units"}
    outputs = {folder / f"{prefix}-{tag}.txt": "".join(f"{getattr(u, column)} (None-{u.id})\n" for u in result.details)
               for prefix, column in columns.items()}
    outputs[folder / f"result-{tag}.json"] = json.dumps(result.to_json(), indent=2) + "\n"
    write_texts_atomically(outputs)
    return list(outputs)

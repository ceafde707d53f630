"""Word and letter error rates of a fine-tuned CTC model on a manifest subset, greedy or with an n-gram
LM; the hypotheses files of fairseq's `infer.py --results-path`, and decoding speed."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from tqdm import tqdm

from w2v2.data.datasets import FinetuningDataset
from w2v2.data.dictionary import Dictionary
from w2v2.data.loader import build_dataloader
from w2v2.devices import pick_device, synchronize
from w2v2.errors import W2v2Error
from w2v2.fileio import write_texts_atomically
from w2v2.inference.decoding import Decoder, LmOptions, alignment_scores, build_decoder
from w2v2.inference.features import expects_normalized_input
from w2v2.interop.checkpoints import load_model
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.train.losses import error_counts, greedy_decode, letters_to_words

PathLike = Union[str, os.PathLike]


@dataclass
class Utterance:
    """One decoded utterance: its dataset index and the hypothesis and reference, as words and letters."""

    id: int
    hypothesis: str
    reference: str
    hypothesis_units: str
    reference_units: str


@dataclass
class EvalResult:
    """Error counts and speed of one evaluation; rates are percentages, as fairseq logs them."""

    checkpoint: str
    subset: str
    decoder: str
    utterances: int = 0
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
                f"({self.realtime_factor:.1f}x real time), {self.decoder}")


def evaluate(
    checkpoint: PathLike,
    data: PathLike,
    subset: str,
    lm: Optional[LmOptions] = None,
    *,
    max_tokens: int = 1_600_000,
    device: str = "auto",
    trusted: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Decode `{data}/{subset}.tsv` with the CTC model of `checkpoint` and count errors against `.ltr`."""
    model = load_ctc_model(checkpoint, trusted)
    data = Path(data)
    name = resolve_subset(data, subset)
    dictionary = model_dictionary(model, data)
    decoder = build_decoder(dictionary, lm)
    dataset = FinetuningDataset.from_manifest(data / f"{name}.tsv", data / f"{name}.ltr", dictionary,
                                              normalize=expects_normalized_input(model))
    if len(dataset) and int(dataset.sizes.max()) > max_tokens:
        raise W2v2Error(f"`--max-tokens` must be at least the longest utterance of {name}, {dataset.sizes.max()} "
                        f"samples, but is {max_tokens} instead.")
    loader = build_dataloader(dataset, dataset.batch_sampler(max_tokens, shuffle=False))
    result = EvalResult(str(checkpoint), name, decoder.description)
    target_device = pick_device(device)
    model.to(target_device)
    started = time.perf_counter()
    for batch in tqdm(loader, desc=f"evaluate {name}", unit="batch", disable=not progress):
        _decode_batch(model, decoder, batch, dictionary, target_device, result)
    synchronize(target_device)
    result.decode_seconds = time.perf_counter() - started
    result.details.sort(key=lambda utterance: utterance.id)
    return result


def load_ctc_model(checkpoint: PathLike, trusted: bool) -> Wav2Vec2Ctc:
    """The fine-tuned model of `checkpoint`; a pretrained-only model cannot transcribe."""
    model = load_model(checkpoint, trusted=trusted)
    if not isinstance(model, Wav2Vec2Ctc):
        raise W2v2Error(f"`--checkpoint` must be a fine-tuned CTC model (wav2vec_ctc), but {checkpoint} holds a "
                        "pretrained wav2vec2 model instead; fine-tune it first.")
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
    dictionary = getattr(model, "dictionary", None)
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


@torch.no_grad()
def _decode_batch(model: Wav2Vec2Ctc, decoder: Decoder, batch: Dict[str, Any], dictionary: Dictionary,
                  device: torch.device, result: EvalResult) -> None:
    """Decode one padded batch and add its counts and utterances to `result`."""
    net_input = {key: value.to(device) for key, value in batch["net_input"].items()}
    net_output = model(**net_input)
    lprobs = model.get_normalized_probs(net_output, log_probs=True)  # (T, B, V)
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
    units = greedy_decode(scores, lengths, dictionary.bos())
    for index, hypothesis, tokens, target in zip(batch["id"].tolist(), counts["hypotheses"], units, batch["target"]):
        reference_units = dictionary.string(target[target != dictionary.pad()])
        result.details.append(Utterance(index, hypothesis, letters_to_words(reference_units),
                                        dictionary.string(tokens), reference_units))


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

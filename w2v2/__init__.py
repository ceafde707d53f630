"""wav2vec 2.0 pretraining and CTC fine-tuning, compatible with fairseq's files and commands."""

from w2v2.interop.checkpoints import load_model, save_checkpoint
from w2v2.interop.hf import export_hf, import_hf
from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.wav2vec2 import Wav2Vec2Model

__all__ = ["load_model", "save_checkpoint", "export_hf", "import_hf", "Wav2Vec2Config", "Wav2Vec2CtcConfig",
           "Wav2Vec2Ctc", "Wav2Vec2Model"]
__version__ = "0.1.0"

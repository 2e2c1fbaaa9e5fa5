"""MoME (models.mome): Mixture of Matryoshka Experts for audio(-visual) speech recognition.

Registered with transformers: AutoConfig ("mome"), AutoModelForSpeechSeq2Seq (what users reach for an
ASR model, as for Whisper; `pipeline("automatic-speech-recognition")` loads models through it), and
AutoProcessor (the speech processor). transformers 5.23's ASR pipeline picks its generate() path
("seq2seq") by the model's class name in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES, which
`AutoModelForSpeechSeq2Seq.register` does not fill in. One entry ("mome" -> "MomeForSpeechRecognition")
is added to that table, the way the pipeline looks models up; no transformers function is replaced.
The table is read by name only (that pipeline, the model-card helper; the lazy auto mapping built on
it skips model types missing from transformers' own config table), so the stock pipeline then calls
`model.generate()` and decodes its new tokens (MomeForSpeechRecognition.generate documents how).
"""
from transformers import AutoConfig, AutoModel, AutoModelForSpeechSeq2Seq
from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

from zoo.multimodal.speech_processing import register_speech_processor

from .configuration_mome import MomeConfig
from .modeling_mome import MomeForSpeechRecognition, MomeOutput, MomePreTrainedModel

AutoConfig.register(MomeConfig.model_type, MomeConfig, exist_ok=True)
register_speech_processor(MomeConfig)  # AutoProcessor -> SpeechLanguageProcessor, AutoFeatureExtractor -> Whisper's
AutoModelForSpeechSeq2Seq.register(MomeConfig, MomeForSpeechRecognition, exist_ok=True)
AutoModel.register(MomeConfig, MomeForSpeechRecognition, exist_ok=True)
MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES.setdefault(MomeConfig.model_type, MomeForSpeechRecognition.__name__)

__all__ = ["MomeConfig", "MomeForSpeechRecognition", "MomeOutput", "MomePreTrainedModel"]

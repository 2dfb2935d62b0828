"""Baselines of the Du-IN paper (Table 2), built from the shared Du-IN layers.

Importing this package registers every baseline with :func:`duin.models.registry.register_model`
(classifiers under ``<name>``, self-supervised objectives under ``<name>_pretrain``, plus
``labram_tokenizer``). :data:`BASELINES` lists them for the benchmark; see
:mod:`duin.models.baselines.common` for the shared conventions and how pretraining is exposed
(separate registered pretraining models sharing a ``backbone`` module, moved into the
classifier with :func:`transfer_backbone`).

Example
-------
>>> from duin.models.registry import create_model
>>> from duin.models.baselines import BASELINES, transfer_backbone
>>> info = BASELINES["neurobert"]
>>> pre = create_model(info.pretrain[-1], info.pretrain_config_class.quick())  # doctest: +SKIP
>>> cls = create_model(info.name, info.config_class.quick())                    # doctest: +SKIP
>>> transfer_backbone(pre, cls)                                                # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

from duin.models.baselines.brainbert import (
    BrainBERT,
    BrainBERTConfig,
    BrainBERTPretrain,
    BrainBERTPretrainConfig,
)
from duin.models.baselines.brant import Brant, BrantConfig, BrantPretrain, BrantPretrainConfig
from duin.models.baselines.cnn_bigru import CNNBiGRU, CNNBiGRUConfig
from duin.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    BaselineModel,
    Resample,
    fft_resample,
    transfer_backbone,
)
from duin.models.baselines.dewave import DeWave, DeWaveConfig
from duin.models.baselines.eeg_conformer import EEGConformer, EEGConformerConfig
from duin.models.baselines.labram import (
    LaBraM,
    LaBraMConfig,
    LaBraMPretrain,
    LaBraMPretrainConfig,
    LaBraMTokenizer,
    LaBraMTokenizerConfig,
)
from duin.models.baselines.labram_popt import (
    LaBraMPopT,
    LaBraMPopTConfig,
    MissingCoordinatesError,
)
from duin.models.baselines.neurobert import (
    NeuroBERT,
    NeuroBERTConfig,
    NeuroBERTPretrain,
    NeuroBERTPretrainConfig,
)
from duin.models.baselines.tstcc import TSTCC, TSTCCConfig, TSTCCPretrain, TSTCCPretrainConfig

__all__ = [
    "BASELINES",
    "TSTCC",
    "BaselineClassifier",
    "BaselineConfig",
    "BaselineInfo",
    "BaselineModel",
    "BrainBERT",
    "BrainBERTConfig",
    "BrainBERTPretrain",
    "BrainBERTPretrainConfig",
    "Brant",
    "BrantConfig",
    "BrantPretrain",
    "BrantPretrainConfig",
    "CNNBiGRU",
    "CNNBiGRUConfig",
    "DeWave",
    "DeWaveConfig",
    "EEGConformer",
    "EEGConformerConfig",
    "LaBraM",
    "LaBraMConfig",
    "LaBraMPopT",
    "LaBraMPopTConfig",
    "LaBraMPretrain",
    "LaBraMPretrainConfig",
    "LaBraMTokenizer",
    "LaBraMTokenizerConfig",
    "MissingCoordinatesError",
    "NeuroBERT",
    "NeuroBERTConfig",
    "NeuroBERTPretrain",
    "NeuroBERTPretrainConfig",
    "Resample",
    "TSTCCConfig",
    "TSTCCPretrain",
    "TSTCCPretrainConfig",
    "fft_resample",
    "transfer_backbone",
]


@dataclass(frozen=True)
class BaselineInfo:
    """One row of the Du-IN paper's Table 2 baselines.

    Parameters
    ----------
    name : str
        Registered classifier name.
    token_level : str
        ``"region"`` (channels mixed before tokenization) or ``"channel"`` (one token stream
        per channel): the paper's region-vs-channel axis.
    pretrained : bool
        Whether the paper pretrains it (self-supervised) before fine-tuning.
    pretrain : tuple of str
        Registered pretraining models, in stage order (empty if none). For LaBraM the
        tokenizer must be attached to ``labram_pretrain`` with ``set_target_tokenizer``.
    config_class, pretrain_config_class : type
        Config dataclasses of the classifier and of the last pretraining stage.
    sfreq : float
        The model's internal sampling rate (Hz).
    reference : str
        The original paper.
    paper_params : str
        Size in the Du-IN paper's Table 2.
    paper_accuracy : str
        Table 2 top-1 accuracy, mean +- s.e. over 12 subjects (single-subject pretraining).
    """

    name: str
    token_level: str
    pretrained: bool
    pretrain: tuple[str, ...]
    config_class: type
    pretrain_config_class: type | None
    sfreq: float
    reference: str
    paper_params: str
    paper_accuracy: str


BASELINES: dict[str, BaselineInfo] = {
    info.name: info
    for info in (
        BaselineInfo(
            "tstcc", "region", True, ("tstcc_pretrain",), TSTCCConfig, TSTCCPretrainConfig,
            400.0, "Eldele et al., IJCAI 2021", "0.32M", "24.85 +- 4.42",
        ),
        BaselineInfo(
            "cnn_bigru", "region", False, (), CNNBiGRUConfig, None,
            30.0, "Moses et al., NEJM 2021", "0.54M", "32.04 +- 5.45",
        ),
        BaselineInfo(
            "eeg_conformer", "region", False, (), EEGConformerConfig, None,
            250.0, "Song et al., IEEE TNSRE 2023", "2.34M", "45.82 +- 4.66",
        ),
        BaselineInfo(
            "neurobert", "region", True, ("neurobert_pretrain",), NeuroBERTConfig,
            NeuroBERTPretrainConfig, 400.0, "Wu et al., IEEE JBHI 2024", "2.14M",
            "49.51 +- 4.43",
        ),
        BaselineInfo(
            "dewave", "region", False, (), DeWaveConfig, None,
            500.0, "Duan et al., NeurIPS 2023", "5.70M", "32.43 +- 4.48",
        ),
        BaselineInfo(
            "brainbert", "channel", True, ("brainbert_pretrain",), BrainBERTConfig,
            BrainBERTPretrainConfig, 1000.0, "Wang et al., ICLR 2023", "43.58M",
            "6.72 +- 1.59",
        ),
        BaselineInfo(
            "brant", "channel", True, ("brant_pretrain",), BrantConfig, BrantPretrainConfig,
            200.0, "Zhang et al., NeurIPS 2023", "69.35M", "11.16 +- 3.56",
        ),
        BaselineInfo(
            "labram", "channel", True, ("labram_tokenizer", "labram_pretrain"), LaBraMConfig,
            LaBraMPretrainConfig, 200.0, "Jiang et al., ICLR 2024", "6.85M", "11.53 +- 2.63",
        ),
        BaselineInfo(
            "labram_popt", "channel", False, (), LaBraMPopTConfig, None, 200.0,
            "Chau et al., ICLR 2025 (PopT) on Jiang et al., ICLR 2024", "6.85M",
            "11.78 +- 2.70",
        ),
    )
}  # fmt: skip

"""One subject's model cut out of a multi-subject ("poms") Du-IN model.

A pooled model has one subject-layer matrix per subject over ``n_channels`` (the widest
subject's count; narrower subjects are zero-padded) and a shared tokenizer, encoder, codex and
heads. :func:`extract_subject` returns the single-subject model that computes exactly what the
pooled one computes for that subject: its subject-layer row restricted to its real channels
(the padded rows only ever multiplied zeros), everything else copied. The classifier stage is
single-subject, so this is how ``finetune --variant poms`` starts each subject's classifier.
"""

from __future__ import annotations

import dataclasses

from duin.models.duin import DuINModel
from duin.models.layers import SubjectLayer
from duin.models.registry import load_state_checked

__all__ = ["extract_subject"]

#: Subject layers whose *output* side is the channel axis (the VQ-VAE's reconstruction layer);
#: every other subject layer maps channels in.
_OUTPUT_SIDE_LAYERS = ("desubject_layer",)


def extract_subject(model: DuINModel, subject: int) -> DuINModel:
    """The single-subject model of subject index ``subject`` of a multi-subject model.

    Parameters
    ----------
    model : DuINModel
        A Du-IN model (VQ-VAE, MAE or classifier) of any number of subjects.
    subject : int
        Subject index (the position in the pooled run's subject order).

    Returns
    -------
    DuINModel
        Same class, ``n_subjects=1``, ``n_channels`` = the subject's real channel count,
        ``subject_channels=None``; same training/eval mode; weights copied (no sharing). An
        MAE's target tokenizer is not attached (it is not part of the model's state).

    Raises
    ------
    ValueError
        If ``subject`` is not a valid index.
    """
    cfg = model.config
    if not 0 <= int(subject) < cfg.n_subjects:
        raise ValueError(
            f"unknown subject index {subject}: the model has {cfg.n_subjects} subject(s) "
            f"(valid indices 0..{cfg.n_subjects - 1})"
        )
    subject = int(subject)
    n_real = cfg.channels_per_subject[subject]
    single_cfg = dataclasses.replace(cfg, n_channels=n_real, n_subjects=1, subject_channels=None)
    single = type(model)(single_cfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, layer in model.named_modules():
        if not isinstance(layer, SubjectLayer):
            continue
        weight = layer.weight[subject].detach()  # (d_in, d_out)
        bias = layer.bias[subject].detach()  # (d_out,)
        if name.rsplit(".", 1)[-1] in _OUTPUT_SIDE_LAYERS:
            weight, bias = weight[:, :n_real], bias[:n_real]  # (d_in, C_s), (C_s,)
        else:
            weight = weight[:n_real]  # (C_s, d_out)
        state[f"{name}.weight"] = weight[None].clone()  # (1, ., .)
        state[f"{name}.bias"] = bias[None].clone()
    load_state_checked(single, state, source=f"subject {subject} of a {type(model).__name__}")
    return single.train(model.training)

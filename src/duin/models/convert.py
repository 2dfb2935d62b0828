"""Convert state dicts of the paper's code into duin checkpoints (and back).

Inputs are ``.pth`` files written by the reference (``torch.save(model.state_dict())``), read
with ``torch.load(weights_only=True)`` only, or ``.npz`` archives of such a state dict (the
format of the parity fixtures). Several files are merged in order (later keys win), which is how
the MAE and classifier states are assembled from the fixtures (the VQ-VAE state provides
``subj_block``/``tokenizer``/``encoder``; see the parity README).

Channels, subjects, token count, widths, depths, codex and class counts are inferred from the
tensor shapes; ``overrides`` set what shapes cannot tell (``subject_channels``, dropouts,
``loss``, quantizer policy...). Dead reference blocks are dropped: the classifier's contrastive
block and its never-loaded ``vq_block`` (kept only with ``quantize_features=True``), and the
frozen attention scales (checked to equal ``d_head ** -0.5``).

Command line::

    python -m duin.models.convert --model cls --weights vqvae_state.npz cls_state.npz --out DIR
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duin.models.duin import DuINClassifier, DuINMAE, DuINModel, DuINVQVAE
from duin.models.layers import sinusoid_table
from duin.models.registry import create_model, get_model_class, load_state_checked, save_model

__all__ = [
    "convert_reference",
    "from_reference_state_dict",
    "main",
    "read_reference_state",
    "to_reference_state_dict",
]

_KINDS = {"vqvae": "duin_vqvae", "mae": "duin_mae", "cls": "duin_cls"}

_BLOCK_MAP = {  # reference suffix inside a transformer block -> duin suffix
    "mha.norm_q.weight": "attn.norm_q.weight",
    "mha.norm_q.bias": "attn.norm_q.bias",
    "mha.norm_k.weight": "attn.norm_k.weight",
    "mha.norm_k.bias": "attn.norm_k.bias",
    "mha.proj.0.weight": "attn.proj.weight",
    "mha.proj.0.bias": "attn.proj.bias",
    "norm_mha.weight": "norm_attn.weight",
    "norm_mha.bias": "norm_attn.bias",
    "ffn.fc1.0.weight": "ffn.fc1.weight",
    "ffn.fc1.0.bias": "ffn.fc1.bias",
    "ffn.fc2.0.weight": "ffn.fc2.weight",
    "ffn.fc2.0.bias": "ffn.fc2.bias",
    "norm_ffn.weight": "norm_ffn.weight",
    "norm_ffn.bias": "norm_ffn.bias",
}
_VQ_MAP = {
    "vq_block.pre_proj.0.weight": "quantizer.pre_proj.0.weight",
    "vq_block.pre_proj.0.bias": "quantizer.pre_proj.0.bias",
    "vq_block.pre_proj.2.weight": "quantizer.pre_proj.2.weight",
    "vq_block.pre_proj.2.bias": "quantizer.pre_proj.2.bias",
    "vq_block.codex.embeddings": "quantizer.codebook",
    "vq_block.layernorm.weight": "quantizer.norm.weight",
    "vq_block.layernorm.bias": "quantizer.norm.bias",
    "vq_block.post_proj.0.weight": "quantizer.post_proj.weight",
    "vq_block.post_proj.0.bias": "quantizer.post_proj.bias",
}


# ---------------------------------------------------------------------------- reading
def read_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read one reference state dict from a ``.pth`` (weights only) or ``.npz`` file.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    dict of str to torch.Tensor
        The state dict on CPU.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a plain state dict (name -> tensor) or cannot be read safely.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {k: torch.from_numpy(np.array(archive[k])) for k in archive.files}
        except (ValueError, OSError) as err:
            raise ValueError(f"{path}: not a readable .npz state dict ({err})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses anything but tensors and plain containers
        raise ValueError(
            f"{path}: not a plain state dict readable with torch.load(weights_only=True) ({err})"
        ) from err
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(
            f"{path}: expected a plain state dict (str -> tensor), got {type(obj).__name__}"
            + (f" with keys {list(obj)[:5]}" if isinstance(obj, Mapping) else "")
        )
    return dict(obj)


def _merge(paths: Sequence[str | Path] | str | Path) -> dict[str, torch.Tensor]:
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise ValueError("no weights file given")
    state: dict[str, torch.Tensor] = {}
    for p in paths:
        state.update(read_reference_state(p))
    return state


# ---------------------------------------------------------------------------- shape inference
def _need(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"reference state dict lacks {key!r}")
    return state[key]


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.1\.xfmr_blocks\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if not indices:
        raise ValueError(f"reference state dict has no {prefix}.1.xfmr_blocks.* tensors")
    return max(indices) + 1


def infer_config(kind: str, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Infer a duin config dict for ``kind`` (vqvae/mae/cls) from reference tensor shapes."""
    w = _need(state, "subj_block.subj_layer.W.weight")  # (C * d_neural, S)
    b = _need(state, "subj_block.subj_layer.B.weight")  # (d_neural, S)
    d_neural, n_subjects = b.shape
    n_channels = w.shape[0] // d_neural
    convs = []
    i = 0
    while f"tokenizer.conv_blocks.{i}.0.1.weight" in state:
        convs.append(state[f"tokenizer.conv_blocks.{i}.0.1.weight"])  # (out, in, k)
        i += 1
    if not convs:
        raise ValueError("reference state dict has no tokenizer.conv_blocks.* tensors")
    filters = [int(c.shape[0]) for c in convs]
    kernels = [int(c.shape[2]) for c in convs]
    strides = [10] + [1] * (len(convs) - 1)  # not stored; the reference values
    wq = _need(state, "encoder.1.xfmr_blocks.0.mha.W_q.W.weight")  # (H*Dh, D)
    d_head = int(_need(state, "encoder.1.xfmr_blocks.0.mha.norm_q.weight").shape[0])
    d_model = int(wq.shape[1])
    patch_len = d_model // filters[-1] * math.prod(strides)
    if "emb_time.time_encodings" not in state:
        raise ValueError(
            "reference state dict lacks 'emb_time.time_encodings' (needed for the token count)"
        )
    n_tokens = int(state["emb_time.time_encodings"].shape[0])
    config: dict[str, Any] = {
        "n_channels": int(n_channels),
        "n_subjects": int(n_subjects),
        "n_times": n_tokens * patch_len,
        "patch_len": patch_len,
        "d_neural": int(d_neural),
        "tokenizer_filters": filters,
        "tokenizer_kernels": kernels,
        "tokenizer_strides": strides,
        "n_blocks": _count_blocks(state, "encoder"),
        "n_heads": int(wq.shape[0]) // d_head,
        "d_head": d_head,
        "d_ff": int(_need(state, "encoder.1.xfmr_blocks.0.ffn.fc1.0.weight").shape[0]),
    }
    if kind in ("vqvae", "cls") and "vq_block.codex.embeddings" in state:
        n_codes, d_code = state["vq_block.codex.embeddings"].shape
        config["quantizer"] = {"n_codes": int(n_codes), "d_code": int(d_code)}
    if kind == "vqvae":
        config["n_decoder_blocks"] = _count_blocks(state, "decoder")
        deconvs = []
        i = 0
        while f"rgs_block.rgs_head.{i}.0.1.weight" in state:
            deconvs.append(state[f"rgs_block.rgs_head.{i}.0.1.weight"])  # (in, out, k)
            i += 1
        config["decoder_filters"] = [int(d.shape[1]) for d in deconvs]
        config["decoder_kernels"] = [int(d.shape[2]) for d in deconvs]
        # Strides are not stored: the reference upsamples by 10 at the layers whose kernel is
        # at least 10, in order, until the product is patch_len (paper: [1, 1, 10, 1, 10]).
        config["decoder_strides"] = _infer_decoder_strides(config["decoder_kernels"], patch_len)
    elif kind == "mae":
        config["n_codes"] = int(_need(state, "cls_block.cls_head.0.0.weight").shape[0])
    elif kind == "cls":
        hidden = []
        i = 1
        while f"cls_block.cls_head.{i}.0.weight" in state:
            hidden.append(int(state[f"cls_block.cls_head.{i}.0.weight"].shape[0]))
            i += 1
        if not hidden:
            raise ValueError("reference state dict has no cls_block.cls_head.* tensors")
        config["n_classes"] = hidden.pop()
        config["head_hidden"] = hidden
    return config


def _infer_decoder_strides(kernels: list[int], patch_len: int) -> list[int]:
    strides = [1] * len(kernels)
    remaining = patch_len
    for i, k in enumerate(kernels):
        if k >= 10 and remaining % 10 == 0 and remaining > 1:
            strides[i] = 10
            remaining //= 10
    if remaining != 1:
        raise ValueError(
            f"cannot infer decoder strides from kernels {kernels} for patch_len {patch_len}; "
            "pass decoder_strides= explicitly"
        )
    return strides


# ---------------------------------------------------------------------------- key mapping
def _stack_from_reference(
    state: Mapping[str, torch.Tensor], ref_prefix: str, our_prefix: str, n_blocks: int, d_head: int
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for block in range(n_blocks):
        ref = f"{ref_prefix}.1.xfmr_blocks.{block}."
        ours = f"{our_prefix}.blocks.{block}."
        for part in ("weight", "bias"):
            out[ours + f"attn.qkv.{part}"] = torch.cat(
                [_need(state, ref + f"mha.W_{n}.W.{part}") for n in "qkv"], dim=0
            )
        for ref_suffix, our_suffix in _BLOCK_MAP.items():
            out[ours + our_suffix] = _need(state, ref + ref_suffix)
        scale_key = ref + "mha.attention.scale"
        if scale_key in state:
            scale = float(state[scale_key])
            if not math.isclose(scale, d_head**-0.5, rel_tol=1e-6):
                raise ValueError(
                    f"{scale_key} = {scale}, duin supports only the fixed scale d_head**-0.5 = "
                    f"{d_head**-0.5}"
                )
    return out


def from_reference_state_dict(
    model: DuINModel, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map a reference state dict onto ``model``'s state-dict names and layouts.

    Parameters
    ----------
    model : DuINModel
        Target (only its config and type are used).
    state : mapping
        Reference tensors (extra keys of other reference blocks are ignored).

    Returns
    -------
    dict of str to torch.Tensor
        A state dict for ``model.load_state_dict``.
    """
    cfg = model.config
    n_subjects, n_channels, d_neural = cfg.n_subjects, cfg.n_channels, cfg.d_neural
    out: dict[str, torch.Tensor] = {}
    w = _need(state, "subj_block.subj_layer.W.weight")
    # Column s of W.weight, read row-major as (C, d_neural), is subject s's matrix.
    out["subject_layer.weight"] = w.t().reshape(n_subjects, n_channels, d_neural).contiguous()
    out["subject_layer.bias"] = _need(state, "subj_block.subj_layer.B.weight").t().contiguous()
    for i in range(len(cfg.tokenizer_filters)):
        for part in ("weight", "bias"):
            out[f"tokenizer.convs.{i}.{part}"] = _need(
                state, f"tokenizer.conv_blocks.{i}.0.1.{part}"
            )
        for part in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"tokenizer.norms.{i}.{part}"] = _need(
                state, f"tokenizer.conv_blocks.{i}.1.1.{part}"
            )
    out.update(_stack_from_reference(state, "encoder", "encoder", cfg.n_blocks, cfg.d_head))
    if "emb_time.time_encodings" in state:
        table = state["emb_time.time_encodings"]
        ours = sinusoid_table(cfg.n_tokens, cfg.d_model)
        if table.shape != ours.shape or float((table - ours).abs().max()) > 1e-5:
            raise ValueError(
                "emb_time.time_encodings differs from the sinusoidal table duin computes "
                f"(shape {tuple(table.shape)} vs {tuple(ours.shape)})"
            )
    has_quantizer = getattr(model, "quantizer", None) is not None
    if has_quantizer:
        for ref_key, our_key in _VQ_MAP.items():
            out[our_key] = _need(state, ref_key)
        initted = state.get("vq_block.codex.initted", torch.ones(1))
        out["quantizer.initted"] = torch.tensor(bool(initted.reshape(-1)[0] > 0))
        out["quantizer.counts"] = state.get(
            "vq_block.counts", torch.zeros(out["quantizer.codebook"].shape[0])
        )
    if isinstance(model, DuINVQVAE):
        out.update(
            _stack_from_reference(state, "decoder", "decoder", cfg.n_decoder_blocks, cfg.d_head)
        )
        for i in range(len(cfg.decoder_filters)):
            for part in ("weight", "bias"):
                out[f"recon_head.deconvs.{i}.{part}"] = _need(
                    state, f"rgs_block.rgs_head.{i}.0.1.{part}"
                )
        n = len(cfg.decoder_filters)
        for part in ("weight", "bias"):
            out[f"recon_head.linear.{part}"] = _need(state, f"rgs_block.rgs_head.{n}.0.{part}")
        dw = _need(state, "desubj_block.subj_layer.W.weight")  # (d_neural * C, S)
        out["desubject_layer.weight"] = dw.t().reshape(n_subjects, d_neural, n_channels)
        out["desubject_layer.bias"] = _need(state, "desubj_block.subj_layer.B.weight").t()
    elif isinstance(model, DuINMAE):
        out["mask_embedding"] = _need(state, "mask_emb")
        out["head.weight"] = _need(state, "cls_block.cls_head.0.0.weight")
        out["head.bias"] = _need(state, "cls_block.cls_head.0.0.bias")
    elif isinstance(model, DuINClassifier):
        linears = [i for i, m in enumerate(model.head) if isinstance(m, torch.nn.Linear)]
        for ref_index, our_index in enumerate(linears, start=1):
            for part in ("weight", "bias"):
                out[f"head.{our_index}.{part}"] = _need(
                    state, f"cls_block.cls_head.{ref_index}.0.{part}"
                )
    return {k: v.contiguous() for k, v in out.items()}


def to_reference_state_dict(model: DuINModel) -> dict[str, torch.Tensor]:
    """Export ``model``'s weights with the reference's names and layouts (inverse mapping).

    Dead reference blocks (the classifier's contrastive and unused VQ blocks) are not produced.

    Returns
    -------
    dict of str to torch.Tensor
        A reference-layout state dict.
    """
    cfg = model.config
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    out["subj_block.subj_layer.W.weight"] = (
        ours["subject_layer.weight"].reshape(cfg.n_subjects, -1).t()
    )
    out["subj_block.subj_layer.B.weight"] = ours["subject_layer.bias"].t()
    for i in range(len(cfg.tokenizer_filters)):
        for part in ("weight", "bias"):
            out[f"tokenizer.conv_blocks.{i}.0.1.{part}"] = ours[f"tokenizer.convs.{i}.{part}"]
        for part in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"tokenizer.conv_blocks.{i}.1.1.{part}"] = ours[f"tokenizer.norms.{i}.{part}"]
    out["emb_time.time_encodings"] = sinusoid_table(cfg.n_tokens, cfg.d_model)

    def export_stack(ref_prefix: str, our_prefix: str, n_blocks: int) -> None:
        inverse = {v: k for k, v in _BLOCK_MAP.items()}
        for block in range(n_blocks):
            ref = f"{ref_prefix}.1.xfmr_blocks.{block}."
            mine = f"{our_prefix}.blocks.{block}."
            for part in ("weight", "bias"):
                q, k, v = ours[mine + f"attn.qkv.{part}"].chunk(3, dim=0)
                out[ref + f"mha.W_q.W.{part}"] = q
                out[ref + f"mha.W_k.W.{part}"] = k
                out[ref + f"mha.W_v.W.{part}"] = v
            for our_suffix, ref_suffix in inverse.items():
                out[ref + ref_suffix] = ours[mine + our_suffix]
            out[ref + "mha.attention.scale"] = torch.tensor(cfg.d_head**-0.5)

    export_stack("encoder", "encoder", cfg.n_blocks)
    if getattr(model, "quantizer", None) is not None:
        for ref_key, our_key in _VQ_MAP.items():
            out[ref_key] = ours[our_key]
        out["vq_block.codex.initted"] = ours["quantizer.initted"].float().reshape(1)
        out["vq_block.counts"] = ours["quantizer.counts"]
    if isinstance(model, DuINVQVAE):
        export_stack("decoder", "decoder", cfg.n_decoder_blocks)
        n = len(cfg.decoder_filters)
        for i in range(n):
            for part in ("weight", "bias"):
                out[f"rgs_block.rgs_head.{i}.0.1.{part}"] = ours[f"recon_head.deconvs.{i}.{part}"]
        for part in ("weight", "bias"):
            out[f"rgs_block.rgs_head.{n}.0.{part}"] = ours[f"recon_head.linear.{part}"]
        out["desubj_block.subj_layer.W.weight"] = (
            ours["desubject_layer.weight"].reshape(cfg.n_subjects, -1).t()
        )
        out["desubj_block.subj_layer.B.weight"] = ours["desubject_layer.bias"].t()
    elif isinstance(model, DuINMAE):
        out["mask_emb"] = ours["mask_embedding"]
        out["cls_block.cls_head.0.0.weight"] = ours["head.weight"]
        out["cls_block.cls_head.0.0.bias"] = ours["head.bias"]
    elif isinstance(model, DuINClassifier):
        linears = [i for i, m in enumerate(model.head) if isinstance(m, torch.nn.Linear)]
        for ref_index, our_index in enumerate(linears, start=1):
            for part in ("weight", "bias"):
                out[f"cls_block.cls_head.{ref_index}.0.{part}"] = ours[f"head.{our_index}.{part}"]
    return {k: v.contiguous().clone() for k, v in out.items()}


# ---------------------------------------------------------------------------- entry points
def convert_reference(
    model: str,
    weights: str | Path | Sequence[str | Path],
    out: str | Path,
    **overrides: Any,
) -> Path:
    """Convert reference weights into a duin checkpoint directory.

    Parameters
    ----------
    model : str
        ``"vqvae"``, ``"mae"`` or ``"cls"``.
    weights : path or list of paths
        ``.pth`` (plain state dict, read with ``weights_only=True``) or ``.npz`` files, merged in
        order. For the parity fixtures: MAE = ``[vqvae_state.npz, mae_state.npz]``, classifier =
        ``[vqvae_state.npz, cls_state.npz]``.
    out : str or Path
        Output checkpoint directory (written atomically).
    **overrides
        Config fields to set on top of the inferred ones (e.g. ``subject_channels``, ``loss``,
        ``quantizer={"init_mode": "first_batch"}``).

    Returns
    -------
    Path
        The checkpoint directory (load it with :func:`duin.load_model`).
    """
    if model not in _KINDS:
        raise ValueError(f"unknown reference model {model!r}; expected one of {sorted(_KINDS)}")
    state = _merge(weights)
    config = infer_config(model, state)
    quantizer_over = overrides.pop("quantizer", None)
    if quantizer_over:
        config["quantizer"] = {**config.get("quantizer", {}), **quantizer_over}
    config.update(overrides)
    if model == "cls" and config.get("quantize_features") and "quantizer" not in config:
        raise ValueError("quantize_features=True needs vq_block.* tensors in the weights")
    if model == "cls" and not config.get("quantize_features"):
        config.pop("quantizer", None)
    _, config_cls = get_model_class(_KINDS[model])
    net = create_model(_KINDS[model], config_cls.from_dict(config))
    mapped = from_reference_state_dict(net, state)  # type: ignore[arg-type]
    load_state_checked(net, mapped, source=", ".join(str(w) for w in _as_list(weights)))
    return save_model(net.eval(), out)


def _as_list(weights: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [weights] if isinstance(weights, str | Path) else list(weights)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m duin.models.convert --model cls --weights A [B ...] --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m duin.models.convert",
        description="Convert the paper code's weights (.pth state dict or .npz) to a duin checkpoint.",
    )
    parser.add_argument("--model", required=True, choices=sorted(_KINDS))
    parser.add_argument(
        "--weights",
        required=True,
        nargs="+",
        type=Path,
        help="state dict files merged in order (e.g. vqvae_state.npz cls_state.npz)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    parser.add_argument(
        "--subject-channels",
        type=int,
        nargs="+",
        default=None,
        help="real channel count of each subject (inputs are zero-padded to the largest)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.subject_channels:
        overrides["subject_channels"] = args.subject_channels
    try:
        path = convert_reference(args.model, args.weights, args.out, **overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

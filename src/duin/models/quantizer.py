"""The codex: a normalised EMA vector quantizer (reference §2.5), written for duin.

Per token ``e`` (``d_model``): ``z = l2norm(W2 tanh(W1 e + b1) + b2)`` (``d_code``), nearest unit
code ``c_k`` by squared distance (ties to the lowest index), commitment loss
``beta * mean((z - sg(c_k))^2)``, straight-through ``q = z + sg(c_k - z)``, output
``Linear(LayerNorm(q))``. The codebook is not a gradient parameter: in training it follows an
EMA of the l2-normalised mean of the vectors assigned to each code, renormalised.

Differences from the reference, all switchable (see :class:`~duin.models.config.QuantizerConfig`):

- k-means init: by default (``init_mode="accumulate"``) vectors from successive training batches
  are pooled until there are at least ``n_codes``, then k-means starts from distinct vectors.
  ``init_mode="first_batch"`` reproduces the reference (first forward, any mode, centres drawn
  with replacement when the batch is smaller than the codex).
- ``counts`` (usage EMA) is updated in training forwards only, unless ``track_counts_in_eval``
  (the reference updates it in eval too, so evaluating a model changes its state dict).
- optional dead-code restart (off by default; the reference has none).

Distributed training: when ``torch.distributed`` is initialised, the per-code counts and sums
of the EMA update are all-reduced, the k-means pool is all-gathered (rank order) and k-means
runs on rank 0 and is broadcast, so every rank holds the same codex, equal to a single process
seeing the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from duin.models.config import QuantizerConfig
from duin.models.layers import trunc_normal_

__all__ = ["NormEMAVectorQuantizer", "spherical_kmeans"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate ``rows (n_i, d)`` of every rank in rank order (sizes may differ)."""
    if not _distributed():
        return rows
    world = dist.get_world_size()
    size = torch.tensor([rows.shape[0]], dtype=torch.int64, device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    n_max = int(max(s.item() for s in sizes))
    padded = rows.new_zeros((n_max, rows.shape[1]))
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes, strict=True)])


def spherical_kmeans(
    vectors: torch.Tensor,
    n_codes: int,
    n_iters: int,
    with_replacement: bool | None = None,
) -> torch.Tensor:
    """Cosine k-means on l2-normalised ``vectors (n, d)``; returns ``(n_codes, d)`` unit centres.

    Initial centres are a random subset of the vectors without replacement when
    ``n >= n_codes``, else ``n_codes`` draws with replacement (the reference behaviour; the
    duplicates then lose every assignment tie to the lower index and stay unchanged). Each
    iteration assigns by maximum dot product, recomputes l2-normalised means, and leaves empty
    clusters unchanged. Draws use torch's global RNG.

    Parameters
    ----------
    vectors : torch.Tensor
        ``(n, d)`` unit vectors.
    n_codes : int
        Number of centres.
    n_iters : int
        Iterations.
    with_replacement : bool, optional
        Force the initial draw mode (default: only when ``n < n_codes``).

    Returns
    -------
    torch.Tensor
        ``(n_codes, d)`` centres.
    """
    n = vectors.shape[0]
    if with_replacement is None:
        with_replacement = n < n_codes
    if with_replacement:
        index = torch.randint(0, n, (n_codes,), device=vectors.device)
    else:
        index = torch.randperm(n, device=vectors.device)[:n_codes]
    centres = vectors[index].clone()
    for _ in range(n_iters):
        assign = (vectors @ centres.t()).argmax(dim=1)  # (n,)
        counts = torch.bincount(assign, minlength=n_codes)
        sums = torch.zeros_like(centres).index_add_(0, assign, vectors)
        means = F.normalize(sums / counts.clamp(min=1)[:, None], dim=-1)
        centres = torch.where((counts > 0)[:, None], means, centres)
    return centres


class NormEMAVectorQuantizer(nn.Module):
    """Normalised EMA vector quantizer with projection, LayerNorm and output Linear.

    Parameters
    ----------
    d_model : int
        Token width (input and output).
    config : QuantizerConfig
        Codex size, code width, loss weight, EMA decay and init policy.

    Notes
    -----
    Buffers: ``codebook (n_codes, d_code)`` (unit rows), ``initted`` (0-d bool), ``counts``
    ``(n_codes,)`` (usage EMA, logging / dead-code detection only). While the k-means pool fills
    (``init_mode="accumulate"``, before init) the state dict also holds it as ``kmeans_pool``
    ``(n_pooled, d_code)``, so a run checkpointed then resumes exactly; the key is absent
    otherwise (and in checkpoints written before it existed), which loads as an empty pool.
    """

    optional_state_keys = ("kmeans_pool",)  # see the Notes; load_state_checked accepts it

    def __init__(self, d_model: int, config: QuantizerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or QuantizerConfig()
        config.validate()
        self.n_codes, self.d_code = config.n_codes, config.d_code
        self.pre_proj = nn.Sequential(
            nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, config.d_code)
        )
        self.norm = nn.LayerNorm(config.d_code, eps=1e-5)
        self.post_proj = nn.Linear(config.d_code, d_model)
        self.register_buffer(
            "codebook", F.normalize(torch.randn(config.n_codes, config.d_code), dim=-1)
        )
        self.register_buffer("initted", torch.tensor(not config.kmeans_init))
        self.register_buffer("counts", torch.zeros(config.n_codes))
        if config.warmup_steps:
            # Only with a warm-up, so models without one keep the reference's state dict keys.
            self.register_buffer("warmup_done", torch.zeros((), dtype=torch.int64))
        self._pool: list[torch.Tensor] = []  # k-means pool (accumulate mode), see Notes
        self._pool_size = 0
        for linear in (self.pre_proj[0], self.pre_proj[2], self.post_proj):
            trunc_normal_(linear.weight)
            nn.init.zeros_(linear.bias)

    # ------------------------------------------------------------------ state
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._pool:
            destination[prefix + "kmeans_pool"] = torch.cat(self._pool)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        pool = state_dict.pop(prefix + "kmeans_pool", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if pool is not None and (pool.dim() != 2 or pool.shape[1] != self.d_code):
            error_msgs.append(
                f"{prefix}kmeans_pool: expected shape (n, {self.d_code}), got {tuple(pool.shape)}"
            )
            return
        self._pool = [] if pool is None or not len(pool) else [pool.detach().cpu().clone()]
        self._pool_size = sum(p.shape[0] for p in self._pool)

    # ------------------------------------------------------------------ lookups
    def project(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project tokens ``(..., d_model)`` to ``(pre, z)``, ``z`` l2-normalised ``(..., d_code)``.

        Runs in the projection's own dtype (float32, or float64 for parity checks), also under
        autocast: code choice and EMA statistics are sensitive to rounding, and this small
        projection costs little.
        """
        with torch.autocast(tokens.device.type, enabled=False):
            pre = self.pre_proj(tokens.to(self.pre_proj[0].weight.dtype))
        return pre, F.normalize(pre, dim=-1, eps=1e-12)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for unit vectors ``z (..., d_code)`` (ties: lowest index)."""
        flat = z.reshape(-1, self.d_code)
        # Expanded squared distance ||z||^2 + ||c||^2 - 2 z.c, as the reference computes it.
        dist_sq = torch.addmm(
            flat.pow(2).sum(1, keepdim=True) + self.codebook.pow(2).sum(1)[None, :],
            flat,
            self.codebook.t(),
            beta=1.0,
            alpha=-2.0,
        )
        return dist_sq.argmin(dim=1).view(z.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantised output ``(..., d_model)`` of code indices (LayerNorm + Linear of the codes)."""
        return self.post_proj(self.norm(F.embedding(codes, self.codebook)))

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: torch.Tensor, update: bool | None = None) -> dict[str, torch.Tensor]:
        """Quantise ``tokens (batch, n_tokens, d_model)``.

        Parameters
        ----------
        tokens : torch.Tensor
            Encoder output.
        update : bool, optional
            Whether to update the codex (k-means init, EMA, counts). Default: ``self.training``.
            Pass ``False`` for a pure lookup (frozen tokenizer).

        Returns
        -------
        dict of torch.Tensor
            ``pre`` (projection before normalisation), ``z`` (unit vectors), ``codes`` int64
            ``(batch, n_tokens)``, ``z_q`` (code vectors), ``z_st`` (straight-through value),
            ``ln`` (after LayerNorm), ``out`` ``(batch, n_tokens, d_model)``, ``loss`` (0-d).
        """
        if update is None:
            update = self.training
        pre, z = self.project(tokens)
        cfg = self.config
        if self._bypass(update):
            return self._autoencode(pre, z)
        if update or (cfg.init_mode == "first_batch" and not self.frozen):
            self._maybe_init(z.detach())
        codes = self.nearest(z.detach())
        z_q = F.embedding(codes, self.codebook)  # (B, L, d_code), no gradient
        loss = cfg.beta * F.mse_loss(z, z_q.detach())
        z_st = z + (z_q - z).detach()
        ln = self.norm(z_st)
        out = self.post_proj(ln)
        if update and bool(self.initted):
            self._ema_update(z.detach(), codes)
        elif update or (cfg.track_counts_in_eval and not self.frozen):
            self._update_counts(self._global_histogram(codes))
        return {
            "pre": pre,
            "z": z,
            "codes": codes,
            "z_q": z_q,
            "z_st": z_st,
            "ln": ln,
            "out": out,
            "loss": loss,
        }

    def _bypass(self, update: bool) -> bool:
        """In the autoencoder warm-up (counts this training forward)."""
        if not self.config.warmup_steps or bool(self.initted):
            return False
        if update and not self.frozen:
            if int(self.warmup_done) >= self.config.warmup_steps:
                return False
            self.warmup_done += 1
        return True

    def _autoencode(self, pre: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Warm-up output: ``z`` itself reaches the decoder; codes are reported, not used."""
        codes = self.nearest(z.detach())
        ln = self.norm(z)
        return {
            "pre": pre,
            "z": z,
            "codes": codes,
            "z_q": F.embedding(codes, self.codebook),
            "z_st": z,
            "ln": ln,
            "out": self.post_proj(ln),
            "loss": z.new_zeros(()),
        }

    @property
    def frozen(self) -> bool:
        """True when used as a frozen target tokenizer (never mutates its codex)."""
        return getattr(self, "_frozen", False)

    def freeze(self) -> NormEMAVectorQuantizer:
        """Freeze: no gradient, no k-means, no EMA, no counts; returns ``self``."""
        self._frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    # ------------------------------------------------------------------ state updates
    def _global_histogram(self, codes: torch.Tensor) -> torch.Tensor:
        hist = torch.bincount(codes.reshape(-1), minlength=self.n_codes).to(self.counts.dtype)
        return _all_reduce_sum(hist)

    @torch.no_grad()
    def _update_counts(self, hist: torch.Tensor) -> None:
        decay = self.config.decay
        self.counts.mul_(decay).add_(hist, alpha=1.0 - decay)

    @torch.no_grad()
    def _maybe_init(self, z: torch.Tensor) -> None:
        if bool(self.initted) or self.frozen:
            return
        flat = z.reshape(-1, self.d_code)
        if self.config.init_mode == "first_batch":
            pool = _all_gather_rows(flat)
            self._run_kmeans(pool, with_replacement=None)
            return
        self._pool.append(_all_gather_rows(flat).cpu())
        self._pool_size += self._pool[-1].shape[0]
        if self._pool_size >= self.n_codes:
            pool = torch.cat(self._pool).to(z.device)
            self._pool, self._pool_size = [], 0
            self._run_kmeans(pool, with_replacement=False)

    def _run_kmeans(self, pool: torch.Tensor, with_replacement: bool | None) -> None:
        rank0 = not _distributed() or dist.get_rank() == 0
        if rank0:
            centres = spherical_kmeans(
                pool, self.n_codes, self.config.kmeans_iters, with_replacement=with_replacement
            )
        else:
            centres = torch.empty_like(self.codebook)
        if _distributed():
            dist.broadcast(centres, src=0)
        self.codebook.copy_(centres)
        self.initted.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        flat = z.reshape(-1, self.d_code)
        idx = codes.reshape(-1)
        hist = torch.bincount(idx, minlength=self.n_codes).to(flat.dtype)
        sums = torch.zeros_like(self.codebook).index_add_(0, idx, flat)
        if _distributed():
            # One collective for both statistics.
            packed = _all_reduce_sum(torch.cat([sums, hist[:, None]], dim=1))
            sums, hist = packed[:, :-1], packed[:, -1]
        used = hist > 0
        means = F.normalize(sums / hist.clamp(min=1)[:, None], dim=-1)
        target = torch.where(used[:, None], means, self.codebook)
        decay = self.config.decay
        self.codebook.copy_(F.normalize(decay * self.codebook + (1 - decay) * target, dim=-1))
        self._update_counts(hist.to(self.counts.dtype))
        if self.config.dead_code_restart:
            self._restart_dead(flat)

    def _restart_dead(self, flat: torch.Tensor) -> None:
        dead = self.counts < self.config.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pool = _all_gather_rows(flat)
        rank0 = not _distributed() or dist.get_rank() == 0
        if rank0:
            pick = torch.randint(0, pool.shape[0], (n_dead,), device=pool.device)
            fresh = pool[pick]
        else:
            fresh = torch.empty((n_dead, self.d_code), dtype=flat.dtype, device=flat.device)
        if _distributed():
            dist.broadcast(fresh, src=0)
        self.codebook[dead] = fresh
        # Give restarted codes a grace period before they can be restarted again.
        self.counts[dead] = 1.0

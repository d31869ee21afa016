"""Caduceus: embeddings, blocks, backbone, masked-LM head and sequence-classification head.

Two model families share this code (Schiff et al., 2024):
- Caduceus-PS (``rcps=True``): reverse-complement equivariant by parameter sharing. Hidden states
  carry two strands side by side, (B, L, 2*d_model): channels [:d] follow the forward strand,
  channels [d:] the reverse-complement strand flipped along length *and* channels, so that
  ``model(rc(x)) == rc(model(x))`` where rc flips length and channels.
- Caduceus-Ph (``rcps=False``): bi-directional, not equivariant; RC invariance is obtained post hoc
  by running both strands and averaging (``conjoin``).

A PS layer applies one shared mixer to both strands; here the two strands run as one batch of 2B
for the whole depth of the network (see ``CaduceusBackbone.forward`` for how the official fused
block's per-layer strand swap is followed without moving any data).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from .config import CaduceusConfig
from .mamba import BiMambaWrapper, LayerNorm, RMSNorm, add_norm
from .strands import POOLINGS, pooled_strand_features, rc_hidden, split_strands


@dataclass
class CaduceusOutput:
    """last_hidden_state: (B, L, H), H = 2*d_model for PS; logits: (B, L, vocab) or None;
    hidden_states: per-layer residual streams (see ``CaduceusBackbone.forward``) or None."""

    last_hidden_state: torch.Tensor
    logits: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None


class RCPSEmbedding(nn.Module):
    """Token embedding of both strands, stacked on batch: (2B, L, d) = embed(x) over embed(rc(x)),
    each strand in its own frame (``unstack_strands`` gives the PS layout)."""

    def __init__(self, vocab_size: int, d_model: int, complement_map: list[int], device=None, dtype=None):
        super().__init__()
        self.register_buffer("complement_map", torch.tensor(complement_map, dtype=torch.long, device=device))
        self.embedding = nn.Embedding(vocab_size, d_model, device=device, dtype=dtype)

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def rc(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.complement_map[input_ids.flip(-1)]

    def forward(self, input_ids: torch.Tensor, rc_input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``rc_input_ids`` replaces rc(input_ids) as the second strand's input: padded batches give
        the reverse complement of each unpadded sequence, padded the same way as the forward one."""
        return self.embedding(torch.cat([input_ids, self.rc(input_ids) if rc_input_ids is None else rc_input_ids]))


def unstack_strands(stacked: torch.Tensor, conjugate: bool = False) -> torch.Tensor:
    """(2B, L, d) strands stacked on batch -> the PS layout (B, L, 2d).

    Rows [:B] hold the forward strand, rows [B:] the RC strand in its own frame; the PS layout keeps
    the forward strand in channels [:d] and the RC strand flipped along length and channels in [d:].
    With ``conjugate`` the stack is in the exchanged-and-flipped frame of an odd number of fused
    blocks: the true strands are rc(rows [B:]) and rc(rows [:B]).
    """
    a, b = stacked.chunk(2, dim=0)
    if conjugate:
        a, b = rc_hidden(b), rc_hidden(a)
    return torch.cat([a, rc_hidden(b)], dim=-1)


class CaduceusEmbeddings(nn.Module):
    def __init__(self, config: CaduceusConfig, device=None, dtype=None):
        super().__init__()
        v = config.padded_vocab_size
        self.rcps = config.rcps
        if config.rcps:
            self.word_embeddings = RCPSEmbedding(v, config.d_model, config.complement_list(), device, dtype)
        else:
            self.word_embeddings = nn.Embedding(v, config.d_model, device=device, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, rc_input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """PS: both strands stacked on batch (``rc_input_ids`` as the second strand when given);
        Ph: the rows of ``input_ids`` (and then of ``rc_input_ids``) as a batch of their own."""
        if self.rcps:
            return self.word_embeddings(input_ids, rc_input_ids)
        if rc_input_ids is not None:
            input_ids = torch.cat([input_ids, rc_input_ids])
        return self.word_embeddings(input_ids)


class RCPSWrapper(nn.Module):
    """A PS mixer: one shared ``submodule`` for both strands, which arrive stacked on batch (2B, L, d)."""

    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.submodule(x, **kwargs)


class RCPSAddNormWrapper(nn.Module):
    """Unfused PS add + norm: the norm runs on each strand in its own orientation (no swap)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.submodule = norm


class CaduceusBlock(nn.Module):
    """Pre-norm residual block: (hidden, residual) -> (mixer(norm(hidden + residual)), hidden + residual)."""

    def __init__(self, config: CaduceusConfig, layer_idx: int, device=None, dtype=None):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        ssm = {k: v for k, v in config.ssm_cfg.items() if k != "layer_idx"}
        mixer = BiMambaWrapper(
            config.d_model, bidirectional=config.bidirectional,
            bidirectional_strategy=config.bidirectional_strategy,
            bidirectional_weight_tie=config.bidirectional_weight_tie,
            layer_idx=layer_idx, device=device, dtype=dtype, **ssm,
        )
        norm_cls = RMSNorm if config.rms_norm else LayerNorm
        norm = norm_cls(config.d_model, eps=config.norm_epsilon, device=device, dtype=dtype)
        self.mixer = RCPSWrapper(mixer) if config.rcps else mixer
        self.norm = RCPSAddNormWrapper(norm) if (config.rcps and not config.fused_add_norm) else norm
        self.layer_idx = layer_idx

    @property
    def norm_module(self) -> nn.Module:
        return self.norm.submodule if isinstance(self.norm, RCPSAddNormWrapper) else self.norm

    def forward(self, hidden, residual=None, backend: str = "auto", conjugate: bool = False,
                reuse_inputs: bool = False):
        """PS: hidden and residual are both strands stacked on batch (2B, L, d); ``conjugate`` runs
        the block in the flipped frame (norm and mixer with channel-reversed weights).
        ``reuse_inputs`` (no gradients): the caller will not read hidden or residual again, so the
        block may write over them."""
        hidden, residual = add_norm(hidden, residual, self.norm_module, self.residual_in_fp32, backend,
                                    flip_channels=conjugate, out_dtype=_mixer_input_dtype(hidden),
                                    reuse_inputs=reuse_inputs)
        return self.mixer(hidden, backend=backend, conjugate=conjugate), residual


def _mixer_input_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the mixer's first matmul reads x in: under autocast an fp32 x is cast to the
    autocast dtype there, so the norm writes it in that dtype directly (the same rounding, half the
    memory); otherwise x's own."""
    kind = x.device.type
    if x.dtype == torch.float32 and kind in ("cuda", "cpu") and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


class CaduceusBackbone(nn.Module):
    """Embeddings, blocks and the final norm. ``checkpoint_blocks``: when gradients are taken, keep
    only each block's inputs and recompute the block in the backward pass (whole-block gradient
    checkpointing: the saved activations of every block but one give way to the residual stream)."""

    def __init__(self, config: CaduceusConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.checkpoint_blocks = False
        self.embeddings = CaduceusEmbeddings(config, device, dtype)
        self.layers = nn.ModuleList(CaduceusBlock(config, i, device, dtype) for i in range(config.n_layer))
        norm_cls = RMSNorm if config.rms_norm else LayerNorm
        norm_f = norm_cls(config.d_model, eps=config.norm_epsilon, device=device, dtype=dtype)
        self.norm_f = RCPSAddNormWrapper(norm_f) if (config.rcps and not config.fused_add_norm) else norm_f
        # The complement of every token id, on the model's device (not saved: it comes from the config).
        self.register_buffer("complement_ids", torch.tensor(config.complement_list(), dtype=torch.long, device=device),
                             persistent=False)

    def forward(self, input_ids: torch.Tensor, backend: str = "auto", output_hidden_states: bool = False):
        """input_ids: (B, L) int64 -> (last hidden state (B, L, H), residual streams or None).

        With ``output_hidden_states``, entry k of the list is the residual stream entering layer k
        (entry 0: the embeddings; the last entry: the final hidden state after the norm), each in
        the standard PS orientation (forward strand first) so that every entry is RC-equivariant.

        PS runs both strands stacked on batch, (2B, L, d), from the embedding to the final norm.
        The official fused block reads channels [d:] of the PS layout as the forward strand, so
        every fused block exchanges the strands and flips both (length and channels). Instead of
        moving data, the stack is left where it is and ``conjugate`` records that the true strands
        are the exchanged, flipped rows: a norm then uses its weights reversed and a mixer its
        channel-conjugated weights (``BiMambaWrapper.forward``), which is the same function. Only
        the final output (and a requested intermediate stream) is converted to the PS layout.
        """
        rcps = self.config.rcps
        hidden, conjugate, streams = self._run(self.embeddings(input_ids), backend, output_hidden_states)
        hidden = unstack_strands(hidden, conjugate) if rcps else hidden
        if output_hidden_states:
            streams.append(hidden)
        return hidden, streams

    def strand_states(self, input_ids: torch.Tensor, rc_input_ids: torch.Tensor | None = None,
                      backend: str = "auto") -> tuple[torch.Tensor, bool]:
        """Last hidden state of each strand read 5'->3' in its own frame: (S*B, L, d), and whether
        every row runs opposite to the input row it came from.

        Rows [:B] come from ``input_ids`` and rows [B:] from ``rc_input_ids`` (S = 2); Ph without
        ``rc_input_ids`` gives the B forward rows alone (S = 1); PS always runs two strands
        (``rc_input_ids`` defaults to rc(input_ids)). Each row is a function of its own input row
        only, so a sequence and its reverse complement give the same set of rows in swapped order,
        whatever padding both share. After an odd number of fused PS blocks every row holds the
        other strand of its input, reversed (see ``forward``): then the flag is True and a row's
        valid positions are its input row's, mirrored.
        """
        hidden, conjugate, _ = self._run(self.embeddings(input_ids, rc_input_ids), backend, False)
        if conjugate:
            return rc_hidden(hidden), True
        return hidden, False

    def _run(self, hidden: torch.Tensor, backend: str, output_hidden_states: bool):
        """The blocks and the final norm on embedded rows -> (rows, conjugate, streams or None)."""
        rcps = self.config.rcps
        residual = None
        conjugate = False
        streams = [self._output(hidden)] if output_hidden_states else None
        # Without gradients or requested streams nothing else holds the stream tensors, so each block
        # may write its outputs over its inputs (the embeddings' tensor included).
        # (Not when a gradient flows from the embeddings, as attribution asks, even if no weight needs one.)
        grads = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in self.parameters()))
        reuse = not output_hidden_states and not grads
        checkpointed = self.checkpoint_blocks and grads
        for i, layer in enumerate(self.layers):
            if rcps and self.config.fused_add_norm:
                conjugate = not conjugate
            if checkpointed:
                hidden, residual = torch.utils.checkpoint.checkpoint(layer, hidden, residual, backend, conjugate,
                                                                     False, use_reentrant=False)
            else:
                hidden, residual = layer(hidden, residual, backend, conjugate=conjugate, reuse_inputs=reuse)
            if output_hidden_states and i + 1 < len(self.layers):
                streams.append(self._output((hidden.float() + residual.float()).to(hidden.dtype)))
        norm = self.norm_f.submodule if isinstance(self.norm_f, RCPSAddNormWrapper) else self.norm_f
        # The official final norm reads channels [:d] of the PS layout as forward, fused or not.
        # On the CPU it writes fp32 whatever the compute dtype: the LM head and pooled embeddings
        # then read the fp32 residual stream normalised, not its bf16 rounding.
        hidden = add_norm(hidden, residual, norm, self.config.residual_in_fp32, backend, flip_channels=conjugate,
                          out_dtype=torch.float32 if hidden.device.type == "cpu" else None)[0]
        return hidden, conjugate, streams

    def _output(self, stream: torch.Tensor) -> torch.Tensor:
        """An intermediate residual stream in the output layout. Between fused blocks the stack is
        in the exchanged, flipped frame; read without that conversion it is the stream in the
        standard orientation (forward strand first), which is what the streams report."""
        return unstack_strands(stream) if self.config.rcps else stream


class Caduceus(nn.Module):
    """Container matching the official module path ``caduceus.backbone``."""

    def __init__(self, config: CaduceusConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.backbone = CaduceusBackbone(config, device, dtype)

    def forward(self, input_ids, backend="auto", output_hidden_states=False):
        return self.backbone(input_ids, backend, output_hidden_states)


class RCPSLMHead(nn.Module):
    """Equivariant LM head: logits = fwd @ W.T + flip_C(rc) @ W[complement].T (W tied to the embedding)."""

    def __init__(self, true_dim: int, vocab_size: int, complement_map: list[int], device=None, dtype=None):
        super().__init__()
        self.register_buffer("complement_map", torch.tensor(complement_map, dtype=torch.long, device=device))
        self.true_dim = true_dim
        self.lm_head = nn.Linear(true_dim, vocab_size, bias=False, device=device, dtype=dtype)

    @property
    def weight(self) -> torch.Tensor:
        return self.lm_head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fwd, rc = split_strands(x)
        w = self.weight.to(x.dtype)
        return F.linear(fwd, w) + F.linear(rc.flip(-1), w[self.complement_map])


class CaduceusPreTrainedModel(nn.Module):
    """Shared init, dtype/device helpers and the backend switch."""

    def __init__(self, config: CaduceusConfig):
        super().__init__()
        self.config = config
        self.backend = "auto"
        self.source: dict = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def compute_dtype_name(self) -> str | None:
        """'fp32' or 'bf16': what the compute dtype it was loaded with (``compute_dtype``, e.g.
        'auto') means on its device; None when it was not loaded with one."""
        from .precision import dtype_name, model_compute_dtype

        return dtype_name(model_compute_dtype(self))

    def init_weights(self) -> None:
        """The official initialisation: normal(0, initializer_range) for linears and embeddings,
        zero linear biases (except dt_proj), and out_proj rescaled by 1/sqrt(n_residuals * n_layer)."""
        cfg = self.config.initializer_cfg
        std = cfg["initializer_range"]
        for module in self.modules():
            if isinstance(module, nn.Linear):
                if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
        if cfg["rescale_prenorm_residual"]:
            scale = math.sqrt(cfg["n_residuals_per_layer"] * self.config.n_layer)
            for name, p in self.named_parameters():
                if name.endswith("out_proj.weight"):
                    nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                    with torch.no_grad():
                        p /= scale


class CaduceusForMaskedLM(CaduceusPreTrainedModel):
    """Backbone + tied masked-LM head. ``forward(input_ids)`` -> :class:`CaduceusOutput`."""

    def __init__(self, config: CaduceusConfig, device=None, dtype=None):
        super().__init__(config)
        self.caduceus = Caduceus(config, device, dtype)
        v = config.padded_vocab_size
        if config.rcps:
            self.lm_head = RCPSLMHead(config.d_model, v, config.complement_list(), device, dtype)
            self.lm_head.lm_head.weight = self.caduceus.backbone.embeddings.word_embeddings.embedding.weight
        else:
            self.lm_head = nn.Linear(config.d_model, v, bias=False, device=device, dtype=dtype)
            self.lm_head.weight = self.caduceus.backbone.embeddings.word_embeddings.weight
        self.init_weights()

    @property
    def backbone(self) -> CaduceusBackbone:
        return self.caduceus.backbone

    def tied_parameter_names(self) -> set[str]:
        """State-dict keys that alias another parameter (absent from released checkpoints)."""
        return {"lm_head.lm_head.weight" if self.config.rcps else "lm_head.weight"}

    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False,
                compute_logits: bool = True) -> CaduceusOutput:
        """input_ids: (B, L) int64 -> last_hidden_state (B, L, H) and logits (B, L, vocab)."""
        hidden, streams = self.caduceus(input_ids, self.backend, output_hidden_states)
        logits = self.logits(hidden) if compute_logits else None
        return CaduceusOutput(last_hidden_state=hidden, logits=logits, hidden_states=streams)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The masked-LM head on hidden states (..., H) -> (..., vocab), e.g. only at masked positions.
        Computed in hidden's dtype even under autocast: the head is 16 words wide, so fp32 costs
        nothing, and fp32 hidden states (the CPU's) keep the log-likelihoods out of bf16 rounding."""
        kind = hidden.device.type
        with torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else contextlib.nullcontext():
            if self.config.rcps:
                return self.lm_head(hidden)
            return F.linear(hidden, self.lm_head.weight.to(hidden.dtype))


class CaduceusForSequenceClassification(CaduceusPreTrainedModel):
    """Backbone + linear head on pooled hidden states, with the paper's reverse-complement handling.

    Every strand is pooled in its own 5'->3' frame (mean, max, center, first or last) and the
    pooled features are averaged over the strands before the linear ``score`` (which equals
    averaging the logits). Caduceus-PS always uses both of its strands (conjoined in training and
    evaluation); Caduceus-Ph uses the reverse complement when ``conjoin`` (evaluation) or
    ``conjoin_train`` (training) is set. Either way predictions do not depend on the strand.

    ``forward(input_ids, lengths)`` -> logits (B, num_labels); ``lengths`` (B,) marks right padding.
    """

    def __init__(self, config: CaduceusConfig, num_labels: int = 2, pooling: str = "mean", conjoin: bool = True,
                 *, conjoin_train: bool = False, center_width: int = 1, bias: bool = False, device=None, dtype=None):
        super().__init__(config)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.num_labels, self.pooling, self.center_width = num_labels, pooling, center_width
        self.conjoin, self.conjoin_train = conjoin, conjoin_train
        self.caduceus = Caduceus(config, device, dtype)
        self.score = nn.Linear(config.d_model, num_labels, bias=bias, device=device, dtype=dtype)
        self.init_weights()

    @property
    def backbone(self) -> CaduceusBackbone:
        return self.caduceus.backbone

    def tied_parameter_names(self) -> set[str]:
        return set()

    def uses_both_strands(self) -> bool:
        """Whether this pass averages two strands (PS always; Ph when conjoined in this mode)."""
        return self.config.rcps or (self.conjoin_train if self.training else self.conjoin)

    def features(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d): pooled features averaged over the strands this mode uses."""
        strands = pooled_strand_features(self.backbone, input_ids, lengths, pooling=self.pooling,
                                         center_width=self.center_width, conjoin=self.uses_both_strands(),
                                         backend=self.backend)
        return strands.mean(1)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: (B, L), lengths: (B,) or None -> logits (B, num_labels)."""
        features = self.features(input_ids, lengths)
        return self.score(features.to(self.score.weight.dtype))

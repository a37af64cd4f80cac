"""MultiheadAttention drop-in: torch.nn.MultiheadAttention's constructor, forward and state_dict, our flash kernels."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as torch_F
from torch import Tensor, nn

from dlkernels.ops.attention import HEAD_DIMS, scaled_dot_product_attention


def _as_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """nn.MultiheadAttention's mask convention (bool True = do not attend; float = added) as an additive float."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, -math.inf)
    return mask.to(dtype)


class MultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose attention runs in our flash-attention kernels.

    The projections stay torch GEMMs. need_weights=True needs the full attention matrix, which a flash kernel
    never forms, so that call (and the rarely used add_bias_kv / add_zero_attn options) runs torch's own
    implementation; pass need_weights=False for the fast path. So does a head dim (embed_dim / num_heads) the
    kernels do not have (dlkernels.ops.attention.HEAD_DIMS), so that every torch configuration runs. A query whose keys are all masked gives 0 where torch gives NaN.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None, *, backend: str = "auto"):
        super().__init__(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first,
                         device, dtype)
        self.backend = backend

    def _projections(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        bias_q = bias_k = bias_v = None
        if self.in_proj_bias is not None:
            bias_q, bias_k, bias_v = self.in_proj_bias.chunk(3)
        if self._qkv_same_embed_dim:
            if query is key and key is value:  # self-attention: one GEMM for all three
                return torch_F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            weight_q, weight_k, weight_v = self.in_proj_weight.chunk(3)
        else:
            weight_q, weight_k, weight_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return (torch_F.linear(query, weight_q, bias_q), torch_F.linear(key, weight_k, bias_k),
                torch_F.linear(value, weight_v, bias_v))

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if need_weights or self.bias_k is not None or self.add_zero_attn or self.head_dim not in HEAD_DIMS:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        if is_causal and attn_mask is None:
            raise RuntimeError("MultiheadAttention: is_causal is a hint that attn_mask is the causal mask; pass "
                               "attn_mask too (as torch.nn.MultiheadAttention requires)")
        batched = query.dim() == 3
        if not batched:  # (L, E): one sequence
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, source = query.shape[0], query.shape[1], key.shape[1]
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = self._projections(query, key, value)
        # (B, L, E) -> (B, H, L, D) as strided views: the kernels take any strides with a unit head-dim stride.
        q, k, v = (t.unflatten(-1, (heads, head_dim)).transpose(1, 2) for t in (q, k, v))

        causal = is_causal and key_padding_mask is None  # torch's rule: the hint replaces the mask only then
        bias = None
        if attn_mask is not None and not causal:
            bias = _as_additive(attn_mask, q.dtype)
            bias = bias.view(batch, heads, length, source) if bias.dim() == 3 else bias
        if key_padding_mask is not None:
            padding = _as_additive(key_padding_mask, q.dtype).view(batch, 1, 1, source)
            bias = padding if bias is None else bias + padding
        out = scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=causal, backend=self.backend)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, None


__all__ = ["MultiheadAttention"]

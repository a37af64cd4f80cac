"""Transformer reference models: TransformerLM (PyTorch's word-language-model), a GPT-style decoder, a BERT-style
encoder and ViT. Attention runs in our flash kernels (dlkernels.nn.MultiheadAttention or
dlkernels.scaled_dot_product_attention / dlkernels.attention); embeddings, linear layers, LayerNorm, GELU and
dropout are torch's. Head dims must be one of the kernels' (32, 64, 96, 128, 256) for our path to run.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dlkernels
from dlkernels.models._layers import Layers


def _with_attention(layer: nn.Module, attr: str, L: Layers) -> nn.Module:
    """Replace layer.<attr> (an nn.MultiheadAttention) by ours when L is ours; parameters move over unchanged."""
    if L.ours:
        old = getattr(layer, attr)
        new = L.mha(old.embed_dim, old.num_heads, dropout=old.dropout, bias=old.in_proj_bias is not None,
                    batch_first=old.batch_first)
        new.load_state_dict(old.state_dict())
        setattr(layer, attr, new)
    return layer


# ----------------------------------------------------------------------------- TransformerLM
class PositionalEncoding(nn.Module):
    """Sinusoidal positional encoding of the PyTorch word-language-model example (seq-first, buffer `pe`)."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0).transpose(0, 1))  # (max_len, 1, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(x + self.pe[:x.size(0)])


class TransformerLM(nn.Module):
    """The classic PyTorch word-language-model: embedding x sqrt(d), sinusoidal positions,
    nn.TransformerEncoder (post-LN, ReLU FFN) with a square causal mask, sequence-first, linear decoder, log-softmax.
    forward(src (T, N)) -> log-probabilities (T, N, ntoken). Our MultiheadAttention replaces each layer's
    self_attn (same keys); the causal mask reaches it as is_causal and runs our causal flash kernel."""

    def __init__(self, ntoken: int = 10000, d_model: int = 256, nhead: int = 4, d_hid: int = 1024, nlayers: int = 2,
                 dropout: float = 0.2, *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self.d_model = d_model
        self.pos_encoder = PositionalEncoding(d_model, dropout)
        layers = []
        for _ in range(nlayers):
            layers.append(_with_attention(nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout), "self_attn", L))
        self.transformer_encoder = nn.TransformerEncoder(layers[0], nlayers, enable_nested_tensor=False)
        self.transformer_encoder.layers = nn.ModuleList(layers)  # distinct layers (TransformerEncoder deep-copies)
        self.encoder = nn.Embedding(ntoken, d_model)
        self.decoder = nn.Linear(d_model, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    @staticmethod
    def square_subsequent_mask(size: int, device=None, dtype=torch.float32) -> Tensor:
        return nn.Transformer.generate_square_subsequent_mask(size, device=device, dtype=dtype)

    def forward(self, src: Tensor) -> Tensor:
        x = self.pos_encoder(self.encoder(src) * math.sqrt(self.d_model))
        mask = self.square_subsequent_mask(src.shape[0], src.device, x.dtype)
        output = self.transformer_encoder(x, mask=mask, is_causal=True)
        return F.log_softmax(self.decoder(output), dim=-1)


# ----------------------------------------------------------------------------- GPT
class CausalSelfAttention(nn.Module):
    def __init__(self, L: Layers, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.c_attn = nn.Linear(d_model, 3 * d_model)
        self.c_proj = nn.Linear(d_model, d_model)
        self.n_head, self.dropout, self._L = n_head, dropout, L

    def forward(self, x: Tensor) -> Tensor:
        batch, length, channels = x.shape
        q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2)
                   for t in self.c_attn(x).split(channels, dim=2))
        y = self._L.sdpa(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(batch, length, channels))


class GPTBlock(nn.Module):
    def __init__(self, L: Layers, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(L, d_model, n_head, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-style decoder (nanoGPT layout): learned token and position embeddings, pre-LN blocks with causal flash
    attention (our scaled_dot_product_attention, is_causal), final LayerNorm, untied lm_head.
    forward(idx (N, T)) -> logits (N, T, vocab)."""

    def __init__(self, vocab_size: int = 512, block_size: int = 256, n_layer: int = 4, n_head: int = 4,
                 d_model: int = 256, dropout: float = 0.0, *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, d_model), wpe=nn.Embedding(block_size, d_model), drop=nn.Dropout(dropout),
            h=nn.ModuleList([GPTBlock(L, d_model, n_head, dropout) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(d_model)))
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, idx: Tensor) -> Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


# ----------------------------------------------------------------------------- BERT
class BertSelfAttention(nn.Module):
    """Bidirectional attention over right-padded sequences. Ours packs the valid tokens and runs the varlen flash
    kernel (cu_seqlens); the twin runs SDPA with a key padding mask. Padded positions' outputs are zero in both."""

    def __init__(self, L: Layers, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.n_head, self.dropout, self._L = n_head, dropout, L

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        batch, length, channels = x.shape
        qkv = self.qkv(x)
        dropout_p = self.dropout if self.training else 0.0
        if self._L.ours:
            lengths = valid.sum(1)
            cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
            packed = qkv[valid].view(-1, 3, self.n_head, channels // self.n_head)  # (total, 3, H, D)
            q, k, v = packed.unbind(1)
            y_packed = dlkernels.attention(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=length,
                                           max_seqlen_k=length, dropout_p=dropout_p, backend=self._L.backend)
            y = x.new_zeros(batch, length, channels).index_put((valid,), y_packed.reshape(-1, channels))
        else:
            q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in qkv.split(channels, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :], dropout_p=dropout_p)
            y = y.transpose(1, 2).reshape(batch, length, channels) * valid[..., None]
        return self.out(y)


class BertLayer(nn.Module):
    def __init__(self, L: Layers, d_model: int, n_head: int, d_ff: int, dropout: float):
        super().__init__()
        self.attention = BertSelfAttention(L, d_model, n_head, dropout)
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        x = self.ln_1(x + self.drop(self.attention(x, valid)))
        return self.ln_2(x + self.drop(self.ffn(x)))


class BERT(nn.Module):
    """BERT-style encoder: token + position + segment embeddings, LayerNorm, post-LN layers of bidirectional
    attention (right padding: attention_mask (N, T), 1 = token; ours runs it as varlen packed sequences) and GELU
    FFNs; a masked-LM head. forward(input_ids, attention_mask=None) -> (hidden (N, T, d), mlm logits (N, T, V));
    hidden is zero at padded positions (so the logits there are the head's bias)."""

    def __init__(self, vocab_size: int = 1000, max_len: int = 128, n_layer: int = 2, n_head: int = 4,
                 d_model: int = 256, d_ff: int = 1024, dropout: float = 0.0, *, impl: str = "dlkernels",
                 backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self.word_embeddings = nn.Embedding(vocab_size, d_model)
        self.position_embeddings = nn.Embedding(max_len, d_model)
        self.token_type_embeddings = nn.Embedding(2, d_model)
        self.embeddings_ln = nn.LayerNorm(d_model, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList([BertLayer(L, d_model, n_head, d_ff, dropout) for _ in range(n_layer)])
        self.mlm_head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None):
        batch, length = input_ids.shape
        valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        positions = torch.arange(length, device=input_ids.device)
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        x = self.drop(self.embeddings_ln(x))
        for layer in self.layers:
            x = layer(x, valid)
        x = x * valid[..., None]  # padded positions carry nothing
        return x, self.mlm_head(x)


# ----------------------------------------------------------------------------- ViT
class MLPBlock(nn.Sequential):
    def __init__(self, d_model: int, mlp_dim: int, dropout: float):
        super().__init__(nn.Linear(d_model, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, d_model),
                         nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    def __init__(self, L: Layers, num_heads: int, d_model: int, mlp_dim: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-6)
        self.self_attention = L.mha(d_model, num_heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-6)
        self.mlp = MLPBlock(d_model, mlp_dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, L: Layers, seq_length: int, num_layers: int, num_heads: int, d_model: int, mlp_dim: int,
                 dropout: float, attention_dropout: float):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, d_model).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(L, num_heads, d_model, mlp_dim, dropout, attention_dropout))
            for i in range(num_layers)))
        self.ln = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class ViT(nn.Module):
    """Vision Transformer in torchvision's layout and keys (conv_proj, class_token, encoder.pos_embedding,
    encoder.layers.encoder_layer_<i>.{ln_1, self_attention, ln_2, mlp}, encoder.ln, heads.head; the defaults are
    vit_b_16). Patch embedding is our conv (16x16 stride 16 by default),
    attention our MultiheadAttention."""

    def __init__(self, image_size: int = 224, patch_size: int = 16, num_layers: int = 12, num_heads: int = 12,
                 hidden_dim: int = 768, mlp_dim: int = 3072, dropout: float = 0.0, attention_dropout: float = 0.0,
                 num_classes: int = 1000, *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self.patch_size, self.hidden_dim = patch_size, hidden_dim
        self.conv_proj = L.conv(3, hidden_dim, patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length = (image_size // patch_size) ** 2 + 1
        self.encoder = Encoder(L, seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(hidden_dim, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (N, patches, hidden)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])

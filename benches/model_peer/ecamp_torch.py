#!/usr/bin/env python3
"""A plain PyTorch re-implementation of the official ECAMP pre-training model (ToniChopp/ECAMP,
`Pre-training/module/model_ecamp.py`, `context_fusion.py`, `bert_modeling.py`, `bert_config.py`,
with timm 0.4.12 `Block` / `PatchEmbed` and HF transformers 4.42 BERT modules written out here),
used as the peer of the Rust port: same state-dict names as the official checkpoints, same forward,
same three losses. Only torch + numpy + the standard library are needed (safetensors files are
read and written by hand).

Subcommands (sizes from `--preset tiny|base` or `--config FILE`, an `EcampConfig` JSON):

  init        build the model with the official initialisation, save the state dict (.pth, and
              optionally .safetensors)
  batch       write a random but realistic batch (safetensors) in the `ecamp forward` format
  forward     load weights + batch, print the three losses in float64 and float32 (one JSON line)
  bench-step  training-step time (dropout on, AdamW, forward + backward + step), on the CPU
              or, with --device cuda [--amp bf16|f16], on a GPU
  count       trainable parameters (pos embeds excluded), built on the meta device

State-dict notes (all as the official model's `state_dict()` has them):
  * the fusion layer lives at `bert_encoder.model.bert.context_fusion_layer.` (the attribute name
    in the official `MultimodalBertModel.__init__`); on load, any other
    `bert_encoder.model.bert.<name>.` whose children are the fusion layer's is accepted too;
  * `bert_encoder.model.cls.predictions.decoder.bias` is HF's alias of
    `bert_encoder.model.cls.predictions.bias` (one parameter, two names, as `torch.save` of the
    official model writes it); safetensors output drops the alias (shared tensors are not allowed
    there); on load either name suffices;
  * the pooler exists (the official `MultimodalBertModel` ignores `add_pooling_layer=False`) and
    is computed but unused;
  * the MLM decoder weight is its own parameter (the official tie is broken by replacing `bert`).
"""

import argparse
import json
import math
import re
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

DEFAULTS = {
    "mlp_ratio": 4,
    "type_vocab": 2,
    "hidden_dropout": 0.1,
    "attn_dropout": 0.1,
    "mask_ratio": 0.75,
    "mlm_masked_only": False,
    "norm_pix_loss": False,
    "sr_final_relu": True,
}

_FIELDS = [
    "img_size", "patch", "vit_dim", "vit_depth", "vit_heads", "dec_dim", "dec_depth", "dec_heads",
    "bert_hidden", "bert_layers", "bert_heads", "bert_intermediate", "vocab_size", "max_len", "sr_window",
]

PRESETS = {
    "tiny": dict(zip(_FIELDS, [32, 4, 64, 2, 4, 32, 2, 2, 64, 2, 2, 128, 5000, 64, 6]), **DEFAULTS),
    "base": dict(zip(_FIELDS, [224, 16, 768, 12, 12, 512, 4, 16, 768, 6, 6, 1536, 30000, 256, 12]), **DEFAULTS),
}

TEXT_PAD, TEXT_CLS, TEXT_MASK = 0, 2, 3


def load_config(args):
    if getattr(args, "config", None):
        with open(args.config) as f:
            raw = json.load(f)
        cfg = dict(DEFAULTS)
        cfg.update({k: v for k, v in raw.items() if k in DEFAULTS or k in _FIELDS})
        missing = [k for k in _FIELDS if k not in cfg]
        if missing:
            sys.exit(f"config {args.config}: missing {', '.join(missing)}")
    else:
        cfg = dict(PRESETS[args.preset or "tiny"])
    g = cfg["img_size"] // cfg["patch"]
    assert cfg["img_size"] % cfg["patch"] == 0, "img_size must be a multiple of patch"
    assert cfg["vit_dim"] % 4 == 0 and cfg["dec_dim"] % 4 == 0, "2-D sin-cos needs dims % 4 == 0"
    assert cfg["vit_dim"] % cfg["vit_heads"] == 0 and cfg["dec_dim"] % cfg["dec_heads"] == 0
    assert cfg["bert_hidden"] % cfg["bert_heads"] == 0
    assert 1 <= cfg["sr_window"] <= g
    return cfg


def grid_of(cfg):
    return cfg["img_size"] // cfg["patch"]


# ----------------------------------------------------------------------------------------------
# safetensors by hand (8-byte LE header length, JSON header, raw LE data)
# ----------------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F32": (np.float32, torch.float32),
    "F64": (np.float64, torch.float64),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
    "U8": (np.uint8, torch.uint8),
}
_TORCH_TO_ST = {v[1]: k for k, v in _ST_DTYPES.items()}


def st_save(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _TORCH_TO_ST:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def st_load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode())
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        np_dt = np.dtype(_ST_DTYPES[info["dtype"]][0]).newbyteorder("<")
        b, e = info["data_offsets"]
        arr = np.frombuffer(raw[base + b:base + e], dtype=np_dt).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True))
    return out


# ----------------------------------------------------------------------------------------------
# MAE 2-D sin-cos position table (MAE's k/(D/2) frequencies; cls row zero)
# ----------------------------------------------------------------------------------------------

def _sincos_1d(dim, pos):
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(dim, g, cls_token=True):
    gh = np.arange(g, dtype=np.float32)
    gw = np.arange(g, dtype=np.float32)
    grid = np.meshgrid(gw, gh)  # grid[0] = x (column), grid[1] = y (row)
    grid = np.stack(grid, axis=0).reshape([2, 1, g, g])
    emb = np.concatenate([_sincos_1d(dim // 2, grid[0]), _sincos_1d(dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return emb


# ----------------------------------------------------------------------------------------------
# timm 0.4.12 ViT pieces
# ----------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch, in_chans, dim):
        super().__init__()
        self.num_patches = (img_size // patch) ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, heads, sdpa=False):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.sdpa = sdpa

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, sdpa=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, sdpa)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class InterpolateConvSuperResolution(nn.Module):
    def __init__(self, final_relu=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(3, 3, kernel_size=3, stride=1, padding=1)
        self.final_relu = final_relu

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        r = x
        x = self.conv2(F.relu(self.conv1(x)))
        x = x + r
        return F.relu(x) if self.final_relu else x


# ----------------------------------------------------------------------------------------------
# HF transformers 4.42 BERT pieces (post-LN, exact GELU, LayerNorm eps 1e-12)
# ----------------------------------------------------------------------------------------------

class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        H = c["bert_hidden"]
        self.word_embeddings = nn.Embedding(c["vocab_size"], H, padding_idx=TEXT_PAD)
        self.position_embeddings = nn.Embedding(c["max_len"], H)
        self.token_type_embeddings = nn.Embedding(c["type_vocab"], H)
        self.LayerNorm = nn.LayerNorm(H, eps=1e-12)
        self.dropout = nn.Dropout(c["hidden_dropout"])

    def forward(self, ids, token_type=None):
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device).unsqueeze(0)
        if token_type is None:
            token_type = torch.zeros_like(ids)
        h = self.word_embeddings(ids) + self.token_type_embeddings(token_type) + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(h))


class BertSelfAttention(nn.Module):
    def __init__(self, c, sdpa=False):
        super().__init__()
        H = c["bert_hidden"]
        self.num_attention_heads = c["bert_heads"]
        self.attention_head_size = H // c["bert_heads"]
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.dropout = nn.Dropout(c["attn_dropout"])
        self.sdpa = sdpa

    def _heads(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.num_attention_heads, self.attention_head_size).permute(0, 2, 1, 3)

    def forward(self, hidden, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None):
        # HF: with encoder_hidden_states, keys/values come from them and the encoder mask replaces
        # the self-attention mask.
        if encoder_hidden_states is not None:
            kv, attention_mask = encoder_hidden_states, encoder_attention_mask
        else:
            kv = hidden
        q = self._heads(self.query(hidden))
        k = self._heads(self.key(kv))
        v = self._heads(self.value(kv))
        if self.sdpa:
            p = self.dropout.p if self.training else 0.0
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=p)
        else:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
            if attention_mask is not None:
                scores = scores + attention_mask
            probs = self.dropout(F.softmax(scores, dim=-1))
            ctx = probs @ v
        B, _, T, _ = ctx.shape
        return ctx.permute(0, 2, 1, 3).reshape(B, T, -1)


class BertSelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        H = c["bert_hidden"]
        self.dense = nn.Linear(H, H)
        self.LayerNorm = nn.LayerNorm(H, eps=1e-12)
        self.dropout = nn.Dropout(c["hidden_dropout"])

    def forward(self, h, inp):
        return self.LayerNorm(self.dropout(self.dense(h)) + inp)


class BertAttention(nn.Module):
    def __init__(self, c, sdpa=False):
        super().__init__()
        self.self = BertSelfAttention(c, sdpa)
        self.output = BertSelfOutput(c)

    def forward(self, h, mask):
        return self.output(self.self(h, mask), h)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["bert_hidden"], c["bert_intermediate"])

    def forward(self, h):
        return F.gelu(self.dense(h))


class BertOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["bert_intermediate"], c["bert_hidden"])
        self.LayerNorm = nn.LayerNorm(c["bert_hidden"], eps=1e-12)
        self.dropout = nn.Dropout(c["hidden_dropout"])

    def forward(self, h, inp):
        return self.LayerNorm(self.dropout(self.dense(h)) + inp)


class BertLayer(nn.Module):
    def __init__(self, c, sdpa=False):
        super().__init__()
        self.attention = BertAttention(c, sdpa)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, h, mask):
        a = self.attention(h, mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, c, sdpa=False):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c, sdpa) for _ in range(c["bert_layers"])])

    def forward(self, h, mask):
        for layer in self.layer:
            h = layer(h, mask)
        return h


class BertPooler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["bert_hidden"], c["bert_hidden"])

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


class ECAMPFusionLayer(nn.Module):
    """`context_fusion.py`: self-attention, cross-attention to the visible patch tokens (raw
    context, no output projection) + gap_mlp(GAP token), out_layer, FFN."""

    def __init__(self, c, sdpa=False):
        super().__init__()
        H = c["bert_hidden"]
        self.attention = BertAttention(c, sdpa)
        self.cross_self_attention = BertSelfAttention(c, sdpa)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)
        self.gap_mlp = nn.Linear(H, H)
        self.out_layer = BertSelfOutput(c)

    def forward(self, h0, img, gap, text_mask, image_mask):
        a = self.attention(h0, text_mask)
        cross = self.cross_self_attention(a, text_mask, encoder_hidden_states=img, encoder_attention_mask=image_mask)
        cross = cross + self.gap_mlp(gap)
        b = self.out_layer(cross, a)
        return self.output(self.intermediate(b), b)


class MultimodalBertModel(nn.Module):
    def __init__(self, c, sdpa=False):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c, sdpa)
        self.pooler = BertPooler(c)
        self.context_fusion_layer = ECAMPFusionLayer(c, sdpa)

    def forward(self, img, gap, ids, attention_mask, token_type=None):
        dt = img.dtype
        # HF get_extended_attention_mask: (1 - m)[:, None, None, :] * finfo(model dtype).min
        text_mask = (1.0 - attention_mask[:, None, None, :].to(dt)) * torch.finfo(dt).min
        image_mask = (1.0 - torch.ones(img.shape[0], 1, 1, img.shape[1], dtype=dt, device=img.device)) * torch.finfo(dt).min
        h = self.embeddings(ids, token_type)
        h = self.context_fusion_layer(h, img, gap, text_mask, image_mask)
        h = self.encoder(h, text_mask)
        self.pooler(h)  # computed but unused, as in the official model
        return h


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["bert_hidden"], c["bert_hidden"])
        self.LayerNorm = nn.LayerNorm(c["bert_hidden"], eps=1e-12)

    def forward(self, h):
        return self.LayerNorm(F.gelu(self.dense(h)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transform = BertPredictionHeadTransform(c)
        self.decoder = nn.Linear(c["bert_hidden"], c["vocab_size"], bias=False)
        self.bias = nn.Parameter(torch.zeros(c["vocab_size"]))
        self.decoder.bias = self.bias  # HF's link: one parameter, two state-dict names

    def forward(self, h):
        return self.decoder(self.transform(h))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.predictions = BertLMPredictionHead(c)

    def forward(self, h):
        return self.predictions(h)


class MultimodalBertMaskedLM(nn.Module):
    def __init__(self, c, sdpa=False):
        super().__init__()
        self.bert = MultimodalBertModel(c, sdpa)
        self.cls = BertOnlyMLMHead(c)


class MultiModalBertEncoder(nn.Module):
    def __init__(self, c, sdpa=False):
        super().__init__()
        self.model = MultimodalBertMaskedLM(c, sdpa)


# ----------------------------------------------------------------------------------------------
# ECAMP
# ----------------------------------------------------------------------------------------------

class ECAMP(nn.Module):
    def __init__(self, c, sdpa=False):
        super().__init__()
        self.c = c
        D, Dd, p = c["vit_dim"], c["dec_dim"], c["patch"]
        self.patch_embed = PatchEmbed(c["img_size"], p, 3, D)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, D), requires_grad=False)
        self.blocks = nn.ModuleList([Block(D, c["vit_heads"], c["mlp_ratio"], sdpa) for _ in range(c["vit_depth"])])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.decoder_embed = nn.Linear(D, Dd, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, L + 1, Dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(Dd, c["dec_heads"], c["mlp_ratio"], sdpa) for _ in range(c["dec_depth"])])
        self.decoder_norm = nn.LayerNorm(Dd, eps=1e-6)
        self.decoder_pred = nn.Linear(Dd, p * p * 3, bias=True)
        self.super_res = InterpolateConvSuperResolution(c["sr_final_relu"])
        self.bert_encoder = MultiModalBertEncoder(c, sdpa)
        self.bert_mlp = nn.Linear(D, c["bert_hidden"], bias=True)

    # -- initialisation (ECAMP.initialize_weights after HF post_init) --
    def initialize_weights(self, zero_patch_bias=True):
        g = grid_of(self.c)
        self.pos_embed.data.copy_(
            torch.from_numpy(get_2d_sincos_pos_embed(self.pos_embed.shape[-1], g)).float().unsqueeze(0))
        self.decoder_pos_embed.data.copy_(
            torch.from_numpy(get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], g)).float().unsqueeze(0))
        # HF post_init for the embeddings: N(0, 0.02), padding row zero; prediction bias zero.
        emb = self.bert_encoder.model.bert.embeddings
        for e in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
            nn.init.normal_(e.weight, mean=0.0, std=0.02)
        with torch.no_grad():
            emb.word_embeddings.weight[TEXT_PAD].zero_()
        nn.init.zeros_(self.bert_encoder.model.cls.predictions.bias)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        if zero_patch_bias:
            nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    # -- image side --
    def unpatchify(self, x):
        p = self.c["patch"]
        h = w = int(round(x.shape[1] ** 0.5))
        x = x.reshape(x.shape[0], h, w, p, p, 3)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], 3, h * p, w * p)

    def random_masking(self, x, noise):
        N, L, D = x.shape
        len_keep = int(L * (1 - self.c["mask_ratio"]))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], dtype=x.dtype, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore, ids_keep

    def image_encoder(self, imgs, noise):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore, ids_keep = self.random_masking(x, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore, ids_keep

    def image_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def mask_2_pixel(self, mask, sr_window):
        p = self.c["patch"]
        W = self.c["sr_window"]
        g = int(round(mask.shape[1] ** 0.5))
        mask = mask.reshape(mask.shape[0], g, g)
        super_mask = torch.zeros_like(mask)
        for i in range(mask.shape[0]):
            li, lj = int(sr_window[i, 0]), int(sr_window[i, 1])
            super_mask[i, li:li + W, lj:lj + W] = 1
        ones = lambda k: torch.ones((k, k), dtype=mask.dtype, device=mask.device)
        pixel_mask = torch.kron(mask, ones(p)).unsqueeze(1).repeat(1, 3, 1, 1)
        super_pixel_mask = torch.kron(super_mask, ones(2 * p)).unsqueeze(1).repeat(1, 3, 1, 1)
        return pixel_mask, super_pixel_mask

    def forward_loss(self, imgs, big, pred, mask, sr_window):
        pixel_mask, super_mask = self.mask_2_pixel(mask, sr_window)
        rec = self.unpatchify(pred)
        sr = self.super_res(rec)
        if self.c["norm_pix_loss"]:
            # correction (not official): MAE's per-patch normalised targets, loss in patch space
            p = self.c["patch"]
            n, ch, h, _ = imgs.shape
            g = h // p
            target = imgs.reshape(n, ch, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(n, g * g, p * p * ch)
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
            mim = (((pred - target) ** 2) * mask.unsqueeze(-1)).mean()
        else:
            mim = F.mse_loss(rec * pixel_mask, imgs * pixel_mask, reduction="mean")
        res = F.mse_loss(sr * super_mask, big * super_mask, reduction="mean")
        return mim, res

    def forward_report_decoder(self, latent, ids, labels, attention_mask, weights):
        z = self.bert_mlp(latent)
        gap = z[:, 1:, :].mean(dim=1).unsqueeze(1)
        img = z[:, 1:, :]
        m = self.bert_encoder.model
        h = m.bert(img, gap, ids, attention_mask)
        logits = m.cls(h)
        V = logits.shape[-1]
        ce = F.cross_entropy(logits.view(-1, V), labels.view(-1), reduction="none")
        w = weights.view(-1).to(ce.dtype)
        if self.c["mlm_masked_only"]:
            # correction (not official): masked positions only, mean over their number
            sel = (ids != labels).view(-1).to(ce.dtype)
            return (ce * w * sel).sum() / sel.sum().clamp_min(1.0)
        return (ce * w).mean()

    def forward(self, big, noise, ids, labels, attention_mask, weights, sr_window):
        S = self.c["img_size"]
        imgs = F.interpolate(big, size=(S, S), mode="bicubic", align_corners=False)
        latent, mask, ids_restore, _ = self.image_encoder(imgs, noise)
        pred = self.image_decoder(latent, ids_restore)
        mim, res = self.forward_loss(imgs, big, pred, mask, sr_window)
        mlm = self.forward_report_decoder(latent, ids, labels, attention_mask, weights)
        return mim, res, mlm


# ----------------------------------------------------------------------------------------------
# Weights in and out
# ----------------------------------------------------------------------------------------------

_FUSION_CHILDREN = r"(attention|cross_self_attention|gap_mlp|out_layer|intermediate|output)"
_FUSION_RE = re.compile(r"^bert_encoder\.model\.bert\.([A-Za-z_]+)\.(" + _FUSION_CHILDREN + r"\..*)$")
_HEAD_BIAS = "bert_encoder.model.cls.predictions.bias"
_HEAD_BIAS_ALIAS = "bert_encoder.model.cls.predictions.decoder.bias"


def read_weights(path):
    if path.endswith(".safetensors"):
        sd = st_load(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
            sd = sd["model"]
    out = {}
    for k, v in sd.items():
        m = _FUSION_RE.match(k)
        if m and m.group(1) not in ("embeddings", "encoder", "pooler"):
            k = "bert_encoder.model.bert.context_fusion_layer." + m.group(2)
        if k.endswith("embeddings.position_ids") or k.endswith("embeddings.token_type_ids"):
            continue  # non-persistent buffers of newer/older HF versions
        out[k] = v
    if _HEAD_BIAS not in out and _HEAD_BIAS_ALIAS in out:
        out[_HEAD_BIAS] = out[_HEAD_BIAS_ALIAS]
    out.setdefault(_HEAD_BIAS_ALIAS, out.get(_HEAD_BIAS))
    return out


def load_model(cfg, path, dtype):
    model = ECAMP(cfg)
    sd = read_weights(path)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing:
        sys.exit(f"{path}: missing {len(missing)} tensor(s): {', '.join(missing[:10])}")
    if unexpected:
        print(f"note: {path}: {len(unexpected)} unused tensor(s): {', '.join(unexpected[:10])}", file=sys.stderr)
    return model.to(dtype).eval()


def count_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# Random batch in the `ecamp forward` format
# ----------------------------------------------------------------------------------------------

def make_batch(cfg, n, seed):
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    S2, g, T, V, W = 2 * cfg["img_size"], grid_of(cfg), cfg["max_len"], cfg["vocab_size"], cfg["sr_window"]
    # Images: smooth grey background + a couple of bright blobs, normalised to roughly N(0, 1),
    # replicated to 3 channels as the official Grayscale(3).
    yy, xx = np.meshgrid(np.linspace(0, 1, S2), np.linspace(0, 1, S2), indexing="ij")
    big = np.empty((n, 3, S2, S2), dtype=np.float32)
    for i in range(n):
        a, b, c0, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(-0.3, 0.3), rng.uniform(0, 6.3)
        plane = 0.5 + 0.2 * np.sin(2 * np.pi * (a * xx + b * yy) + ph) + c0 * (yy - 0.5)
        for _ in range(rng.integers(1, 3)):
            cy, cx, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.2)
            plane += rng.uniform(0.2, 0.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        plane += 0.02 * rng.standard_normal(plane.shape)
        plane = (np.clip(plane, 0, 1) - 0.4721) / 0.3037
        big[i] = plane[None].astype(np.float32)
    noise = torch.rand(n, g * g, generator=gen)
    labels = np.zeros((n, T), dtype=np.int64)
    ids = np.zeros((n, T), dtype=np.int64)
    att = np.zeros((n, T), dtype=np.int64)
    weights = np.zeros((n, T), dtype=np.float32)
    for i in range(n):
        length = int(np.clip(round(T * rng.uniform(0.55, 0.85)), 2, T))
        labels[i, 0] = TEXT_CLS
        labels[i, 1:length] = rng.integers(5, V, size=length - 1)
        ids[i] = labels[i]
        masked = rng.uniform(size=length) < 0.7
        masked[0] = False
        ids[i, :length][masked] = TEXT_MASK
        att[i, :length] = 1
        w = np.ones(T)
        w[1:length] = rng.choice([0.05, 1.0, 1.0, 1.0, 1.0, 3.4], size=length - 1)
        weights[i] = (w * T / w.sum()).astype(np.float32)
    sr = rng.integers(0, g - W + 1, size=(n, 2)).astype(np.int64)
    return {
        "big": torch.from_numpy(big),
        "noise": noise,
        "ids": torch.from_numpy(ids),
        "labels": torch.from_numpy(labels),
        "attention_mask": torch.from_numpy(att),
        "weights": torch.from_numpy(weights),
        "sr_window": torch.from_numpy(sr),
    }


BATCH_KEYS = ["big", "noise", "ids", "labels", "attention_mask", "weights", "sr_window"]


# ----------------------------------------------------------------------------------------------
# Subcommands
# ----------------------------------------------------------------------------------------------

def cmd_init(args):
    cfg = load_config(args)
    torch.manual_seed(args.seed)
    model = ECAMP(cfg)
    model.initialize_weights(zero_patch_bias=not args.official_patch_bias)
    sd = model.state_dict()
    torch.save({"model": sd} if args.wrap_model else sd, args.out)
    if args.safetensors:
        st = {k: v for k, v in sd.items() if k != _HEAD_BIAS_ALIAS}
        st_save(args.safetensors, st, {"format": "pt", "producer": "ecamp_torch.py"})
    print(json.dumps({"tensors": len(sd), "trainable": count_trainable(model), "out": args.out}))


def cmd_batch(args):
    cfg = load_config(args)
    b = make_batch(cfg, args.n, args.seed)
    st_save(args.out, b, {"producer": "ecamp_torch.py", "seed": args.seed})
    print(json.dumps({k: list(v.shape) for k, v in b.items()}))


def run_forward(cfg, weights, batch, dtype):
    model = load_model(cfg, weights, dtype)
    b = {k: batch[k] for k in BATCH_KEYS}
    for k in ("big", "noise", "weights"):
        b[k] = b[k].to(dtype)
    with torch.no_grad():
        mim, sr, mlm = model(**b)
    return float(mim), float(sr), float(mlm)


def cmd_forward(args):
    cfg = load_config(args)
    batch = st_load(args.batch)
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        sys.exit(f"{args.batch}: missing {', '.join(missing)}")
    torch.set_num_threads(args.threads) if args.threads else None
    m64, s64, l64 = run_forward(cfg, args.weights, batch, torch.float64)
    m32, s32, l32 = run_forward(cfg, args.weights, batch, torch.float32)
    print(json.dumps({"mim": m64, "sr": s64, "mlm": l64, "mim_f32": m32, "sr_f32": s32, "mlm_f32": l32}))


def adamw_groups(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.05}]


def cmd_bench_step(args):
    cfg = load_config(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        # burn's CUDA matmuls use TF32 tensor cores for f32; let torch do the same.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = {"none": None, "bf16": torch.bfloat16, "f16": torch.float16}[args.amp]
    if amp is not None and not cuda:
        sys.exit("--amp needs --device cuda")
    model = ECAMP(cfg, sdpa=args.sdpa)
    model.initialize_weights()
    model.to(dev).train()
    opt = torch.optim.AdamW(adamw_groups(model), lr=1e-3, betas=(0.9, 0.95))
    batches = [{k: v.to(dev) for k, v in make_batch(cfg, args.batch_size, args.seed + 1 + i).items()}
               for i in range(4)]
    # f16 needs loss scaling as torch's AMP recipe has it; bf16 and f32 do not.
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp == "f16")

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    times = []
    for step in range(args.warmup + args.steps):
        b = batches[step % len(batches)]
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            mim, sr, mlm = model(**b)
        scaler.scale(mim + sr + mlm).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        sync()
        dt = (time.perf_counter() - t0) * 1000.0
        if step >= args.warmup:
            times.append(dt)
    print(json.dumps({
        "step_ms_median": statistics.median(times),
        "step_ms_mean": statistics.fmean(times),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "device": str(dev),
        "amp": args.amp,
        "sdpa": bool(args.sdpa),
        "last_losses": [mim.item(), sr.item(), mlm.item()],
        "torch": torch.__version__,
    }))


def cmd_count(args):
    cfg = load_config(args)
    with torch.device("meta"):
        model = ECAMP(cfg)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(json.dumps({"trainable": count_trainable(model), "frozen_pos_embeds": frozen}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def sized(p):
        g = p.add_mutually_exclusive_group()
        g.add_argument("--preset", choices=sorted(PRESETS), help="tiny (default) or base")
        g.add_argument("--config", help="EcampConfig JSON file")
        return p

    p = sized(sub.add_parser("init", help="initialise and save the state dict"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=".pth output (torch.save)")
    p.add_argument("--safetensors", help="also write the tensors here")
    p.add_argument("--wrap-model", action="store_true", help='save {"model": state_dict}')
    p.add_argument("--official-patch-bias", action="store_true",
                   help="keep PyTorch's default Conv2d bias for patch_embed (the official code never "
                        "resets it) instead of zero")
    p.set_defaults(func=cmd_init)

    p = sized(sub.add_parser("batch", help="write a random batch (safetensors)"))
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_batch)

    p = sized(sub.add_parser("forward", help="losses in float64 and float32"))
    p.add_argument("--weights", required=True, help=".pth/.pt/.bin (raw or {'model': ...}) or .safetensors")
    p.add_argument("--batch", required=True, help="safetensors batch")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_forward)

    p = sized(sub.add_parser("bench-step", help="training-step time (CPU, or a GPU with --device cuda)"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sdpa", action="store_true",
                   help="F.scaled_dot_product_attention instead of the eager timm/HF attention")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda[:N]")
    p.add_argument("--amp", choices=["none", "bf16", "f16"], default="none",
                   help="torch.autocast dtype on CUDA (f16 with a GradScaler)")
    p.set_defaults(func=cmd_bench_step)

    p = sized(sub.add_parser("count", help="trainable parameters (pos embeds excluded)"))
    p.set_defaults(func=cmd_count)

    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()

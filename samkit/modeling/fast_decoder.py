"""A faster, algebraically equivalent forward pass of the two-way transformer.

The decoder's attentions between a handful of prompt tokens (``Nt`` ~ 5-10) and thousands of
image tokens (``Ni`` = 4096) spend most of their time projecting the *image* tokens
(q/k/v/out projections on Ni x C per prompt). Because those projections are linear, they
can be folded into the few tokens instead ("absorbed"):

* token -> image: ``q_h . (W_k,h x + b) = (W_k,h^T q_h) . x + const`` (the constant cancels in
  the softmax) and ``sum_i p_i (W_v x_i + b) = W_v (sum_i p_i x_i) + b`` (rows of p sum to 1);
* image -> token: ``(W_q,h x + b_q,h) . k_h = x . (W_q,h^T k_h) + b_q,h . k_h`` and
  ``W_o concat_h(P_h v_h) = sum_h P_h (v_h W_o,h^T)``.

Every image-token projection becomes a product with ``heads x Nt`` vectors instead of a
C x C/2 matrix: per projection pair the cost falls from ``Ni*C*C`` to ``2*heads*Nt*Ni*C``
multiply-adds (by count, 0.44x for SAM's 8 heads, ~7 tokens and C = 256), and the prompt-independent work of
the first block is done once per image. Per-prompt image tokens are never added to their
positional encoding (``q . (x + pe)`` is split into a per-prompt and one shared product), the
output projection's bias and the block's skip connection go into the same matrix product as
the attention, so no (prompts x Ni x C) temporaries are made for them. Results match the plain
path to float rounding, outputs and gradients (tests compare both, and with Meta's reference).

The fast path is a part chosen when the model is built: :class:`FastTwoWayTransformer` and
:class:`FastMaskDecoder` are drop-in subclasses of the plain modules (same parameters, same
state dict) that :func:`samkit.modeling.build_sam` uses unless ``fast_decoder=False``. This
module imports the plain modules; they never import it.
"""
from __future__ import annotations

import torch

from .mask_decoder import MaskDecoder
from .transformer import Attention, TwoWayTransformer

__all__ = ["FastMaskDecoder", "FastTwoWayTransformer", "image_to_token", "token_to_image", "two_way_forward",
           "upscale_and_predict"]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, d) -> (B, H, N, d/H)."""
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is active for ``device_type`` (in-place products would mix dtypes then)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _scores_with_positions(queries: torch.Tensor, image: torch.Tensor, image_pos: torch.Tensor) -> torch.Tensor:
    """``queries @ (image + image_pos)^T`` without building ``image + image_pos`` per prompt.

    Args:
        queries: (B, R, C) query rows.
        image: (B or 1, Ni, C) image tokens.
        image_pos: (1 or B, Ni, C) positional encoding (usually shared by all prompts).

    Returns:
        (B, R, Ni) scores. With a shared ``image_pos`` its term is one matrix product for all
        prompts, and the per-prompt image term is accumulated into it in place.
    """
    b, r, c = queries.shape
    if image.shape[0] == 1:  # shared image: adding the positions once is cheap
        return torch.matmul(queries, (image + image_pos).transpose(1, 2))
    if image_pos.shape[0] == 1:
        scores = torch.mm(queries.reshape(b * r, c), image_pos[0].transpose(0, 1)).view(b, r, -1)
    else:
        scores = torch.bmm(queries, image_pos.transpose(1, 2))
    if _autocast_on(scores.device.type):
        return torch.baddbmm(scores, queries, image.transpose(1, 2))
    return scores.baddbmm_(queries, image.transpose(1, 2))


def token_to_image(attn: Attention, tokens_pe: torch.Tensor, image: torch.Tensor,
                   image_pos: torch.Tensor) -> torch.Tensor:
    """Tokens attend to image tokens without projecting the image tokens.

    Args:
        attn: the attention module (its weights are used).
        tokens_pe: (B, Nt, C) queries (tokens + their positional encoding).
        image: (B or 1, Ni, C) values (image tokens).
        image_pos: (1 or B, Ni, C) positional encoding; the keys are ``image + image_pos``.

    Returns:
        (B, Nt, C), equal to ``attn(tokens_pe, image + image_pos, image)``.
    """
    h = attn.num_heads
    b, nt, c = tokens_pe.shape
    d = attn.internal_dim
    dh = d // h
    q = _heads(attn.q_proj(tokens_pe), h)  # (B, H, Nt, dh)
    w_k = attn.k_proj.weight.view(h, dh, c)  # (H, dh, C)
    q_eff = torch.einsum("bhtd,hdc->bhtc", q, w_k).reshape(b, h * nt, c) * dh ** -0.5
    probs = _scores_with_positions(q_eff, image, image_pos).softmax(dim=-1)  # (B, H*Nt, Ni)
    pooled = torch.matmul(probs, image).view(b, h, nt, c)  # (B, H, Nt, C)
    w_v = attn.v_proj.weight.view(h, dh, c)
    out = torch.einsum("bhtc,hdc->bthd", pooled, w_v).reshape(b, nt, d) + attn.v_proj.bias
    return attn.out_proj(out)


def shared_token_to_image(attn: Attention, tokens_pe: torch.Tensor, image_pe: torch.Tensor,
                          image: torch.Tensor) -> torch.Tensor:
    """Token -> image attention when all B prompts share one (1, Ni, C) image: k and v are
    projected once and the prompts are folded into the query rows (no per-prompt copies)."""
    h = attn.num_heads
    b, nt, _ = tokens_pe.shape
    d = attn.internal_dim
    k = _heads(attn.k_proj(image_pe), h)[0]  # (H, Ni, dh)
    v = _heads(attn.v_proj(image), h)[0]
    q = _heads(attn.q_proj(tokens_pe), h).transpose(0, 1).reshape(h, b * nt, d // h)  # (H, B*Nt, dh)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # (H, B*Nt, dh)
    out = out.view(h, b, nt, d // h).permute(1, 2, 0, 3).reshape(b, nt, d)
    return attn.out_proj(out)


def image_to_token(attn: Attention, image: torch.Tensor, image_pos: torch.Tensor, tokens_pe: torch.Tensor,
                   tokens: torch.Tensor, *, image_q: torch.Tensor | None = None,
                   residual: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
    """Image tokens attend to the prompt tokens without projecting the image tokens.

    Args:
        attn: the attention module.
        image: (B or 1, Ni, C) image tokens; the queries are ``image + image_pos``.
        image_pos: (1 or B, Ni, C) positional encoding.
        tokens_pe: (B, Nt, C) keys (tokens + positional encoding).
        tokens: (B, Nt, C) values.
        image_q: optional precomputed ``attn.q_proj(image + image_pos)`` (1, Ni, d) shared by
            all prompts; cheaper than absorbing when the image tokens are the same for every prompt.
        residual: optional (B or 1, Ni, C) tensor added to the output in the same matrix
            product (the block's skip connection).
        inplace: allow updating a (B, Ni, C) ``residual`` in place when autograd is off (the
            caller owns it and does not need it afterwards).

    Returns:
        (B, Ni, C), equal to ``attn(image + image_pos, tokens_pe, tokens) (+ residual)``.
    """
    h = attn.num_heads
    b, nt, c = tokens_pe.shape
    d = attn.internal_dim
    dh = d // h
    k = _heads(attn.k_proj(tokens_pe), h)  # (B, H, Nt, dh)
    v = _heads(attn.v_proj(tokens), h)  # (B, H, Nt, dh)
    scale = dh ** -0.5
    # Scores are laid out (B, H, Nt, Ni) so the softmax over the few tokens runs along a
    # non-innermost axis (vectorised over Ni) instead of over a tiny innermost axis.
    if image_q is not None:
        qh = _heads(image_q, h)[0]  # (H, Ni, dh), shared: fold the prompts into the rows
        scores = torch.matmul(k.transpose(0, 1).reshape(h, b * nt, dh), qh.transpose(-1, -2)) * scale
        scores = scores.view(h, b, nt, -1).transpose(0, 1)  # (B, H, Nt, Ni)
    else:
        w_q = attn.q_proj.weight.view(h, dh, c)
        k_eff = torch.einsum("bhtd,hdc->bhtc", k, w_q).reshape(b, h * nt, c) * scale
        bias = torch.einsum("bhtd,hd->bht", k, attn.q_proj.bias.view(h, dh)).reshape(b, h * nt, 1) * scale
        scores = (_scores_with_positions(k_eff, image, image_pos) + bias).view(b, h, nt, -1)
    probs = scores.softmax(dim=2).reshape(b, h * nt, -1)  # (B, H*Nt, Ni)
    w_o = attn.out_proj.weight.view(c, h, dh)
    # Each head's probabilities sum to 1 over the tokens, so adding out_proj.bias / heads to
    # every value row adds exactly out_proj.bias to every output row (no broadcast copy).
    values = torch.einsum("bhtd,chd->bhtc", v, w_o) + attn.out_proj.bias / h
    values = values.reshape(b, h * nt, c)
    if residual is None:
        return torch.bmm(probs.transpose(1, 2), values)
    if inplace and residual.shape[0] == b and not torch.is_grad_enabled() and not _autocast_on(residual.device.type):
        return residual.baddbmm_(probs.transpose(1, 2), values)
    return torch.baddbmm(residual.expand(b, -1, -1), probs.transpose(1, 2), values)


def two_way_forward(transformer: TwoWayTransformer, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                    point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :meth:`TwoWayTransformer.forward`, with absorbed projections.

    ``image_embedding`` may have batch 1 (shared by all prompts) or B.
    """
    keys = image_embedding.flatten(2).transpose(1, 2)
    key_pe = image_pe.flatten(2).transpose(1, 2)
    queries = point_embedding
    for index, layer in enumerate(transformer.layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(queries, queries, queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q, q, queries)
        queries = layer.norm1(queries)
        shared = keys.shape[0] == 1 and queries.shape[0] > 1
        cross = layer.cross_attn_token_to_image
        back = layer.cross_attn_image_to_token
        if shared:  # plain projections of the shared image are cheaper, done once
            keys_pe = keys + key_pe
            queries = queries + shared_token_to_image(cross, queries + point_embedding, keys_pe, keys)
            image_q = back.q_proj(keys_pe)
        else:
            queries = queries + token_to_image(cross, queries + point_embedding, keys, key_pe)
            image_q = None
        queries = layer.norm2(queries)
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(image_to_token(back, keys, key_pe, queries + point_embedding, queries, image_q=image_q,
                                          residual=keys, inplace=index > 0))  # later keys are ours
    final = token_to_image(transformer.final_attn_token_to_image, queries + point_embedding, keys, key_pe)
    queries = transformer.norm_final_attn(queries + final)
    return queries, keys


# Inference upscaling on a CPU runs in blocks of image rows whose largest intermediate holds about
# this many values (2 MB in float32: about one core's L2 cache), so the (tokens x 16 x C/8) features
# never travel to main memory (measured effect: scripts/runs/design_notes.md). On a GPU the blocks
# would only add kernel launches (4 per prompt for vit_b): it runs batched. A graph being exported
# (torch.export, ONNX) runs batched too: traced, the blocks become scatters into the output, slow
# in onnxruntime (benchmarks/bench_web.py, "stop 22" vs now).
_BLOCK_VALUES = 1 << 19


def _exporting() -> bool:
    """Whether a graph is being captured by ``torch.export`` (the ONNX exporter uses it)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_exporting") and compiler.is_exporting())


def upscale_and_predict(decoder, keys: torch.Tensor, mask_tokens: torch.Tensor, grid: tuple[int, int],
                        outputs: range) -> torch.Tensor:
    """Output upscaling + hypernetwork product, computed token-major (channels-last).

    A 2x2-stride-2 transposed convolution is a linear map from each input pixel to its four
    output pixels, so ``decoder.output_upscaling`` runs as two matmuls on the (B, Ni, C) image
    tokens with fused ``layer_norm``; the pixels are put in image order only at the end, on
    the K mask channels instead of the C/8 feature channels. On a CPU, without autograd and when
    the features are large, each prompt is processed in blocks of grid rows small enough to stay
    in cache, written straight into the output (not while exporting: a traced graph runs batched).
    Equal to the plain conv-transpose path up to float rounding (the blocked and the batched path
    give identical values).

    Args:
        decoder: the :class:`~samkit.modeling.mask_decoder.MaskDecoder`.
        keys: (B, Ni, C) image tokens from the transformer (Ni = h * w).
        mask_tokens: (B, num_mask_tokens, C) mask token outputs.
        grid: (h, w) of the image embedding.
        outputs: which mask tokens to turn into masks.

    Returns:
        (B, len(outputs), 4h, 4w) mask logits.
    """
    up1, norm, act1, up2, act2 = decoder.output_upscaling
    b, n, c = keys.shape
    h, w = grid
    c1, c2 = up1.out_channels, up2.out_channels
    w1 = up1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1)  # (C, [i, j, o])
    w2 = up2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
    b1, b2 = up1.bias.repeat(4), up2.bias.repeat(4)
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](mask_tokens[:, i, :]) for i in outputs], dim=1)
    k = hyper.shape[1]

    def features(tokens: torch.Tensor) -> torch.Tensor:  # (T, C) -> (T * 16, C/8), rows [i1, j1, i2, j2]
        x = torch.addmm(b1, tokens, w1).view(-1, c1)
        x = act1(torch.nn.functional.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
        return act2(torch.addmm(b2, x, w2)).view(-1, c2)

    if (torch.is_grad_enabled() or keys.device.type != "cpu" or b * n * 16 * c2 <= _BLOCK_VALUES
            or _exporting()):
        masks = torch.bmm(features(keys.reshape(b * n, c)).view(b, n * 16, c2), hyper.transpose(1, 2))
        masks = masks.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)  # (B, K, y, i1, i2, x, j1, j2)
        return masks.reshape(b, k, 4 * h, 4 * w)
    out = keys.new_empty((b, k, 4 * h, 4 * w), dtype=torch.promote_types(keys.dtype, hyper.dtype))
    hyper_t = hyper.transpose(1, 2)  # (B, C/8, K)
    rows = max(1, _BLOCK_VALUES // (w * 16 * c2))  # grid rows per block
    for i in range(b):
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            block = torch.mm(features(keys[i, y0 * w:y1 * w]), hyper_t[i].to(keys.dtype))  # (r*w*16, K)
            out[i, :, 4 * y0:4 * y1].view(k, y1 - y0, 2, 2, w, 2, 2).copy_(
                block.view(y1 - y0, w, 2, 2, 2, 2, k).permute(6, 0, 2, 4, 1, 3, 5))
    return out


class FastTwoWayTransformer(TwoWayTransformer):
    """:class:`TwoWayTransformer` whose forward is :func:`two_way_forward` (absorbed projections)."""

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as :meth:`TwoWayTransformer.forward`."""
        return two_way_forward(self, image_embedding, image_pe, point_embedding)


class FastMaskDecoder(MaskDecoder):
    """:class:`MaskDecoder` whose upscaling runs token-major (:func:`upscale_and_predict`)."""

    def masks_from_tokens(self, keys: torch.Tensor, mask_tokens: torch.Tensor, grid: tuple[int, int],
                          index: range | list[int]) -> torch.Tensor:
        """Same contract as :meth:`MaskDecoder.masks_from_tokens`."""
        return upscale_and_predict(self, keys, mask_tokens, grid, index)

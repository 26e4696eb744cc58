"""A BERT forward pass for inference that runs its position-wise layers on real tokens only.

In a batch of passages of different lengths, padding is a sixth of the positions even after
sorting by length (sentence-transformers' and lead's encodes alike), and BERT spends about
four fifths of its time in the position-wise linear layers, which compute the padding too.
Here the real tokens are packed into one (tokens, hidden) matrix for every linear layer,
LayerNorm and activation, and scattered back into the padded batch only for attention (SDPA
with the padding mask). Same weights, same operations per real token: the hidden states of
the real positions equal `BertModel`'s up to float rounding; padded positions are zero.

Used by the compiled encode path (`lead.encode.compile_towers`), where inductor fuses the
packing into the neighbouring kernels; training and the eager paths run the backbone as is.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the forward takes


def packable(backbone: nn.Module) -> bool:
    """Whether `backbone` is a plain BERT encoder this forward pass reproduces."""
    from transformers import BertModel

    config = backbone.config
    return (
        type(backbone) is BertModel
        and not config.is_decoder
        and not getattr(config, "add_cross_attention", False)
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
    )


def real_positions(attention_mask: Tensor) -> Tensor:
    """Flat indices of the real tokens of a (B, S) mask (their count depends on the data, so
    it is computed outside a compiled graph)."""
    return attention_mask.reshape(-1).nonzero().squeeze(1)


def packed_hidden_states(
    bert: nn.Module, input_ids: Tensor, attention_mask: Tensor, real: Tensor,
    token_type_ids: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """`bert`'s hidden states (embedding output, then every block) as (B, S, H) tensors, in
    eval mode; `real` is `real_positions(attention_mask)`. The blocks are zero at padded
    positions."""
    batch, length = input_ids.shape
    embedded = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    x = embedded.reshape(batch * length, -1).index_select(0, real)
    hidden = x.shape[-1]
    attend = attention_mask.bool()[:, None, None, :]

    def padded(packed: Tensor) -> Tensor:
        return packed.new_zeros(batch * length, packed.shape[-1]).index_copy(0, real, packed)

    states = [embedded]
    for block in bert.encoder.layer:
        attention = block.attention.self
        heads, size = attention.num_attention_heads, attention.attention_head_size
        query, key, value = (
            padded(projection(x)).view(batch, length, heads, size).transpose(1, 2)
            for projection in (attention.query, attention.key, attention.value)
        )
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=attend,
                                                 scale=attention.scaling)
        context = context.transpose(1, 2).reshape(batch * length, hidden).index_select(0, real)
        out = block.attention.output
        x = out.LayerNorm(out.dense(context) + x)
        inner = block.intermediate.intermediate_act_fn(block.intermediate.dense(x))
        x = block.output.LayerNorm(block.output.dense(inner) + x)
        states.append(padded(x).view(batch, length, hidden))
    return tuple(states)


def compiled_packed_forward(bert: nn.Module) -> Callable[..., tuple[Tensor, ...]]:
    """`packed_hidden_states` of this one model, compiled (dynamic shapes); the model is
    bound in, so that frozen weights become constants of its own graph."""
    compiled = torch.compile(partial(packed_hidden_states, bert), dynamic=True)

    def forward(**inputs: Tensor) -> tuple[Tensor, ...]:
        return compiled(**inputs, real=real_positions(inputs["attention_mask"]))

    return forward

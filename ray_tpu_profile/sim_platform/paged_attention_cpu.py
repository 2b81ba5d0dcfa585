"""Ragged paged attention in plain JAX: the stand-in for tpu-inference's Pallas kernel on CPU.

tpu-inference's default attention (`kernels/ragged_paged_attention/v3/kernel.py`,
`ragged_paged_attention`) is a Pallas TPU kernel: it does not run on the JAX CPU backend,
not even in Pallas' TPU interpret mode. `ragged_paged_attention` here has the same
signature, reads and writes the same paged KV-cache layout and returns the same
(output, kv_cache) pair, so the model around it is unchanged; it is jit-able and exact
(float32 accumulation), only slower than the kernel would be on a TPU.

The layout, from the kernel's `get_kv_cache_shape` / `merge_kv`:
kv_cache is [num_pages, page_size, num_kv_heads_x2 // kv_packing, kv_packing, head_dim_128]
(head_dim padded to 128; kv_packing = 32 // dtype bits). Flattened to
[num_pages, page_size, num_kv_heads_x2, head_dim_128], row 2h holds key head h and row
2h+1 value head h. Sequence i owns rows [i * pages_per_seq, (i + 1) * pages_per_seq) of
page_indices; its tokens are queries[cu_q_lens[i]:cu_q_lens[i + 1]], the last q_len of its
kv_lens[i] positions; distribution[2] is the number of sequences.

Imported only on simulated TPU hosts (tpu_inference_cpu), after JAX.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_HEAD_DIM_ALIGNMENT = 128  # the kernel pads head_dim to the TPU lane width
_INT32_MAX = np.iinfo(np.int32).max


def _dtype_packing(dtype: Any) -> int:
    """Values per 32-bit word: how many KV heads the layout packs side by side."""
    return 32 // (jnp.dtype(dtype).itemsize * 8)


def _align_to(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def merge_kv(keys: jax.Array, values: jax.Array) -> jax.Array:
    """New tokens' keys and values in the cache's per-token layout.

    [num_tokens, kv_heads, head_dim] x 2 -> [num_tokens, kv_heads_x2 // packing, packing,
    head_dim_128], key h at row 2h and value h at row 2h+1 (the kernel's merge_kv).
    """
    num_tokens, num_kv_heads, head_dim = keys.shape
    packing = _dtype_packing(keys.dtype)
    num_rows = num_kv_heads * 2
    num_rows_padded = _align_to(num_rows, packing)
    head_dim_padded = _align_to(head_dim, _HEAD_DIM_ALIGNMENT)
    rows = jnp.concatenate([keys, values], axis=-1).reshape(num_tokens, num_rows, head_dim)
    rows = jnp.pad(rows, ((0, 0), (0, num_rows_padded - num_rows), (0, head_dim_padded - head_dim)))
    return rows.reshape(num_tokens, num_rows_padded // packing, packing, head_dim_padded)


def _token_sequences(
    num_tokens: int, kv_lens: jax.Array, cu_q_lens: jax.Array, num_seqs: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """For each query token: its sequence, its position in that sequence's KV, and
    whether it is a real token (not padding past the last sequence)."""
    max_num_seqs = kv_lens.shape[0]
    seq_ids = jnp.arange(max_num_seqs)
    # Padding sequences end "never", so a token's sequence is the number of real
    # sequences that end at or before it.
    q_ends = jnp.where(seq_ids < num_seqs, cu_q_lens[1:], _INT32_MAX)
    token_ids = jnp.arange(num_tokens, dtype=jnp.int32)
    token_seq = jnp.searchsorted(q_ends, token_ids, side="right").astype(jnp.int32)
    token_seq = jnp.minimum(token_seq, max_num_seqs - 1)
    token_valid = token_ids < cu_q_lens[num_seqs]
    # A sequence's new tokens are the last q_len of its kv_len positions.
    token_pos = kv_lens[token_seq] - cu_q_lens[token_seq + 1] + token_ids
    return token_seq, token_pos, token_valid


def _write_new_kv(
    kv_cache: jax.Array,
    merged_kv: jax.Array,
    page_indices: jax.Array,
    pages_per_seq: int,
    token_seq: jax.Array,
    token_pos: jax.Array,
    token_valid: jax.Array,
) -> jax.Array:
    page_size = kv_cache.shape[1]
    pages = page_indices[token_seq * pages_per_seq + token_pos // page_size]
    # Padding tokens point past the last page, and mode="drop" leaves the cache alone there.
    pages = jnp.where(token_valid, pages, kv_cache.shape[0])
    slots = token_pos % page_size
    return kv_cache.at[pages, slots].set(merged_kv.astype(kv_cache.dtype), mode="drop")


def _read_page(
    kv_cache: jax.Array,
    page_indices: jax.Array,
    pages_per_seq: int,
    token_seq: jax.Array,
    page_number: jax.Array,
    num_kv_heads: int,
    head_dim: int,
) -> tuple[jax.Array, jax.Array]:
    """Page `page_number` of each token's sequence: keys and values [tokens, page_size,
    kv_heads, head_dim]."""
    num_tokens = token_seq.shape[0]
    page_size, head_dim_padded = kv_cache.shape[1], kv_cache.shape[-1]
    pages = page_indices[token_seq * pages_per_seq + page_number]
    block = kv_cache[pages].reshape(num_tokens, page_size, -1, head_dim_padded)
    block = block[:, :, : num_kv_heads * 2, :head_dim]
    block = block.reshape(num_tokens, page_size, num_kv_heads, 2, head_dim)
    return block[:, :, :, 0, :], block[:, :, :, 1, :]


@functools.partial(
    jax.jit,
    static_argnames=(
        "use_causal_mask",
        "update_kv_cache",
        "skip_kv_mask",
        "sm_scale",
        "sliding_window",
        "soft_cap",
        "out_dtype",
        "mask_value",
        "q_scale",
        "k_scale",
        "v_scale",
        "chunk_prefill_size",
        "d_block_sizes",
        "p_block_sizes",
        "m_block_sizes",
        "vmem_limit_bytes",
        "debug_mode",
        "disable_bounds_checks",
        "disable_semaphore_checks",
    ),
)
def ragged_paged_attention(
    queries: jax.Array,  # [max_num_tokens, num_q_heads, head_dim]
    keys: jax.Array,  # [max_num_tokens, num_kv_heads, head_dim]
    values: jax.Array,  # [max_num_tokens, num_kv_heads, head_dim]
    kv_cache: jax.Array,  # [num_pages, page_size, kv_heads_x2 // packing, packing, head_dim_128]
    kv_lens: jax.Array,  # i32[max_num_seqs]
    page_indices: jax.Array,  # i32[max_num_seqs * pages_per_seq]
    cu_q_lens: jax.Array,  # i32[max_num_seqs + 1]
    distribution: jax.Array,  # i32[3]
    *,
    use_causal_mask: bool = True,
    update_kv_cache: bool = True,
    sm_scale: float = 1.0,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
    q_scale: float | None = None,
    k_scale: float | None = None,
    v_scale: float | None = None,
    **kernel_tuning: Any,
) -> tuple[jax.Array, jax.Array]:
    """The kernel's contract: attention output [max_num_tokens, num_q_heads, head_dim]
    (queries' dtype; zeros for padding tokens) and the KV cache with the new tokens'
    keys and values written (unless update_kv_cache is False: KV-share layers read
    everything from the cache). kernel_tuning takes the kernel's other keywords
    (skip_kv_mask, out_dtype, mask_value, chunk_prefill_size, the block sizes, VMEM and
    debug checks): they tune or check the TPU kernel and change no result here.
    """
    num_tokens, num_q_heads, _ = queries.shape
    num_kv_heads = keys.shape[1]
    heads_per_kv_head = num_q_heads // num_kv_heads
    max_num_seqs = kv_lens.shape[0]
    pages_per_seq = page_indices.shape[0] // max_num_seqs
    num_seqs = distribution[2]

    token_seq, token_pos, token_valid = _token_sequences(num_tokens, kv_lens, cu_q_lens, num_seqs)
    if update_kv_cache:
        merged = merge_kv(keys, values)
        kv_cache = _write_new_kv(kv_cache, merged, page_indices, pages_per_seq, token_seq, token_pos, token_valid)
    q = _queries_for_scores(queries, kv_cache.dtype, q_scale, num_kv_heads, heads_per_kv_head)
    running_sum, acc = _attend_pages(
        q,
        kv_cache,
        page_indices,
        pages_per_seq,
        token_seq,
        token_pos,
        kv_lens,
        num_seqs,
        score_scale=sm_scale * (k_scale or 1.0) * (q_scale or 1.0),
        use_causal_mask=use_causal_mask,
        sliding_window=sliding_window,
        soft_cap=soft_cap,
    )
    return _output(acc, running_sum, v_scale, token_valid).reshape(queries.shape).astype(queries.dtype), kv_cache


def _output(acc: jax.Array, running_sum: jax.Array, v_scale: float | None, token_valid: jax.Array) -> jax.Array:
    """The softmax-weighted values, scaled; zeros for padding tokens."""
    out = acc / jnp.where(running_sum > 0, running_sum, 1.0)[..., None]
    if v_scale is not None:
        out = out * v_scale
    return jnp.where(token_valid[:, None, None, None], out, 0.0)


def _queries_for_scores(
    queries: jax.Array, cache_dtype: Any, q_scale: float | None, num_kv_heads: int, heads_per_kv_head: int
) -> jax.Array:
    """Queries in float32, grouped by the KV head they share [tokens, kv_heads, group, head_dim]."""
    q = queries
    num_tokens, _, head_dim = queries.shape
    if q_scale is not None:
        # As the kernel: queries quantized to the cache's dtype, scale re-applied to scores.
        if jnp.issubdtype(cache_dtype, jnp.floating):
            info = jnp.finfo(cache_dtype)
            q = jnp.clip(q / q_scale, float(info.min), float(info.max))
        q = q.astype(cache_dtype)
    return q.astype(jnp.float32).reshape(num_tokens, num_kv_heads, heads_per_kv_head, head_dim)


def _attend_pages(
    q: jax.Array,
    kv_cache: jax.Array,
    page_indices: jax.Array,
    pages_per_seq: int,
    token_seq: jax.Array,
    token_pos: jax.Array,
    kv_lens: jax.Array,
    num_seqs: jax.Array,
    *,
    score_scale: float,
    use_causal_mask: bool,
    sliding_window: int | None,
    soft_cap: float | None,
) -> tuple[jax.Array, jax.Array]:
    """(softmax denominators, weighted value sums) of every token over the pages of its
    sequence, folded in page by page with an online softmax."""
    num_tokens, num_kv_heads, heads_per_kv_head, head_dim = q.shape
    page_size = kv_cache.shape[1]
    max_num_seqs = kv_lens.shape[0]
    token_kv_len = kv_lens[token_seq]

    def attend_page(page_number, carry):
        running_max, running_sum, acc = carry
        page_keys, page_values = _read_page(
            kv_cache, page_indices, pages_per_seq, token_seq, page_number, num_kv_heads, head_dim
        )
        scores = jnp.einsum("tkgh,tskh->tkgs", q, page_keys.astype(jnp.float32)) * score_scale
        if soft_cap is not None:
            scores = soft_cap * jnp.tanh(scores / soft_cap)
        kv_pos = page_number * page_size + jnp.arange(page_size, dtype=jnp.int32)
        visible = kv_pos[None, :] < token_kv_len[:, None]
        if use_causal_mask:
            visible &= kv_pos[None, :] <= token_pos[:, None]
            if sliding_window is not None:
                visible &= token_pos[:, None] < kv_pos[None, :] + sliding_window
        # Pages past a sequence's end may hold anything (even NaN): zero what is not seen.
        page_values = jnp.where(visible[:, :, None, None], page_values.astype(jnp.float32), 0.0)
        visible = visible[:, None, None, :]
        page_max = jnp.max(jnp.where(visible, scores, -jnp.inf), axis=-1)
        new_max = jnp.maximum(running_max, page_max)
        # Rows with nothing visible yet keep a -inf max: shift by 0 there to avoid inf - inf.
        shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        weights = jnp.where(visible, jnp.exp(scores - shift[..., None]), 0.0)
        rescale = jnp.exp(jnp.where(jnp.isfinite(running_max), running_max - shift, -jnp.inf))
        running_sum = running_sum * rescale + weights.sum(axis=-1)
        acc = acc * rescale[..., None] + jnp.einsum("tkgs,tskh->tkgh", weights, page_values)
        return new_max, running_sum, acc

    stats_shape = (num_tokens, num_kv_heads, heads_per_kv_head)
    init = (
        jnp.full(stats_shape, -jnp.inf, jnp.float32),
        jnp.zeros(stats_shape, jnp.float32),
        jnp.zeros((*stats_shape, head_dim), jnp.float32),
    )
    # Only as many pages as the longest live sequence holds (a dynamic trip count).
    longest_kv_len = jnp.max(jnp.where(jnp.arange(max_num_seqs) < num_seqs, kv_lens, 0))
    num_pages = jnp.minimum((longest_kv_len + page_size - 1) // page_size, pages_per_seq)
    _, running_sum, acc = jax.lax.fori_loop(0, num_pages, attend_page, init)
    return running_sum, acc

"""The pure-JAX ragged paged attention stand-in against a dense NumPy reference: causal
attention per sequence over keys/values gathered from the paged KV cache, and the cache
the call writes (float32, so kv_packing is 1: cache[page, slot, 2h, 0] is key head h and
cache[page, slot, 2h + 1, 0] value head h)."""

from __future__ import annotations

import numpy as np
import pytest

from ray_tpu_profile.sim_platform import paged_attention_cpu as pa

PAGE_SIZE = 16
HEAD_DIM = 128  # the layout's lane alignment: no padding to strip
NUM_Q_HEADS = 2
PAGES_PER_SEQ = 3
SM_SCALE = HEAD_DIM**-0.5  # scores of order 1: softmax weights spread, not one-hot
# Live sequences in the kernel's order, decode first: (q_len, kv_len).
DECODE, CHUNKED, PREFILL = 0, 1, 2
SEQS = [(1, 37), (3, 20), (5, 5)]  # 37 spans 3 pages, 20 crosses a page boundary
NUM_REAL_TOKENS = 9
MAX_NUM_TOKENS = 12  # 3 padding tokens
MAX_NUM_SEQS = 4  # slot 3 is not live, with a stale kv_len left over
NUM_PAGES = MAX_NUM_SEQS * PAGES_PER_SEQ
TOL = {"rtol": 1e-5, "atol": 1e-5}


def make_batch(num_kv_heads: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return {
        "queries": normal(MAX_NUM_TOKENS, NUM_Q_HEADS, HEAD_DIM),
        "keys": normal(MAX_NUM_TOKENS, num_kv_heads, HEAD_DIM),
        "values": normal(MAX_NUM_TOKENS, num_kv_heads, HEAD_DIM),
        # Random everywhere: the decode and chunked sequences' earlier KV, garbage elsewhere.
        "kv_cache": normal(NUM_PAGES, PAGE_SIZE, 2 * num_kv_heads, 1, HEAD_DIM),
        "kv_lens": np.array([37, 20, 5, 7], np.int32),
        "page_indices": rng.permutation(NUM_PAGES).astype(np.int32),
        "cu_q_lens": np.array([0, 1, 4, 9, 9], np.int32),
        "distribution": np.array([1, 3, 3], np.int32),
    }


@pytest.fixture(params=[1, 2], ids=["1kv", "2kv"])
def batch(request):
    return make_batch(request.param)


def run(batch, **options):
    out, cache = pa.ragged_paged_attention(**batch, sm_scale=SM_SCALE, **options)
    return np.asarray(out), np.asarray(cache)


def seq_rows(seq: int) -> slice:
    q_len, _ = SEQS[seq]
    start = sum(q for q, _ in SEQS[:seq])
    return slice(start, start + q_len)


def page_slot(batch, seq: int, pos: int) -> tuple[int, int]:
    return batch["page_indices"][seq * PAGES_PER_SEQ + pos // PAGE_SIZE], pos % PAGE_SIZE


def expected_cache(batch) -> np.ndarray:
    """The input cache with each live token's key and value at its position's page/slot."""
    cache = batch["kv_cache"].copy()
    for seq, (q_len, kv_len) in enumerate(SEQS):
        for token, pos in zip(range(NUM_REAL_TOKENS)[seq_rows(seq)], range(kv_len - q_len, kv_len)):
            page, slot = page_slot(batch, seq, pos)
            cache[page, slot, 0::2, 0] = batch["keys"][token]
            cache[page, slot, 1::2, 0] = batch["values"][token]
    return cache


def sequence_kv(batch, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys and values [kv_len, num_q_heads, head_dim] of a sequence, gathered from the
    expected cache in position order, each kv head repeated for its query heads."""
    kv_len = SEQS[seq][1]
    cache = expected_cache(batch)
    kv = np.stack([cache[page_slot(batch, seq, pos)][:, 0] for pos in range(kv_len)])
    group = NUM_Q_HEADS // batch["keys"].shape[1]
    return np.repeat(kv[:, 0::2], group, axis=1), np.repeat(kv[:, 1::2], group, axis=1)


def reference(batch, seq: int, sliding_window=None, soft_cap=None, causal=True) -> np.ndarray:
    """Dense (causal) attention of one sequence's queries, in float64."""
    q_len, kv_len = SEQS[seq]
    k, v = sequence_kv(batch, seq)
    q = batch["queries"][seq_rows(seq)].astype(np.float64)
    scores = np.einsum("qhd,khd->hqk", q, k) * SM_SCALE
    if soft_cap is not None:
        scores = soft_cap * np.tanh(scores / soft_cap)
    q_pos, k_pos = np.arange(kv_len - q_len, kv_len)[:, None], np.arange(kv_len)[None, :]
    visible = k_pos <= q_pos if causal else np.ones((q_len, kv_len), bool)
    if sliding_window is not None:
        visible &= q_pos - k_pos < sliding_window
    scores = np.where(visible, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.einsum("hqk,khd->qhd", weights / weights.sum(axis=-1, keepdims=True), v)


def test_prefill_tokens_match_dense_causal_attention_over_their_own_keys(batch):
    out, _ = run(batch)
    np.testing.assert_allclose(out[seq_rows(PREFILL)], reference(batch, PREFILL), **TOL)


def test_decode_token_matches_attention_over_cached_keys_and_its_new_key(batch):
    out, _ = run(batch)
    np.testing.assert_allclose(out[seq_rows(DECODE)], reference(batch, DECODE), **TOL)


def test_chunked_prefill_tokens_see_the_cached_prefix_and_earlier_new_tokens(batch):
    out, _ = run(batch)
    np.testing.assert_allclose(out[seq_rows(CHUNKED)], reference(batch, CHUNKED), **TOL)


def test_decode_token_attends_to_every_cached_position_of_its_sequence(batch):
    # A zero query scores every key 0: the output is the plain mean of all 37 values.
    batch["queries"][seq_rows(DECODE)] = 0.0
    out, _ = run(batch)
    _, v = sequence_kv(batch, DECODE)
    np.testing.assert_allclose(out[seq_rows(DECODE)][0], v.mean(axis=0), **TOL)


def test_new_keys_and_values_land_in_their_pages_and_slots_and_nothing_else_changes(batch):
    _, cache = run(batch)
    np.testing.assert_array_equal(cache, expected_cache(batch))


def test_decode_key_and_value_go_to_slot_4_of_the_sequences_third_page(batch):
    _, cache = run(batch)
    page = batch["page_indices"][DECODE * PAGES_PER_SEQ + 2]  # position 36 = 2 * 16 + 4
    np.testing.assert_array_equal(cache[page, 4, 0::2, 0], batch["keys"][0])
    np.testing.assert_array_equal(cache[page, 4, 1::2, 0], batch["values"][0])


@pytest.mark.parametrize(
    "options",
    [{"sliding_window": 4}, {"soft_cap": 1.0}, {"sliding_window": 4, "soft_cap": 1.0}],
    ids=["window", "softcap", "both"],
)
def test_sliding_window_and_soft_cap_match_reference_and_change_the_result(batch, options):
    out, _ = run(batch, **options)
    for seq in (DECODE, CHUNKED, PREFILL):
        np.testing.assert_allclose(out[seq_rows(seq)], reference(batch, seq, **options), **TOL)
    plain, _ = run(batch)
    assert not np.allclose(out[:NUM_REAL_TOKENS], plain[:NUM_REAL_TOKENS], **TOL)


def test_without_causal_mask_every_token_sees_all_kv_len_positions_and_no_more(batch):
    out, _ = run(batch, use_causal_mask=False)
    for seq in (DECODE, CHUNKED, PREFILL):
        np.testing.assert_allclose(out[seq_rows(seq)], reference(batch, seq, causal=False), **TOL)


def test_padding_token_rows_are_zero_despite_a_stale_kv_len_in_the_spare_slot(batch):
    out, _ = run(batch)
    np.testing.assert_array_equal(out[NUM_REAL_TOKENS:], 0.0)


def test_nan_in_cache_slots_past_each_kv_len_does_not_reach_the_output(batch):
    clean, _ = run(batch)
    for seq, (_, kv_len) in enumerate(SEQS):
        for pos in range(kv_len, PAGES_PER_SEQ * PAGE_SIZE):
            batch["kv_cache"][page_slot(batch, seq, pos)] = np.nan
    out, _ = run(batch)
    np.testing.assert_allclose(out, clean, **TOL)

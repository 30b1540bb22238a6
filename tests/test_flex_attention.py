"""The FlexAttention executor: exact against a float64 softmax over the hand-written rule, for every form and
patchout layout; its block mask lists exactly the tiles the rule needs.

On the CPU FlexAttention runs eagerly and has no backward (torch 2.14): backward cases skip there with that
reason and run on CUDA, where the compiled kernels also exercise the block mask's tile lists.
"""

import pytest
import torch
from oracles import rule_mask, softmax_attention
from torch.nn.attention.flex_attention import flex_attention

from models.flex_attention import flex_attention_executor, flex_block_mask
from models.passt import get_model
from models.patterns import TokenLayout, parse_rf_norm_t

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

# per_row_3 and per_row_5 leave a short last cluster on 7 rows; the _16 forms are wider than the grid
FORMS = [
    "per_row_1",
    "per_row_3",
    "per_row_5",
    "high_low",
    "row_overlap_1",
    "row_overlap_2",
    "row_overlap_4",
    "sparse_row_6",
    "per_row_16",
    "row_overlap_16",
]
N_ROWS, N_COLS = 7, 4


def grid(n_rows: int, n_cols: int) -> list[int]:
    return [row for row in range(n_rows) for _ in range(n_cols)]


def drop_tokens(rows: list[int], n_dropped: int, seed: int) -> list[int]:
    """Unstructured patchout: n_dropped random tokens removed, order kept."""
    kept = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[: len(rows) - n_dropped]
    return [rows[i] for i in kept.sort().values.tolist()]


# name: kept patch-token rows on the 7 x 4 grid (2 global tokens first)
LAYOUTS = {
    "full_grid": grid(N_ROWS, N_COLS),
    "time_patchout": grid(N_ROWS, 2),  # two of four time columns dropped
    "frequency_patchout": [row for row in grid(N_ROWS, N_COLS) if row not in (1, 4)],
    "token_dropout": drop_tokens(grid(N_ROWS, N_COLS), 9, seed=0),  # rows keep 1 to 4 tokens
    "empty_row": drop_tokens([row for row in grid(N_ROWS, N_COLS) if row != 3], 5, seed=1),
}


def layout_of(name: str) -> TokenLayout:
    return TokenLayout.from_kept(torch.tensor(LAYOUTS[name]), N_ROWS, 2)


def case(form: str, layout: TokenLayout, dtype=torch.float32, device="cpu"):
    """Inputs of 16-dimensional heads (FlexAttention's CUDA kernels need at least 16) and the rule's mask."""
    torch.manual_seed(0)
    q, k, v = (t.to(device, dtype) for t in torch.randn(3, 2, 3, layout.n_tokens, 16).unbind(0))
    mask = rule_mask(form, layout.token_rows.tolist(), layout.n_rows).to(device)
    return parse_rf_norm_t(form), q, k, v, mask


@pytest.mark.parametrize("layout_name", list(LAYOUTS))
@pytest.mark.parametrize("form", FORMS)
def test_forward_equals_float64_softmax_over_the_rule(form, layout_name):
    layout = layout_of(layout_name)
    pattern, q, k, v, mask = case(form, layout)
    out = flex_attention_executor(q, k, v, pattern, layout, 0.0)
    assert out.dtype == torch.float32 and out.shape == q.shape
    torch.testing.assert_close(out.double(), softmax_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)


def backward_devices():
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def skip_without_flex_backward(device: str) -> None:
    if device != "cpu":
        return
    q = torch.randn(1, 1, 4, 8, requires_grad=True)
    try:
        flex_attention(q, q, q).sum().backward()
    except NotImplementedError as error:
        pytest.skip(f"FlexAttention cannot run a backward pass on this CPU build: {error}")


@pytest.mark.parametrize("device", backward_devices())
@pytest.mark.parametrize("layout_name", list(LAYOUTS))
@pytest.mark.parametrize("form", FORMS)
def test_backward_equals_float64_softmax_over_the_rule(form, layout_name, device):
    skip_without_flex_backward(device)
    layout = layout_of(layout_name)
    pattern, q, k, v, mask = case(form, layout, device=device)
    weights = torch.randn(q.shape, device=device)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    (flex_attention_executor(*leaves, pattern, layout, 0.0) * weights).sum().backward()
    expected = [t.double().clone().requires_grad_() for t in (q, k, v)]
    (softmax_attention(*expected, mask) * weights.double()).sum().backward()
    tolerance = 1e-5 if device == "cpu" else 1e-4  # CUDA: fused kernels, other summation order
    for leaf, reference in zip(leaves, expected, strict=True):
        torch.testing.assert_close(leaf.grad.double(), reference.grad, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("form", ["per_row_3", "high_low", "row_overlap_2"])
def test_16_bit_floats_within_their_rounding(form, dtype):
    """Eager FlexAttention works in float32 and rounds the output: within 2^-8 (bfloat16's unit
    roundoff) of the largest value, plus one rounding of each value."""
    layout = layout_of("token_dropout")
    pattern, q, k, v, mask = case(form, layout, dtype=dtype)
    out = flex_attention_executor(q, k, v, pattern, layout, 0.0)
    assert out.dtype == dtype
    expected = softmax_attention(q, k, v, mask)
    unit = 2.0**-8
    torch.testing.assert_close(out.double(), expected, atol=unit * expected.abs().max().item(), rtol=unit)


def listed_tiles(num_blocks: torch.Tensor, indices: torch.Tensor, n_columns: int) -> torch.Tensor:
    """Dense bool (tiles, listed tiles) of a BlockMask (count, indices) pair."""
    dense = torch.zeros(num_blocks.shape[-1], n_columns, dtype=torch.bool)
    for tile, (count, listed) in enumerate(zip(num_blocks[0, 0].tolist(), indices[0, 0].tolist(), strict=True)):
        dense[tile, listed[:count]] = True
    return dense


def tiles_of_the_rule(mask: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tiles with an allowed pair, tiles whose block_size^2 pairs are all allowed) of a token mask padded
    with forbidden pairs to whole tiles, as FlexAttention's own create_block_mask counts them."""
    n_tiles = -(-mask.shape[0] // block_size)
    padded = torch.zeros(n_tiles * block_size, n_tiles * block_size, dtype=torch.bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    allowed = padded.view(n_tiles, block_size, n_tiles, block_size).sum(dim=(1, 3))
    return allowed > 0, allowed == block_size**2


MULTI_TILE = {
    **{name: (rows, N_ROWS) for name, rows in LAYOUTS.items()},
    "passt_grid_dropout": (drop_tokens(grid(12, 30), 60, seed=2), 12),  # 300 tokens: three 128-tiles
}


@pytest.mark.parametrize("block_size", [4, 16, 128])
@pytest.mark.parametrize("layout_name", list(MULTI_TILE))
@pytest.mark.parametrize("form", FORMS)
def test_block_mask_lists_exactly_the_tiles_the_rule_needs(form, layout_name, block_size):
    """Tiles with an allowed pair are listed (else the kernel skips them), whole ones as full (the kernel
    skips the mask there), no others; the key-side lists the backward reads are their transpose."""
    kept_rows, n_rows = MULTI_TILE[layout_name]
    layout = TokenLayout.from_kept(torch.tensor(kept_rows), n_rows, 2)
    mask = rule_mask(form, layout.token_rows.tolist(), n_rows)
    needed, whole = tiles_of_the_rule(mask, block_size)
    block_mask = flex_block_mask(parse_rf_norm_t(form), layout, "cpu", block_size)
    n_tiles = needed.shape[0]
    partial = listed_tiles(block_mask.kv_num_blocks, block_mask.kv_indices, n_tiles)
    full = listed_tiles(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, n_tiles)
    assert torch.equal(full, whole)
    assert torch.equal(partial, needed & ~whole)
    assert torch.equal(listed_tiles(block_mask.q_num_blocks, block_mask.q_indices, n_tiles).T, partial)
    assert torch.equal(listed_tiles(block_mask.full_q_num_blocks, block_mask.full_q_indices, n_tiles).T, full)
    assert block_mask.BLOCK_SIZE == (block_size, block_size)
    assert block_mask.seq_lengths == (layout.n_tokens, layout.n_tokens)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["per_row_1", "per_row_5", "high_low", "row_overlap_2", "row_overlap_16"])
def test_compiled_cpu_kernel_follows_the_block_mask(form):
    """torch.compile(flex_attention) on the CPU computes only the listed tiles and skips the mask on full
    ones, as the CUDA kernels do: a tile missing from the list or wrongly full changes the output."""
    kept_rows, n_rows = MULTI_TILE["passt_grid_dropout"]
    layout = TokenLayout.from_kept(torch.tensor(kept_rows), n_rows, 2)
    pattern, q, k, v, mask = case(form, layout)
    block_mask = flex_block_mask(pattern, layout, "cpu", 16)
    out = torch.compile(flex_attention)(q, k, v, block_mask=block_mask)
    torch.testing.assert_close(out.double(), softmax_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_block_mask_is_built_once_per_pattern_layout_and_device():
    pattern = parse_rf_norm_t("per_row_3")
    first = flex_block_mask(pattern, layout_of("token_dropout"), "cpu")
    assert flex_block_mask(pattern, layout_of("token_dropout"), "cpu") is first  # equal rows, new object
    assert flex_block_mask(parse_rf_norm_t("per_row_5"), layout_of("token_dropout"), "cpu") is not first
    assert flex_block_mask(pattern, layout_of("empty_row"), "cpu") is not first


def test_attention_dropout_is_refused_with_the_alternative():
    layout = layout_of("full_grid")
    q = torch.randn(1, 1, layout.n_tokens, 8)
    with pytest.raises(ValueError, match="attention_impl='sparse'"):
        flex_attention_executor(q, q, q, parse_rf_norm_t("per_row_1"), layout, 0.1)


def test_cpu_training_is_refused_with_the_alternative():
    layout = layout_of("full_grid")
    q = torch.randn(1, 1, layout.n_tokens, 8, requires_grad=True)
    with pytest.raises(NotImplementedError, match="attention_impl='sparse'"):
        flex_attention_executor(q, q, q, parse_rf_norm_t("per_row_1"), layout, 0.0)
    with torch.no_grad():
        flex_attention_executor(q, q, q, parse_rf_norm_t("per_row_1"), layout, 0.0)


def test_wrong_token_count_is_refused():
    layout = layout_of("full_grid")
    q = torch.randn(1, 1, layout.n_tokens - 1, 8)
    with pytest.raises(ValueError, match="layout"):
        flex_attention_executor(q, q, q, parse_rf_norm_t("per_row_1"), layout, 0.0)


def test_unrestricted_attention_is_plain_softmax():
    layout = layout_of("empty_row")
    pattern, q, k, v, _ = case("per_row_1", layout)
    out = flex_attention_executor(q, k, v, parse_rf_norm_t(""), layout, 0.0)
    everything = torch.ones(layout.n_tokens, layout.n_tokens, dtype=torch.bool)
    torch.testing.assert_close(out.double(), softmax_attention(q, k, v, everything), atol=1e-5, rtol=1e-5)


PATCHOUT = {"s_patchout_t": 2, "s_patchout_f": 3, "u_patchout": 11}


@pytest.mark.parametrize("form", ["per_row_1", "per_row_5", "high_low", "row_overlap_2", "sparse_row_6"])
def test_flex_model_equals_masked_model_in_eval_and_with_patchout(form):
    """get_model(attention_impl="flex") on passt_mini: 12 frequency rows x 9 time columns, the same weights
    as the masked model; eval mode, and training mode with every kind of patchout (forward only: the CPU
    has no FlexAttention backward)."""
    options = {"n_classes": 5, "input_tdim": 100, "rf_norm_t": form, **PATCHOUT}
    torch.manual_seed(0)
    masked = get_model("passt_mini", attention_impl="masked", **options)
    flex = get_model("passt_mini", attention_impl="flex", **options)
    flex.load_state_dict(masked.state_dict())
    assert all(block.attn.executor is flex_attention_executor for block in flex.blocks)
    x = torch.randn(3, 1, 128, 100)
    with torch.no_grad():
        torch.testing.assert_close(flex.eval()(x)[0], masked.eval()(x)[0], atol=1e-5, rtol=1e-5)
        torch.manual_seed(1)  # the same patchout for both models
        expected = masked.train()(x)[0]
        torch.manual_seed(1)
        torch.testing.assert_close(flex.train()(x)[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("form", FORMS)
def test_compiled_cuda_kernels_on_several_tiles_forward_and_backward(form):
    """The default 128-token tiles on 300 tokens: empty, partial and full tiles in the Triton kernels."""
    kept_rows, n_rows = MULTI_TILE["passt_grid_dropout"]
    layout = TokenLayout.from_kept(torch.tensor(kept_rows), n_rows, 2)
    pattern, q, k, v, mask = case(form, layout, device="cuda")
    weights = torch.randn(q.shape, device="cuda")
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = flex_attention_executor(*leaves, pattern, layout, 0.0)
    (out * weights).sum().backward()
    expected = [t.double().clone().requires_grad_() for t in (q, k, v)]
    reference = softmax_attention(*expected, mask)
    (reference * weights.double()).sum().backward()
    torch.testing.assert_close(out.double(), reference, atol=1e-4, rtol=1e-4)
    for leaf, expected_leaf in zip(leaves, expected, strict=True):
        torch.testing.assert_close(leaf.grad.double(), expected_leaf.grad, atol=1e-4, rtol=1e-4)

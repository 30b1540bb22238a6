"""The sparse executors: exact against a plain softmax over the hand-written rule, never N x N, batched."""

import pytest
import torch
import torch.nn.functional as F
from oracles import rule_mask, softmax_attention
from torch.utils._python_dispatch import TorchDispatchMode

from models import sparse_kernels
from models.attention import additive_mask, auto_attention, masked_attention, select_executor
from models.passt import get_model
from models.patterns import TokenLayout, parse_rf_norm_t
from models.sparse_attention import blockwise_attention, sparse_attention
from models.sparse_choice import Execution, choose_execution
from models.sparse_kernels import BLOCK_KERNELS

CLUSTER_FORMS = ["per_row", "per_row_2", "per_row_3", "per_row_5", "high_low", "sparse_row_2", "sparse_row_6"]
BAND_FORMS = ["row_overlap", "row_overlap_1", "row_overlap_3", "row_overlap_8"]
FORMS = CLUSTER_FORMS + BAND_FORMS


def rows_layout(kept_rows: list[int], n_rows: int, n_global: int = 2) -> TokenLayout:
    return TokenLayout.from_kept(torch.tensor(kept_rows, dtype=torch.long), n_rows, n_global)


def grid(n_rows: int, n_cols: int) -> list[int]:
    return [row for row in range(n_rows) for _ in range(n_cols)]


def uneven_rows() -> list[int]:
    """9 rows of up to 5 tokens with 14 random tokens removed; row 4 loses all of its tokens."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.tensor([row for row in grid(9, 5) if row != 4])
    keep = torch.randperm(rows.numel(), generator=generator)[: rows.numel() - 9].sort().values
    return rows[keep].tolist()


LAYOUTS = {
    "grid_12x5": (grid(12, 5), 12, 2),
    "grid_7x3": (grid(7, 3), 7, 2),  # 7 rows: no cluster size > 1 divides them
    "single_row": (grid(1, 6), 1, 2),
    "grid_3x4": (grid(3, 4), 3, 2),  # band widths >= rows
    "rows_removed": ([row for row in grid(9, 4) if row not in (1, 4, 5)], 9, 2),
    "columns_removed": (grid(9, 2), 9, 2),
    "tokens_removed": (uneven_rows(), 9, 2),
    "low_rows_removed": ([row for row in grid(8, 3) if row > 2], 8, 2),
    "no_global_tokens": (uneven_rows(), 9, 0),
    "only_global_tokens": ([], 4, 2),
}


def executions(form: str) -> list[Execution]:
    group_rows = (1, 2, 3) if form.startswith("row_overlap") else (1,)
    return [Execution(kernel, rows) for kernel in BLOCK_KERNELS for rows in group_rows]


def forward_backward(executor, inputs, weights):
    q, k, v = (t.clone().requires_grad_() for t in inputs)
    out = executor(q, k, v)
    (out * weights).sum().backward()
    return out.detach(), [t.grad for t in (q, k, v)]


def uneven_case(form: str):
    """Inputs on the tokens_removed layout and the plain-softmax output and gradients they should give."""
    torch.manual_seed(0)
    kept_rows, n_rows, n_global = LAYOUTS["tokens_removed"]
    layout = rows_layout(kept_rows, n_rows, n_global)
    mask = rule_mask(form, layout.token_rows.tolist(), n_rows)
    inputs = torch.randn(3, 2, 3, layout.n_tokens, 8).unbind(0)
    weights = torch.randn(2, 3, layout.n_tokens, 8)
    expected, expected_grads = forward_backward(lambda q, k, v: softmax_attention(q, k, v, mask), inputs, weights)
    return layout, parse_rf_norm_t(form), inputs, weights, expected, expected_grads


CASES = [(form, execution) for form in FORMS for execution in executions(form)]


@pytest.mark.parametrize("layout_name", list(LAYOUTS))
@pytest.mark.parametrize("form,execution", CASES, ids=[f"{f}-{e.kernel}-g{e.group_rows}" for f, e in CASES])
def test_every_execution_equals_plain_softmax_forward_and_backward(form, execution, layout_name):
    torch.manual_seed(0)
    kept_rows, n_rows, n_global = LAYOUTS[layout_name]
    layout = rows_layout(kept_rows, n_rows, n_global)
    pattern = parse_rf_norm_t(form)
    mask = rule_mask(form, layout.token_rows.tolist(), n_rows)
    inputs = torch.randn(3, 2, 3, layout.n_tokens, 8).unbind(0)
    weights = torch.randn(2, 3, layout.n_tokens, 8)

    out, grads = forward_backward(
        lambda q, k, v: blockwise_attention(q, k, v, pattern, layout, 0.0, execution), inputs, weights
    )
    expected, expected_grads = forward_backward(lambda q, k, v: softmax_attention(q, k, v, mask), inputs, weights)
    reference, reference_grads = forward_backward(
        lambda q, k, v: masked_attention(q, k, v, pattern, layout), inputs, weights
    )
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    for grad, expected_grad, reference_grad in zip(grads, expected_grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad, reference_grad, atol=1e-5, rtol=1e-5)


def low_precision_dtypes():
    dtypes = [torch.bfloat16]
    try:
        half = torch.randn(1, 1, 4, 8, dtype=torch.float16)
        F.scaled_dot_product_attention(half, half, half)
        torch.bmm(half[0], half[0].transpose(1, 2)).softmax(-1)
        dtypes.append(torch.float16)
    except RuntimeError:
        pass
    return dtypes


@pytest.mark.parametrize("kernel", ["matmul", "matmul_windows"])
@pytest.mark.parametrize("chunk_scores", [7, 40, 300])
@pytest.mark.parametrize("form", ["per_row_2", "high_low", "row_overlap_3"])
def test_matmul_kernels_are_exact_for_any_chunking(form, chunk_scores, kernel, monkeypatch):
    """Chunks smaller than one block's scores split its query rows; larger ones span (batch, head) pairs."""
    monkeypatch.setattr(sparse_kernels, "_CHUNK_SCORES", chunk_scores)
    layout, pattern, inputs, weights, expected, expected_grads = uneven_case(form)
    for group_rows in (1, 2):
        out, grads = forward_backward(
            lambda q, k, v, rows=group_rows: blockwise_attention(
                q, k, v, pattern, layout, 0.0, Execution(kernel, rows)
            ),
            inputs,
            weights,
        )
        torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("layout_name", ["grid_7x3", "tokens_removed"])
@pytest.mark.parametrize("form", ["per_row", "per_row_3", "high_low", "row_overlap", "row_overlap_3"])
def test_low_precision_matches_within_1e_2(form, layout_name, dtype):
    """Within 1e-2 of each tensor's largest magnitude: bfloat16 keeps 8 bits, 4e-3 relative, per value."""
    if dtype not in low_precision_dtypes():
        pytest.skip(f"{dtype} attention is not supported on this CPU")
    torch.manual_seed(0)
    kept_rows, n_rows, n_global = LAYOUTS[layout_name]
    layout = rows_layout(kept_rows, n_rows, n_global)
    pattern = parse_rf_norm_t(form)
    mask = rule_mask(form, layout.token_rows.tolist(), n_rows)
    inputs = [t.to(dtype) for t in torch.randn(3, 2, 3, layout.n_tokens, 8).unbind(0)]
    weights = torch.randn(2, 3, layout.n_tokens, 8).to(dtype)
    expected, expected_grads = forward_backward(
        lambda q, k, v: softmax_attention(q, k, v, mask), inputs, weights.double()
    )
    for execution in [Execution(), *executions(form)]:
        out, grads = forward_backward(
            lambda q, k, v, execution=execution: blockwise_attention(q, k, v, pattern, layout, 0.0, execution),
            inputs,
            weights,
        )
        assert out.dtype == dtype
        for value, expected_value in zip([out, *grads], [expected, *expected_grads], strict=True):
            expected_value = expected_value.double()
            scale = expected_value.abs().max().item()
            torch.testing.assert_close(value.double(), expected_value, atol=1e-2 * scale, rtol=1e-2)


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, tuple | list) else [result]:
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return result


def largest_tensor(executor, layout):
    q, k, v = (torch.randn(1, 1, layout.n_tokens, 4, requires_grad=True) for _ in range(3))
    with LargestTensor() as record:
        executor(q, k, v).sum().backward()
    return record.largest


@pytest.mark.parametrize("layout_name", ["grid_36x6", "tokens_removed_36x6"])
@pytest.mark.parametrize("form,execution", CASES, ids=[f"{f}-{e.kernel}-g{e.group_rows}" for f, e in CASES])
def test_no_execution_builds_a_tokens_by_tokens_tensor(form, execution, layout_name):
    """36 rows keep even the widest band here (row_overlap_8) well below half of all token pairs."""
    rows = grid(36, 6)
    if layout_name.startswith("tokens_removed"):
        rows = sorted(rows[::3] + rows[1::3])
    layout = rows_layout(rows, 36)
    pattern = parse_rf_norm_t(form)
    n = layout.n_tokens
    largest = largest_tensor(lambda q, k, v: blockwise_attention(q, k, v, pattern, layout, 0.0, execution), layout)
    assert largest < n * n
    # the detector sees the reference's N x N mask (built anew: the cache is emptied), so a silent fallback to it
    # would fail the test
    additive_mask.cache_clear()
    assert largest_tensor(lambda q, k, v: masked_attention(q, k, v, pattern, layout), layout) >= n * n


class KernelCalls(TorchDispatchMode):
    """Counts attention kernel launches: fused attention calls and batched matrix products."""

    counted = ("_scaled_dot_product", "bmm", "baddbmm")

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(name in func.__name__ for name in self.counted):
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("execution", [Execution("sdpa", 1), Execution("sdpa", 2)])
@pytest.mark.parametrize("form", ["per_row", "per_row_5", "row_overlap_2", "row_overlap_4"])
def test_calls_do_not_grow_with_the_number_of_rows(form, execution):
    """Blocks are folded into the batch: 12 or 36 frequency rows cost the same number of kernel calls."""
    pattern = parse_rf_norm_t(form)
    calls = []
    for n_rows in (12, 36):
        layout = TokenLayout.full_grid(n_rows, 3)
        q = k = v = torch.randn(2, 2, layout.n_tokens, 4)
        with KernelCalls() as counter:
            blockwise_attention(q, k, v, pattern, layout, 0.0, execution)
        calls.append(counter.calls)
    assert calls[0] == calls[1] <= 8


@pytest.mark.parametrize("form", ["per_row_2", "row_overlap_2"])
def test_dropout_averages_to_the_exact_output_and_keeps_the_restriction(form):
    torch.manual_seed(0)
    layout = TokenLayout.full_grid(4, 3, n_global=1)
    pattern = parse_rf_norm_t(form)
    q, k, v = torch.randn(3, 1, 2, layout.n_tokens, 4).unbind(0)
    execution = Execution("sdpa", 2)
    exact = blockwise_attention(q, k, v, pattern, layout, 0.0, execution)
    samples = torch.stack([blockwise_attention(q, k, v, pattern, layout, 0.3, execution) for _ in range(2000)])
    assert not torch.equal(samples[0], samples[1])
    torch.testing.assert_close(samples.mean(0), exact, atol=0.1, rtol=0.0)
    # a token of row 0 never sees row 3, with or without dropout
    v_changed = v.clone()
    v_changed[:, :, 1 + 3 * 3 :] += 10.0
    torch.manual_seed(1)
    out = blockwise_attention(q, k, v, pattern, layout, 0.3, execution)
    torch.manual_seed(1)
    out_changed = blockwise_attention(q, k, v_changed, pattern, layout, 0.3, execution)
    row_0 = slice(1, 4)
    assert torch.equal(out[:, :, row_0], out_changed[:, :, row_0])


@pytest.mark.parametrize("kernel", ["fused_cpu", "matmul", "matmul_windows"])
@pytest.mark.parametrize("training", [False, True])
def test_kernels_without_dropout_refuse_it_and_auto_avoids_them(kernel, training):
    layout = TokenLayout.full_grid(3, 2)
    pattern = parse_rf_norm_t("per_row")
    q = torch.randn(1, 1, layout.n_tokens, 4, requires_grad=training)
    with pytest.raises(ValueError, match="dropout"):
        blockwise_attention(q, q, q, pattern, layout, 0.1, Execution(kernel))
    assert choose_execution(pattern, layout, q, 0.1, dense_allowed=False).kernel == "sdpa"


def test_dropout_trains_every_input():
    layout = rows_layout(uneven_rows(), 9)
    q, k, v = (torch.randn(2, 2, layout.n_tokens, 8, requires_grad=True) for _ in range(3))
    out = sparse_attention(q, k, v, parse_rf_norm_t("row_overlap_2"), layout, dropout_p=0.5)
    out.square().sum().backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in (q, k, v))


@pytest.mark.parametrize("form", FORMS)
def test_select_executor_picks_sparse_for_restricted_forms(form):
    pattern = parse_rf_norm_t(form)
    assert select_executor(pattern, "auto") is auto_attention
    assert select_executor(pattern, "sparse") is sparse_attention
    assert select_executor(pattern, "masked") is masked_attention


def test_unrestricted_attention_stays_one_plain_call():
    assert select_executor(parse_rf_norm_t(""), "sparse") is masked_attention


def test_bad_execution_is_refused_with_the_choices():
    layout = TokenLayout.full_grid(2, 2)
    q = torch.randn(1, 1, layout.n_tokens, 4)
    with pytest.raises(ValueError, match="sdpa"):
        blockwise_attention(q, q, q, parse_rf_norm_t("per_row"), layout, 0.0, Execution("flex"))
    with pytest.raises(ValueError, match="layout"):
        sparse_attention(q[:, :, :3], q[:, :, :3], q[:, :, :3], parse_rf_norm_t("per_row"), layout)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("form", ["per_row", "per_row_3", "high_low", "row_overlap_2", "row_overlap_4"])
def test_sparse_executor_on_gpu_equals_plain_softmax(form):
    layout, pattern, inputs, weights, expected, expected_grads = uneven_case(form)
    cuda_inputs = [t.cuda() for t in inputs]
    for group_rows in (1, 2):
        out, grads = forward_backward(
            lambda q, k, v, rows=group_rows: blockwise_attention(
                q, k, v, pattern, layout, 0.0, Execution("sdpa", rows)
            ),
            cuda_inputs,
            weights.cuda(),
        )
        torch.testing.assert_close(out.cpu().double(), expected, atol=1e-4, rtol=1e-4)
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad.cpu(), expected_grad, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        auto = sparse_attention(*cuda_inputs, pattern, layout)
    torch.testing.assert_close(auto.cpu().double(), expected, atol=1e-4, rtol=1e-4)


MODEL_FORMS = ["per_row", "per_row_3", "per_row_5", "high_low", "sparse_row_6", "row_overlap_2", "row_overlap_4"]
PATCHOUT = {"s_patchout_t": 2, "s_patchout_f": 3, "u_patchout": 11}


@pytest.mark.parametrize("form", MODEL_FORMS)
def test_sparse_model_equals_masked_model_in_eval_and_in_training_with_patchout(form):
    """12 frequency rows x 9 time columns, as PaSST's 128 mel bins give, with every kind of patchout."""
    options = {"arch": "passt_mini", "n_classes": 5, "input_fdim": 128, "input_tdim": 100, **PATCHOUT}
    torch.manual_seed(0)
    masked = get_model(rf_norm_t=form, attention_impl="masked", **options)
    sparse = get_model(rf_norm_t=form, attention_impl="sparse", **options)
    sparse.load_state_dict(masked.state_dict())
    x = torch.randn(3, 1, 128, 100)
    torch.testing.assert_close(sparse.eval()(x)[0], masked.eval()(x)[0], atol=1e-5, rtol=1e-5)
    torch.manual_seed(11)
    train_masked = masked.train()(x)[0]
    torch.manual_seed(11)
    train_sparse = sparse.train()(x)[0]
    torch.testing.assert_close(train_sparse, train_masked, atol=1e-5, rtol=1e-5)

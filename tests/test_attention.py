"""The rf_norm_t patterns: parsing, masks against hand-derived rules, executors against the reference."""


import pytest
import torch
from oracles import rule_mask, softmax_attention

from models.attention import FrequencyAttention, auto_attention, masked_attention, select_executor
from models.flex_attention import flex_attention_executor
from models.passt import get_model
from models.patterns import TokenLayout, attention_mask, parse_rf_norm_t
from models.sparse_attention import sparse_attention

FORMS = [
    "",
    "per_row",
    "per_row_1",
    "per_row_2",
    "per_row_3",
    "per_row_5",
    "high_low",
    "row_overlap",
    "row_overlap_1",
    "row_overlap_3",
    "row_overlap_8",
    "sparse_row_2",
    "sparse_row_6",
    "high_low_branch",
]
GRIDS = [(1, 3), (2, 2), (3, 4), (5, 2), (7, 3), (12, 2)]


def grid_rows(n_rows: int, n_cols: int, n_global: int) -> list[int]:
    return [-1] * n_global + [r for r in range(n_rows) for _ in range(n_cols)]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n_rows,n_cols", GRIDS)
def test_mask_matches_rule_on_small_and_odd_grids(form, n_rows, n_cols):
    mask = attention_mask(form, n_rows, n_cols, n_global=2)
    assert mask.dtype == torch.bool
    assert mask.shape == (2 + n_rows * n_cols,) * 2
    assert torch.equal(mask, rule_mask(form, grid_rows(n_rows, n_cols, 2), n_rows))


def test_hand_written_per_row_2_mask():
    # one global token, 3 rows x 2 columns: rows 0-1 form a cluster, row 2 is the smaller last cluster
    g, a, b = True, True, False
    expected = torch.tensor(
        [
            [g, g, g, g, g, g, g],
            [g, a, a, a, a, b, b],
            [g, a, a, a, a, b, b],
            [g, a, a, a, a, b, b],
            [g, a, a, a, a, b, b],
            [g, b, b, b, b, a, a],
            [g, b, b, b, b, a, a],
        ]
    )
    assert torch.equal(attention_mask("per_row_2", 3, 2, n_global=1), expected)


def test_hand_written_row_overlap_2_mask():
    # no global tokens, 4 rows x 1 column: each row sees itself and its direct neighbours
    expected = torch.tensor(
        [
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [0, 1, 1, 1],
            [0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(attention_mask("row_overlap", 4, 1, n_global=0), expected)


def test_high_low_splits_at_floor_of_half():
    mask = attention_mask("high_low", 5, 1, n_global=0)
    # lower floor(5/2) = 2 rows, upper 3 rows
    assert mask[0, 1] and not mask[1, 2] and mask[2, 4]


def test_large_parameters_make_every_row_visible():
    for form in ("per_row_40", "row_overlap_40", "sparse_row_13"):
        assert attention_mask(form, 12, 3).all()


def test_single_row_grid_is_unrestricted():
    for form in FORMS:
        assert attention_mask(form, 1, 4).all()


def test_global_tokens_attend_and_are_attended_by_all():
    mask = attention_mask("per_row_1", 4, 3, n_global=2)
    assert mask[:2].all() and mask[:, :2].all()


@pytest.mark.parametrize(
    "form,restricted,cluster_size,band_width,branched",
    [
        ("", False, None, None, False),
        ("per_row", True, 1, None, False),
        ("per_row_4", True, 4, None, False),
        ("sparse_row_6", True, 6, None, False),
        ("row_overlap", True, None, 2, False),
        ("row_overlap_8", True, None, 8, False),
        ("high_low", True, None, None, False),
        ("high_low_branch", True, None, None, True),
    ],
)
def test_parse_accepted_forms(form, restricted, cluster_size, band_width, branched):
    pattern = parse_rf_norm_t(form)
    assert (pattern.is_restricted, pattern.cluster_size, pattern.band_width, pattern.branched) == (
        restricted, cluster_size, band_width, branched)
    assert pattern.is_band == (band_width is not None)
    assert pattern.name == form


@pytest.mark.parametrize(
    "bad",
    ["per_row_0", "row_overlap_x", "sparse_row", "rows_overlap_2", "per_row_-1", "high", "per_row_2.5",
     "PER_ROW", "sparse_row_0", " per_row", None, 3],
)
def test_refused_forms_name_the_accepted_ones(bad):
    with pytest.raises(ValueError) as error:
        parse_rf_norm_t(bad)
    assert "per_row_<r>" in str(error.value) and "row_overlap_<v>" in str(error.value)


def test_band_and_cluster_accessors():
    assert parse_rf_norm_t("row_overlap_3").band_width == 3
    assert parse_rf_norm_t("row_overlap_3").cluster_size is None
    assert parse_rf_norm_t("per_row_3").row_clusters(7) == [(0, 3), (3, 6), (6, 7)]
    assert parse_rf_norm_t("high_low").row_clusters(5) == [(0, 2), (2, 5)]
    assert parse_rf_norm_t("row_overlap_3").row_clusters(5) is None


def patchout_layouts(n_rows=7, n_cols=5, n_global=2):
    """Layouts as each kind of patchout leaves them: rows, columns or single tokens removed."""
    generator = torch.Generator().manual_seed(0)
    full = torch.arange(n_rows).repeat_interleave(n_cols)
    without_rows = torch.tensor([0, 2, 3, 6]).repeat_interleave(n_cols)
    without_cols = torch.arange(n_rows).repeat_interleave(n_cols - 2)
    keep = torch.randperm(full.numel(), generator=generator)[: full.numel() - 11].sort().values
    unstructured = full[keep]
    return {
        name: TokenLayout.from_kept(rows, n_rows, n_global)
        for name, rows in [("none", full), ("rows", without_rows), ("cols", without_cols), ("tokens", unstructured)]
    }


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("patchout", ["none", "rows", "cols", "tokens"])
def test_token_mask_keeps_original_rows_under_patchout(form, patchout):
    layout = patchout_layouts()[patchout]
    pattern = parse_rf_norm_t(form)
    expected = rule_mask(form, layout.token_rows.tolist(), layout.n_rows)
    assert torch.equal(pattern.token_mask(layout), expected)


@pytest.mark.parametrize("form", ["", "per_row_2", "row_overlap_3", "high_low", "sparse_row_3"])
def test_masked_executor_equals_plain_softmax(form):
    torch.manual_seed(0)
    layout = patchout_layouts()["tokens"]
    q, k, v = torch.randn(3, 2, 4, layout.n_tokens, 8).unbind(0)
    pattern = parse_rf_norm_t(form)
    expected = softmax_attention(q, k, v, rule_mask(form, layout.token_rows.tolist(), layout.n_rows))
    torch.testing.assert_close(masked_attention(q, k, v, pattern, layout).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["sparse_row_1", "sparse_row_3", "per_row_2", "high_low", "sparse_row_9"])
@pytest.mark.parametrize("patchout", ["none", "rows", "cols", "tokens"])
def test_sparse_executor_equals_masked_forward_and_backward(form, patchout):
    torch.manual_seed(1)
    layout = patchout_layouts()[patchout]
    pattern = parse_rf_norm_t(form)
    inputs = torch.randn(3, 2, 3, layout.n_tokens, 8, dtype=torch.float64)
    grads = []
    outputs = []
    for executor in (masked_attention, select_executor(pattern, "sparse")):
        q, k, v = (t.clone().requires_grad_() for t in inputs.unbind(0))
        out = executor(q, k, v, pattern, layout)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append([t.grad for t in (q, k, v)])
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    for g_masked, g_sparse in zip(*grads, strict=True):
        torch.testing.assert_close(g_masked, g_sparse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["per_row_1", "per_row_2", "row_overlap_2", "high_low", "sparse_row_1"])
def test_restricted_rows_do_not_leak_within_one_layer(form):
    """A patch token's output ignores the tokens of rows its pattern excludes (one attention layer)."""
    torch.manual_seed(2)
    n_rows, n_cols = 6, 3
    layout = TokenLayout.full_grid(n_rows, n_cols, 2)
    attention = FrequencyAttention(16, 2, parse_rf_norm_t(form)).eval()
    x = torch.randn(1, layout.n_tokens, 16)
    changed = x.clone()
    last_row = slice(2 + (n_rows - 1) * n_cols, None)
    changed[:, last_row] += torch.randn_like(changed[:, last_row])
    out, out_changed = attention(x, layout), attention(changed, layout)
    row0 = slice(2, 2 + n_cols)
    assert torch.allclose(out[:, row0], out_changed[:, row0])  # row 0 cannot see row 5 in these forms
    assert not torch.allclose(out[:, :2], out_changed[:, :2])  # the global tokens see everything


# attention_impl -> the executor of restricted forms, as the README and get_model's docstring promise
EXPECTED_EXECUTORS = {
    "auto": auto_attention,
    "sparse": sparse_attention,
    "masked": masked_attention,
    "flex": flex_attention_executor,
}


@pytest.mark.parametrize("attention_impl", list(EXPECTED_EXECUTORS))
@pytest.mark.parametrize("form", ["per_row_1", "high_low", "row_overlap_2", "sparse_row_6"])
def test_attention_impl_selects_its_executor_for_restricted_forms(form, attention_impl):
    assert select_executor(parse_rf_norm_t(form), attention_impl) is EXPECTED_EXECUTORS[attention_impl]


@pytest.mark.parametrize("attention_impl", list(EXPECTED_EXECUTORS))
def test_unrestricted_attention_is_the_plain_call_whatever_the_impl(attention_impl):
    assert select_executor(parse_rf_norm_t(""), attention_impl) is masked_attention


@pytest.mark.parametrize("bad", ["flash", "FLEX", "", None])
def test_unknown_attention_impl_lists_the_accepted_ones(bad):
    for build in (lambda: select_executor(parse_rf_norm_t("per_row_1"), bad),
                  lambda: get_model("passt_mini", n_classes=2, input_tdim=100, attention_impl=bad)):
        with pytest.raises(ValueError) as error:
            build()
        message = str(error.value)
        assert repr(bad) in message and "models.net.attention_impl" in message
        assert all(repr(name) in message for name in EXPECTED_EXECUTORS)

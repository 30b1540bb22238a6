"""attention_impl="auto"'s choice: the cost model's counts, its constants (shipped, fitted, read from a file)
and that whatever it chooses computes the masked reference."""

import json
import math

import pytest
import torch

from benchmarks import grid
from models.attention import auto_attention, masked_attention
from models.patterns import TokenLayout, parse_rf_norm_t
from models.sparse_choice import (
    DENSE,
    SHIPPED_COSTS,
    Execution,
    ExecutorCosts,
    KernelCost,
    Measured,
    active_costs,
    candidate_work,
    choose_for_shape,
    read_costs,
    use_costs,
)


@pytest.fixture(autouse=True)
def shipped_costs_after_each_test():
    yield
    use_costs(None)


def costs_where(dense: KernelCost, block: KernelCost) -> ExecutorCosts:
    by_kernel = {DENSE: dense, "matmul": block, "matmul_windows": block, "fused_cpu": block, "sdpa": block}
    return ExecutorCosts("cpu", {"inference": by_kernel, "training": by_kernel}, "test")


CHEAP, DEAR = KernelCost(0.0, 0.0, 1e-12, 0.0), KernelCost(1.0, 1.0, 1.0, 1.0)


def test_the_counts_of_a_small_layout_written_out_by_hand():
    # 2 rows x 3 columns + 2 global tokens, per_row_1: each row's 3 queries see their row's 3 keys + 2 global
    # keys (15 pairs a row), the 2 global queries see all 8 keys (16 pairs): 46 pairs per head
    layout = TokenLayout.full_grid(2, 3, 2)
    pattern = parse_rf_norm_t("per_row_1")
    dense = candidate_work(Execution(DENSE), pattern, layout, batch=2, heads=3, head_dim=4)
    assert (dense.calls, dense.matrices, dense.pairs) == (1, 2 * 3, 2 * 3 * 8 * 8 * 4)
    gathered = candidate_work(Execution("matmul"), pattern, layout, batch=2, heads=3, head_dim=4)
    assert gathered.pairs == 2 * 3 * 46 * 4
    assert gathered.calls == 2  # the global queries' call and one call of both rows (blocks of one shape)
    assert gathered.matrices == 3 * 2 * 3  # the global queries' and each row's, per example and head
    assert gathered.tokens == 2 * 3 * 2 * (2 * 3 + 2 * 5) * 4  # each block's queries and outputs, keys and values
    windows = candidate_work(Execution("matmul_windows"), pattern, layout, batch=2, heads=3, head_dim=4)
    assert windows.pairs == gathered.pairs
    assert windows.calls == 1 + 2 * 2  # one call per window and batch element
    assert windows.matrices == gathered.matrices


def test_grouping_band_rows_counts_the_pairs_it_computes_and_masks():
    # row_overlap_2 on 3 rows x 1 column, no global tokens: a row sees the rows within 1 of it, so one row a
    # block sees 2, 3, 2 rows (7 pairs); all 3 rows in one block compute 3 x 3 = 9 pairs, 2 of them masked
    layout = TokenLayout.full_grid(3, 1, 0)
    pattern = parse_rf_norm_t("row_overlap_2")
    assert candidate_work(Execution("sdpa", 1), pattern, layout, 1, 1, 1).pairs == 7
    assert candidate_work(Execution("sdpa", 3), pattern, layout, 1, 1, 1).pairs == 9


@pytest.mark.parametrize("form", ["per_row_1", "row_overlap_2", "high_low"])
def test_the_dense_call_is_chosen_where_it_is_modelled_cheaper_and_only_by_auto(form):
    layout, pattern = TokenLayout.full_grid(6, 4, 2), parse_rf_norm_t(form)
    use_costs(costs_where(dense=CHEAP, block=DEAR))
    assert choose_for_shape(pattern, layout, 2, 2, 8, "cpu", training=False).kernel == DENSE
    assert choose_for_shape(pattern, layout, 2, 2, 8, "cpu", False, dense_allowed=False).kernel != DENSE
    use_costs(costs_where(dense=DEAR, block=CHEAP))
    assert choose_for_shape(pattern, layout, 2, 2, 8, "cpu", training=False).kernel != DENSE


@pytest.mark.parametrize("dense", [CHEAP, DEAR])
@pytest.mark.parametrize("form", ["per_row_3", "row_overlap_2", "high_low"])
def test_auto_computes_the_masked_reference_whichever_it_chooses(form, dense):
    use_costs(costs_where(dense=dense, block=KernelCost(1e-6, 1e-7, 1e-9, 1e-9)))
    layout, pattern = TokenLayout.full_grid(6, 4, 2), parse_rf_norm_t(form)
    q, k, v = (torch.randn(2, 2, layout.n_tokens, 8, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 2, layout.n_tokens, 8)
    expected = masked_attention(q, k, v, pattern, layout)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)
    out = auto_attention(q, k, v, pattern, layout)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_choice_follows_the_mode():
    layout, pattern = TokenLayout.full_grid(6, 4, 2), parse_rf_norm_t("per_row_1")
    by_mode = {"inference": {DENSE: CHEAP, "sdpa": DEAR}, "training": {DENSE: DEAR, "sdpa": CHEAP}}
    use_costs(ExecutorCosts("cpu", by_mode, "test"))
    assert choose_for_shape(pattern, layout, 1, 1, 8, "cpu", training=False).kernel == DENSE
    assert choose_for_shape(pattern, layout, 1, 1, 8, "cpu", training=True).kernel == "sdpa"


def test_dropout_leaves_the_dense_call_and_sdpa():
    layout, pattern = TokenLayout.full_grid(6, 4, 2), parse_rf_norm_t("row_overlap_2")
    use_costs(costs_where(dense=DEAR, block=CHEAP))
    assert choose_for_shape(pattern, layout, 1, 1, 8, "cpu", False, portable=True).kernel == "sdpa"


def test_a_device_without_constants_runs_sdpa_and_a_costs_file_for_it_is_used():
    layout, pattern = TokenLayout.full_grid(6, 4, 2), parse_rf_norm_t("per_row_1")
    assert active_costs("cuda") is None
    assert choose_for_shape(pattern, layout, 1, 1, 8, "cuda", False) == Execution("sdpa")
    by_kernel = {DENSE: CHEAP, "sdpa": DEAR}
    use_costs(ExecutorCosts("cuda", {"inference": by_kernel, "training": by_kernel}, "a GPU"))
    assert choose_for_shape(pattern, layout, 1, 1, 8, "cuda", False).kernel == DENSE
    assert active_costs("cpu") is SHIPPED_COSTS  # the CPU keeps the shipped constants


def test_a_costs_file_round_trips_and_bad_ones_name_the_fix(tmp_path):
    costs = costs_where(dense=KernelCost(1e-5, 1e-6, 2e-11, 3e-10), block=KernelCost(4e-5, 2e-6, 1e-11, 2e-10))
    costs = ExecutorCosts(costs.device_type, costs.costs, costs.source,
                          (Measured("per_row_1", "training", 230, 16, 48, {DENSE: 0.1, "sdpa/g1": -0.2}),))
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(costs.to_json()))
    assert read_costs(path) == costs
    with pytest.raises(ValueError, match="does not exist.*benchmarks.grid --fit"):
        read_costs(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not one written by"):
        read_costs(tmp_path / "bad.json")
    (tmp_path / "no_dense.json").write_text(json.dumps({"device_type": "cpu", "costs": {"inference": {}}}))
    with pytest.raises(ValueError, match="no 'inference' constants for 'masked'"):
        read_costs(tmp_path / "no_dense.json")


def test_the_shipped_constants_say_where_they_come_from():
    assert SHIPPED_COSTS.device_type == "cpu"
    assert "benchmarks.grid" in SHIPPED_COSTS.source and "2026" in SHIPPED_COSTS.source
    for mode in ("inference", "training"):
        assert set(SHIPPED_COSTS.costs[mode]) == {DENSE, "matmul", "matmul_windows", "fused_cpu", "sdpa"}


def test_measured_corrections_decide_near_their_input_and_not_far_from_it():
    # a model that counts moved tokens only: for per_row_1 the dense call moves slightly fewer (4 per token and
    # head) than the gathered blocks (each row's queries, outputs, keys and values); a measured input says the
    # dense call took e times the model's time there
    pattern = parse_rf_norm_t("per_row_1")
    tokens_only = KernelCost(0.0, 0.0, 0.0, 1e-9)
    at, near, far = (TokenLayout.full_grid(12, columns, 2) for columns in (19, 25, 99))
    measured = Measured("per_row_1", "inference", at.n_tokens, 16, 48, {DENSE: 1.0})
    use_costs(ExecutorCosts("cpu", {"inference": {DENSE: tokens_only, "sdpa": tokens_only}}, "test", (measured,)))
    for layout in (near, far):
        dense, blocks = (candidate_work(Execution(name), pattern, layout, 8, 2, 48).tokens for name in (DENSE, "sdpa"))
        assert dense < blocks < math.e * dense  # the model alone takes the dense call; corrected, the blocks
    assert choose_for_shape(pattern, near, 8, 2, 48, "cpu", False).kernel == "sdpa"  # 25 columns: within reach
    assert choose_for_shape(pattern, far, 8, 2, 48, "cpu", False).kernel == DENSE  # 99 columns: out of reach


def test_the_fit_recovers_known_constants():
    known = (2e-5, 1e-7, 3e-11, 4e-10)
    samples = []
    for work in [(1, 10, 1e8, 1e6), (10, 100, 1e7, 1e7), (100, 50, 1e6, 1e5), (3, 1000, 5e9, 2e7), (40, 7, 2e8, 3e8)]:
        samples.append((work, sum(c * x for c, x in zip(known, work, strict=True))))
    assert grid._relative_nnls(samples) == pytest.approx(known, rel=1e-6)


def test_the_fit_keeps_constants_non_negative():
    # times that fall with the token count cannot give a negative cost per token
    samples = [((1, 1, 1e6, 1e6), 1e-3), ((1, 1, 1e6, 2e6), 0.9e-3), ((1, 1, 2e6, 1e6), 2e-3),
               ((2, 2, 2e6, 2e6), 2e-3)]
    assert min(grid._relative_nnls(samples)) >= 0


def test_the_grid_times_a_cell_fits_constants_and_they_load(tmp_path, capsys):
    costs_file = tmp_path / "costs.json"
    grid.main(["--forms", "row_overlap_2", "--archs", "passt_mini", "--seconds", "1", "--batches", "1", "--repeats",
               "1", "--flex", "--csv", str(tmp_path / "grid.csv"), "--fit", str(costs_file)])
    printed = capsys.readouterr().out
    assert "row_overlap_2" in printed and "auto within 1.10x" in printed
    rows = grid.read_rows(tmp_path / "grid.csv")
    candidates = {row["candidate"] for row in rows}
    assert {"unrestricted", "auto", DENSE, "flex", "matmul_windows/g1", "sdpa/g4"} <= candidates
    assert {row["mode"] for row in rows} == {"inference", "training"}
    fitted = read_costs(costs_file)
    assert "benchmarks.grid" in fitted.source
    assert set(fitted.costs["training"]) == {DENSE, "matmul", "matmul_windows", "fused_cpu", "sdpa"}
    assert {(m.form, m.mode, m.tokens) for m in fitted.measured} == {("row_overlap_2", "inference", 110),
                                                                    ("row_overlap_2", "training", 110)}


def test_an_experiment_takes_a_costs_file_and_refuses_a_missing_one(tmp_path, monkeypatch, capsys):
    import ex_nsynth

    costs = costs_where(dense=CHEAP, block=DEAR)
    (tmp_path / "costs.json").write_text(json.dumps(costs.to_json()))
    monkeypatch.chdir(tmp_path)
    ex_nsynth.ex.run_commandline(["ex_nsynth.py", "print_config", "with", "executor_costs=costs.json",
                                  "--capture=sys"])
    assert active_costs("cpu") == costs
    with pytest.raises(SystemExit):
        ex_nsynth.ex.run_commandline(["ex_nsynth.py", "print_config", "with", "executor_costs=missing.json",
                                      "--capture=sys"])
    printed = capsys.readouterr()
    message = printed.out + printed.err
    assert "executor_costs: executor costs file missing.json does not exist" in message
    assert "Traceback" not in message

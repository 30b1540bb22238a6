"""Independent references the tests compare frito against: written from the definitions, not from frito's code.

The attention patterns are written out from their definitions in the README's table "The attention
patterns (models.net.rf_norm_t)": a patch token of frequency row q may attend a token of row k when

    ""                                 always
    per_row_<r>, sparse_row_<r>        q // r == k // r (per_row: r = 1)
    high_low, high_low_branch          both rows below floor(n_rows / 2), or both not
    row_overlap_<v>                    |q - k| <= v - 1 (row_overlap: v = 2)

and global tokens (row -1 here) attend every token and every token attends them.
"""

import torch


def rule_allows(form: str, row_q: int, row_k: int, n_rows: int) -> bool:
    """Whether a token of frequency row ``row_q`` may attend one of ``row_k`` (-1: a global token)."""
    if row_q < 0 or row_k < 0 or form == "":
        return True
    if form in ("high_low", "high_low_branch"):
        lower = n_rows // 2
        return (row_q < lower) == (row_k < lower)
    name, _, number = form.rpartition("_")
    if not number.isdigit():
        name, number = form, "2" if form == "row_overlap" else "1"
    if name == "row_overlap":
        return abs(row_q - row_k) <= int(number) - 1
    return row_q // int(number) == row_k // int(number)


def rule_mask(form: str, token_rows: list[int], n_rows: int) -> torch.Tensor:
    """Bool (N, N): rule_allows for every (query, key) pair of tokens with these frequency rows."""
    return torch.tensor([[rule_allows(form, q, k, n_rows) for k in token_rows] for q in token_rows])


def softmax_attention(q, k, v, mask):
    """Softmax attention computed in float64 with -inf outside ``mask``."""
    q, k, v = (t.double() for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v

"""The PaSST network: shapes, patchout, token rows, every rf_norm_t form, gradients, save/load."""

import io

import pytest
import torch

from models.architectures import ARCHITECTURES
from models.passt import get_model
from models.patterns import attention_mask
from models.preprocess import AugmentMelSTFT, clip_frames

FORMS = ["", "per_row", "per_row_3", "high_low", "row_overlap_2", "row_overlap_8", "sparse_row_6",
         "high_low_branch"]
PATCHOUTS = {
    "none": {},
    "time": {"s_patchout_t": 3},
    "freq": {"s_patchout_f": 2},
    "unstructured": {"u_patchout": 17},
    "all": {"s_patchout_t": 2, "s_patchout_f": 1, "u_patchout": 9},
}


def mini(rf_norm_t="", **kwargs):
    """A two-block model over 64 mel bins x 200 frames: 5 rows x 19 columns of patches."""
    options = {"arch": "passt_mini", "n_classes": 4, "input_fdim": 64, "input_tdim": 200, **kwargs}
    return get_model(rf_norm_t=rf_norm_t, **options)


def test_passt_s_on_ten_seconds_gives_12_by_99_patches():
    model = get_model(n_classes=10)
    assert (model.n_rows, model.n_cols) == ((128 - 16) // 10 + 1, (998 - 16) // 10 + 1) == (12, 99)
    assert sum(p.numel() for p in model.parameters()) > 80_000_000
    frames_10s = clip_frames(10.0, 32000, 320)
    assert frames_10s == AugmentMelSTFT(sr=32000).eval()(torch.zeros(1, 320000)).shape[-1] == 1000
    with torch.no_grad():
        logits, embedding = model.eval()(torch.randn(1, 1, 128, frames_10s))
    assert logits.shape == (1, 10) and embedding.shape == (1, 768)


@pytest.mark.parametrize("frames", [16, 57, 120, 200])
def test_shorter_inputs_use_a_prefix_of_the_time_encodings(frames):
    model = mini().eval()
    logits, embedding = model(torch.randn(3, 1, 64, frames))
    assert logits.shape == (3, 4) and embedding.shape == (3, 96)


def test_longer_input_than_time_encodings_is_an_error():
    with pytest.raises(ValueError, match="input_tdim"):
        mini()(torch.randn(1, 1, 64, 260))


def test_wrong_number_of_mel_bins_is_an_error():
    with pytest.raises(ValueError, match="input_fdim"):
        mini()(torch.randn(1, 1, 128, 100))


def test_time_encoding_offset_is_random_only_while_training():
    torch.manual_seed(0)
    model = mini()
    x = torch.randn(1, 1, 64, 60)
    train_outputs = {tuple(model.train()(x)[0].flatten().tolist()) for _ in range(6)}
    assert len(train_outputs) > 1
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("patchout", list(PATCHOUTS))
def test_every_parameter_gets_a_finite_gradient(form, patchout):
    torch.manual_seed(0)
    model = mini(form, **PATCHOUTS[patchout]).train()
    logits, _ = model(torch.randn(2, 1, 64, 200))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def row_marking_model(**patchout):
    """A model whose patch tokens carry their frequency row in channel 0 (and nothing else)."""
    model = mini(**patchout).train()
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.time_pos_embed.zero_()
        model.freq_pos_embed.zero_()
        model.freq_pos_embed[0, 0, :, 0] = torch.arange(model.n_rows, dtype=torch.float)
    return model


@pytest.mark.parametrize("patchout", list(PATCHOUTS))
def test_tokens_keep_their_original_frequency_row_under_patchout(patchout):
    torch.manual_seed(3)
    model = row_marking_model(**PATCHOUTS[patchout])
    tokens, layout = model.embed_tokens(torch.randn(2, 1, 64, 200))
    dropped = {"none": 0, "time": 15, "freq": 38, "unstructured": 17, "all": 95 - 4 * 17 + 9}[patchout]
    expected_tokens = 5 * 19 - dropped
    assert layout.n_tokens == tokens.shape[1] == 2 + expected_tokens
    assert layout.token_rows[:2].tolist() == [-1, -1]
    carried_rows = tokens[0, 2:, 0].round().long()
    assert torch.equal(carried_rows, layout.token_rows[2:])


def test_high_low_mask_under_row_patchout_follows_the_original_rows():
    torch.manual_seed(5)
    model = row_marking_model(s_patchout_f=2)
    model.pattern = model.blocks[0].pattern  # unrestricted model: we only need its layout here
    _, layout = model.embed_tokens(torch.randn(1, 1, 64, 200))
    from models.patterns import parse_rf_norm_t

    mask = parse_rf_norm_t("high_low").token_mask(layout)
    rows = layout.token_rows
    for i in range(2, layout.n_tokens):
        for j in range(2, layout.n_tokens):
            assert bool(mask[i, j]) == ((rows[i] < 2) == (rows[j] < 2))


def test_eval_mode_has_no_patchout():
    model = mini(**PATCHOUTS["all"]).eval()
    _, layout = model.embed_tokens(torch.randn(1, 1, 64, 200))
    assert layout.n_tokens == 2 + 5 * 19


@pytest.mark.parametrize("form", ["per_row_1", "per_row_2", "row_overlap_2", "high_low"])
def test_masked_and_sparse_models_agree(form):
    torch.manual_seed(0)
    masked = mini(form, attention_impl="masked").eval()
    sparse = mini(form, attention_impl="sparse").eval()
    sparse.load_state_dict(masked.state_dict())
    x = torch.randn(2, 1, 64, 200)
    torch.testing.assert_close(masked(x)[0], sparse(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cluster", [1, 2, 3, 6])
def test_sparse_row_equals_per_row_for_the_same_weights(cluster):
    torch.manual_seed(0)
    per_row = mini(f"per_row_{cluster}", **PATCHOUTS["all"])
    sparse_row = mini(f"sparse_row_{cluster}", **PATCHOUTS["all"])
    sparse_row.load_state_dict(per_row.state_dict())
    x = torch.randn(2, 1, 64, 200)
    torch.testing.assert_close(per_row.eval()(x)[0], sparse_row.eval()(x)[0], atol=1e-5, rtol=1e-5)
    torch.manual_seed(7)
    train_a = per_row.train()(x)[0]
    torch.manual_seed(7)
    train_b = sparse_row.train()(x)[0]
    torch.testing.assert_close(train_a, train_b, atol=1e-5, rtol=1e-5)


def test_high_low_branch_has_separate_weights_per_half():
    model = mini("high_low_branch")
    block = model.blocks[0]
    assert block.attn.qkv.weight.data_ptr() != block.attn_upper.qkv.weight.data_ptr()
    assert block.norm1 is not block.norm1_upper
    names = set(dict(model.named_parameters()))
    assert "blocks.0.attn_upper.qkv.weight" in names and "blocks.0.norm1_upper.weight" in names


def test_high_low_branch_lower_half_ignores_upper_half_within_a_block():
    torch.manual_seed(0)
    model = mini("high_low_branch").eval()
    x = torch.randn(1, 1, 64, 200)
    tokens, layout = model.embed_tokens(x)
    changed = tokens.clone()
    _, split = layout.token_span(0, layout.n_rows // 2)
    changed[:, split:] += torch.randn_like(changed[:, split:])
    block = model.blocks[0]
    out, out_changed = block(tokens, layout), block(changed, layout)
    assert torch.allclose(out[:, 2:split], out_changed[:, 2:split], atol=1e-6)
    assert not torch.allclose(out[:, :2], out_changed[:, :2])


@pytest.mark.parametrize("form", FORMS)
def test_state_dict_round_trip_reproduces_outputs(form):
    torch.manual_seed(0)
    model = mini(form).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = mini(form).eval()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 1, 64, 120)
    assert torch.equal(model(x)[0], restored(x)[0])


def test_vit_initialisation_and_no_weight_decay_names():
    torch.manual_seed(0)
    model = get_model(arch="passt_tiny", n_classes=3, input_tdim=100)
    qkv = model.blocks[0].attn.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.003 and abs(qkv.weight.mean().item()) < 0.002
    assert torch.count_nonzero(qkv.bias) == 0
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)
    assert {"freq_pos_embed", "time_pos_embed", "cls_token", "dist_token"} <= model.no_weight_decay()


def test_architectures_registry():
    assert ARCHITECTURES["passt_s_swa_p16_128_ap476"].embed_dim == 768
    assert ARCHITECTURES["passt_s_p16_s16_128_ap468"].fstride == 16
    tiny = get_model(arch="passt_tiny", n_classes=2, input_tdim=100)
    assert tiny.embed_dim == 192 and len(tiny.blocks) == 4 and tiny.blocks[0].attn.num_heads == 3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"arch": "passt_xl"}, "Known architectures"),
        ({"rf_norm_t": "per_row_0"}, "Accepted forms"),
        ({"pretrained": True}, "pretrained"),
        ({"s_patchout_f": 5}, "s_patchout_f"),
        ({"s_patchout_t": 19}, "s_patchout_t"),
        ({"u_patchout": 95}, "u_patchout"),
        ({"attention_impl": "flash"}, "attention_impl"),
        ({"input_tdim": 10}, "input_tdim"),
    ],
)
def test_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mini(**kwargs)


def test_unknown_keyword_is_refused():
    with pytest.raises(TypeError):
        mini(rf_norm_tt="per_row")


def test_attention_mask_is_the_public_helper_for_the_model_grid():
    model = mini("per_row_2")
    mask = attention_mask("per_row_2", model.n_rows, model.n_cols)
    assert mask.shape == (2 + 5 * 19,) * 2


def test_the_papers_import_path_builds_a_model_and_the_readme_path_is_the_same_function():
    from models import network, passt

    model = passt.get_model(arch="passt_mini", n_classes=3, input_fdim=64, input_tdim=100, rf_norm_t="row_overlap_2")
    assert isinstance(model, passt.PaSST)
    logits, _ = model(torch.zeros(1, 1, 64, 100))
    assert logits.shape == (1, 3)
    assert network.get_model is passt.get_model

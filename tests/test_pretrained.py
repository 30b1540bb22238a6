"""Pretrained weights: PaSST releases, DeiT, frito checkpoints, position-encoding adaptation, errors.

Every checkpoint here is written locally; nothing is downloaded (network access is replaced by a failure).
"""

import logging
import socket

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from helpers.checkpoint import FORMAT_VERSION, NETWORK_PREFIXES, SWA_COUNT, pretrained_start, read_checkpoint
from helpers.model_spec import PRETRAINED_KEYS
from models.architectures import ARCHITECTURES
from models.conversion import split_image_pos_grid
from models.passt import get_model
from models.pretrained import adapt_freq_encodings, adapt_time_encodings, load_pretrained, read_pretrained
from models.weight_files import PretrainedError, fetch_checkpoint

RELEASE_NAMES = {"global_pos_embed": "new_pos_embed", "freq_pos_embed": "freq_new_pos_embed",
                 "time_pos_embed": "time_new_pos_embed"}
MINI = {"arch": "passt_mini", "n_classes": 5, "input_fdim": 64, "input_tdim": 200}  # 5 rows x 19 columns


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any connection attempt fails, and the torch hub cache is an empty temporary folder."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))


def mini(**kwargs):
    return get_model(**{**MINI, **kwargs})


def mini_from_config(**kwargs):
    """The network of a run's models.net config, started as pretrained_start says (frito checkpoints as
    pretrained_path go through here)."""
    settings = {**MINI, **kwargs}
    network = get_model(**{key: value for key, value in settings.items() if key not in PRETRAINED_KEYS})
    start = pretrained_start(settings)
    if start is not None:
        start.load_into(network)
    return network


def release_file(model, path, head_dist=True):
    """Save ``model`` under the original PaSST code's key names."""
    state = {RELEASE_NAMES.get(key, key): value.clone() for key, value in model.state_dict().items()}
    if head_dist:
        state["head_dist.weight"] = torch.randn(model.n_classes, model.embed_dim)
        state["head_dist.bias"] = torch.randn(model.n_classes)
    torch.save(state, path)
    return state


def tiny_deit(img_size=80):
    """timm's deit_base_distilled_patch16_384 shrunk to passt_mini's width and depth (same key layout)."""
    torch.manual_seed(1)
    return timm.create_model("deit_base_distilled_patch16_384", pretrained=False, embed_dim=96, depth=2,
                             num_heads=2, img_size=img_size).state_dict()


def frito_file(path, plain, swa=None, n_averaged=None, net=None):
    """A Lightning checkpoint as frito's training module writes it, built by hand."""
    state = {NETWORK_PREFIXES["plain"] + key: value for key, value in plain.state_dict().items()}
    if swa is not None:
        state.update({NETWORK_PREFIXES["swa"] + key: value for key, value in swa.state_dict().items()})
    if n_averaged is not None:
        state[SWA_COUNT] = torch.tensor(n_averaged)
    net = net or {**MINI, "fstride": 10, "tstride": 10}  # resolved strides, as training records them
    meta = {"net": net, "mel": {"n_mels": 64}, "class_names": list("abcde"),
            "domain_names": ["x"], "seen_domains": ["x"], "sample_rate": 32000, "clip_length": 2.0,
            "augment": {}, "version": FORMAT_VERSION}
    torch.save({"state_dict": state, "frito": meta, "epoch": 3}, path)


def assert_same_parameters(model, reference, skip=()):
    reference_state = reference.state_dict()
    for key, value in model.state_dict().items():
        if key not in skip:
            assert torch.equal(value, reference_state[key]), key


# --- PaSST release format --------------------------------------------------------------------------

def test_release_format_reloads_exactly_and_ignores_the_distillation_head(tmp_path, caplog):
    torch.manual_seed(0)
    original = mini().eval()
    release_file(original, tmp_path / "release.pt")
    with caplog.at_level(logging.INFO, logger="models.pretrained"):
        loaded = mini(pretrained=True, pretrained_path=str(tmp_path / "release.pt")).eval()
    assert_same_parameters(loaded, original)
    x = torch.randn(2, 1, 64, 200)
    assert torch.equal(loaded(x)[0], original(x)[0])
    summaries = [r.getMessage() for r in caplog.records if "Pretrained weights" in r.getMessage()]
    assert len(summaries) == 1
    assert "ignored (2): head_dist.weight, head_dist.bias" in summaries[0]
    assert "loaded (25)" in summaries[0]  # every parameter of passt_mini, listed once


def test_other_number_of_classes_reinitialises_only_the_classifier_output(tmp_path):
    torch.manual_seed(0)
    original = mini()
    release_file(original, tmp_path / "release.pt")
    torch.manual_seed(7)
    fresh = mini(n_classes=3)
    torch.manual_seed(7)
    loaded = mini(n_classes=3, pretrained=True, pretrained_path=str(tmp_path / "release.pt"))
    assert torch.equal(loaded.head[1].weight, fresh.head[1].weight)
    assert torch.equal(loaded.head[1].bias, fresh.head[1].bias)
    assert_same_parameters(loaded, original, skip={"head.1.weight", "head.1.bias"})


def test_shorter_input_crops_time_encodings_and_more_rows_interpolate(tmp_path, caplog):
    torch.manual_seed(0)
    original = mini()
    release_file(original, tmp_path / "release.pt")
    with caplog.at_level(logging.WARNING, logger="models.pretrained"):
        loaded = mini(input_tdim=100, input_fdim=128, pretrained=True, pretrained_path=str(tmp_path / "release.pt"))
    # 100 frames: (100 - 16) // 10 + 1 = 9 columns, the checkpoint's first 9; 128 bins: 12 rows from 5
    assert torch.equal(loaded.time_pos_embed, original.time_pos_embed[..., :9])
    rows = original.freq_pos_embed[0, :, :, 0].detach().numpy()
    expected = np.stack([np.interp(np.arange(12) * 4 / 11, np.arange(5), channel) for channel in rows])
    np.testing.assert_allclose(loaded.freq_pos_embed[0, :, :, 0].detach().numpy(), expected, rtol=0, atol=1e-6)
    notices = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "cropped" in notices and "5 to 12 frequency rows" in notices


def test_high_low_branch_upper_attention_starts_from_the_same_blocks_attention(tmp_path):
    torch.manual_seed(0)
    original = mini()
    release_file(original, tmp_path / "release.pt")
    loaded = mini(rf_norm_t="high_low_branch", pretrained=True, pretrained_path=str(tmp_path / "release.pt"))
    for block, source in zip(loaded.blocks, original.blocks, strict=True):
        assert torch.equal(block.norm1_upper.weight, source.norm1.weight)
        assert torch.equal(block.attn_upper.qkv.weight, source.attn.qkv.weight)
        assert torch.equal(block.attn_upper.proj.bias, source.attn.proj.bias)
        assert torch.equal(block.attn.qkv.weight, source.attn.qkv.weight)


# --- position encodings on toy grids ---------------------------------------------------------------

def toy_time(n_cols):
    """(1, 2, 1, n_cols) encodings: channel 0 = column index squared, channel 1 = -column index."""
    cols = torch.arange(n_cols, dtype=torch.float32)
    return torch.stack([cols**2, -cols]).reshape(1, 2, 1, n_cols)


def test_time_encodings_same_stride_fewer_columns_is_a_crop():
    out = adapt_time_encodings(toy_time(6), 4, 10, 10)
    assert out[0, 0, 0].tolist() == [0, 1, 4, 9] and out[0, 1, 0].tolist() == [0, -1, -2, -3]


def test_time_encodings_other_stride_sample_the_same_frames():
    # stride 10 -> 15: new column j starts at frame 15 j, i.e. old column 1.5 j
    out = adapt_time_encodings(toy_time(6), 4, 10, 15)
    expected = np.interp([0, 1.5, 3, 4.5], np.arange(6), np.arange(6) ** 2)
    np.testing.assert_allclose(out[0, 0, 0].detach().numpy(), expected, atol=1e-6)  # [0, 2.5, 9, 20.5]
    np.testing.assert_allclose(out[0, 1, 0].detach().numpy(), [0, -1.5, -3, -4.5], atol=1e-6)


def test_time_encodings_beyond_the_checkpoint_are_stretched():
    out = adapt_time_encodings(toy_time(3), 5, 10, 10)  # old columns 0, 0.5, 1, 1.5, 2
    np.testing.assert_allclose(out[0, 0, 0].detach().numpy(), [0, 0.5, 1, 2.5, 4], atol=1e-6)
    assert out.shape == (1, 2, 1, 5)


def test_freq_encodings_keep_the_first_and_last_rows():
    rows = torch.tensor([0.0, 3.0, 1.0]).reshape(1, 1, 3, 1)
    assert adapt_freq_encodings(rows, 5).flatten().tolist() == [0.0, 1.5, 3.0, 2.0, 1.0]
    assert adapt_freq_encodings(rows, 2).flatten().tolist() == [0.0, 1.0]


def bicubic_numpy(values, n_out):
    """1-D resize as PyTorch's bicubic (align_corners=False, cubic convolution a=-0.75, edge clamping)."""
    a = -0.75
    n_in = len(values)

    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    out = []
    for j in range(n_out):
        source = (j + 0.5) * n_in / n_out - 0.5
        base = int(np.floor(source))
        t = source - base
        weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
        taps = [values[min(max(base + k, 0), n_in - 1)] for k in (-1, 0, 1, 2)]
        out.append(sum(w * v for w, v in zip(weights, taps, strict=True)))
    return np.array(out)


def test_image_grid_is_resized_bicubically_then_averaged_per_axis():
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((3, 4, 4))  # channels, rows, cols
    freq, time = split_image_pos_grid(torch.tensor(grid, dtype=torch.float32)[None], 6, 10)
    resized = np.stack([
        np.stack([bicubic_numpy(column, 6) for column in
                  np.stack([bicubic_numpy(row, 10) for row in channel]).T]).T
        for channel in grid
    ])  # (3, 6, 10)
    np.testing.assert_allclose(freq[0, :, :, 0].detach().numpy(), resized.mean(axis=2), atol=1e-5)
    np.testing.assert_allclose(time[0, :, 0, :].detach().numpy(), resized.mean(axis=1), atol=1e-5)


# --- DeiT ------------------------------------------------------------------------------------------

def test_deit_initialisation_sums_rgb_and_splits_the_position_grid(tmp_path):
    deit = tiny_deit(img_size=80)  # 5 x 5 grid; passt_mini at 64 x 200 has 5 x 19
    torch.save({"model": deit}, tmp_path / "deit.pth")
    torch.manual_seed(3)
    fresh = mini()
    torch.manual_seed(3)
    model = mini(pretrained=True, pretrained_path=str(tmp_path / "deit.pth"))
    np.testing.assert_allclose(model.patch_embed.proj.weight.detach().numpy(),
                               deit["patch_embed.proj.weight"].detach().numpy().sum(axis=1, keepdims=True), atol=1e-6)
    assert torch.equal(model.global_pos_embed, deit["pos_embed"][:, :2])
    grid = deit["pos_embed"][0, 2:].detach().numpy().reshape(5, 5, 96).transpose(2, 0, 1)
    resized = np.stack([np.stack([bicubic_numpy(row, 19) for row in channel]) for channel in grid])  # rows kept
    np.testing.assert_allclose(model.freq_pos_embed[0, :, :, 0].detach().numpy(), resized.mean(axis=2), atol=1e-5)
    np.testing.assert_allclose(model.time_pos_embed[0, :, 0, :].detach().numpy(), resized.mean(axis=1), atol=1e-5)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, deit["blocks.1.mlp.fc2.weight"])
    assert torch.equal(model.dist_token, deit["dist_token"])
    assert torch.equal(model.head[1].weight, fresh.head[1].weight)  # ImageNet classifier not used


def test_deit_from_safetensors(tmp_path):
    deit = tiny_deit()
    save_file(deit, str(tmp_path / "model.safetensors"))
    model = mini(pretrained=True, pretrained_path=str(tmp_path / "model.safetensors"))
    assert torch.equal(model.norm.weight, deit["norm.weight"])


# --- frito checkpoints -----------------------------------------------------------------------------

@pytest.fixture
def plain_and_swa():
    torch.manual_seed(0)
    return mini(), mini()


@pytest.mark.parametrize("weights, n_averaged, expected", [
    ("auto", 4, "swa"), ("swa", 4, "swa"), ("plain", 4, "plain"), ("auto", 0, "plain"), ("auto", None, "swa"),
])
def test_frito_checkpoint_selects_plain_or_swa_weights(tmp_path, plain_and_swa, weights, n_averaged, expected):
    plain, swa = plain_and_swa
    frito_file(tmp_path / "run.ckpt", plain, swa, n_averaged)
    model = mini_from_config(pretrained=True, pretrained_path=str(tmp_path / "run.ckpt"), pretrained_weights=weights)
    assert_same_parameters(model, swa if expected == "swa" else plain)


def test_frito_swa_weights_that_are_not_an_average_yet_are_refused(tmp_path, plain_and_swa):
    frito_file(tmp_path / "run.ckpt", *plain_and_swa, n_averaged=0)
    with pytest.raises(ValueError, match="no averaged SWA"):
        mini_from_config(pretrained=True, pretrained_path=str(tmp_path / "run.ckpt"), pretrained_weights="swa")


def test_frito_checkpoint_without_swa_refuses_swa(tmp_path, plain_and_swa):
    frito_file(tmp_path / "run.ckpt", plain_and_swa[0])
    with pytest.raises(ValueError, match=r"offers \['plain'\]"):
        mini_from_config(pretrained=True, pretrained_path=str(tmp_path / "run.ckpt"), pretrained_weights="swa")
    assert read_checkpoint(tmp_path / "run.ckpt").choose_weights("auto") == "plain"


def test_frito_checkpoint_fine_tunes_with_other_classes_and_longer_input(tmp_path, plain_and_swa):
    plain = plain_and_swa[0]
    frito_file(tmp_path / "run.ckpt", plain)
    model = mini_from_config(n_classes=2, input_tdim=300, pretrained=True, pretrained_path=str(tmp_path / "run.ckpt"))
    # 300 frames: 29 columns; the checkpoint's 19 are stretched over them (first and last kept)
    assert model.time_pos_embed.shape[-1] == 29
    assert torch.allclose(model.time_pos_embed[..., [0, -1]], plain.time_pos_embed[..., [0, -1]])
    assert model.head[1].weight.shape == (2, 96)
    assert_same_parameters(model, plain, skip={"time_pos_embed", "head.1.weight", "head.1.bias"})


# --- errors ----------------------------------------------------------------------------------------

def test_offline_without_a_file_names_the_url_and_the_config_key():
    with pytest.raises(ValueError) as error:
        get_model("passt_s_p16_s16_128_ap468", pretrained=True, n_classes=10)
    message = str(error.value)
    assert ARCHITECTURES["passt_s_p16_s16_128_ap468"].url in message
    assert ARCHITECTURES["passt_s_p16_s16_128_ap468"].url.endswith("v0.0.2-audioset/passt-s-f128-p16-s16-ap.468.pt")
    assert "models.net.pretrained_path" in message


def test_offline_imagenet_names_the_deit_url():
    deit_url = r"https://dl\.fbaipublicfiles\.com/deit/deit_base_distilled_patch16_384-d0272ac0\.pth"
    with pytest.raises(ValueError, match=deit_url + ".*models.net.pretrained_path"):
        mini(arch="passt_s_swa_p16_128_ap476", pretrained=True, pretrained_source="imagenet")


def test_release_in_the_hub_cache_is_used_without_network_with_its_release_strides(tmp_path):
    # the arch's release file, as a first download would have left it (a small stand-in at stride 16)
    url = "https://github.com/kkoutini/PaSST/releases/download/v0.0.2-audioset/passt-s-f128-p16-s16-ap.468.pt"
    cached = tmp_path / "hub" / "checkpoints" / "passt-s-f128-p16-s16-ap.468.pt"
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    original = mini()
    release_file(original, cached)
    model = mini()
    checkpoint, origin = read_pretrained("passt_s_p16_s16_128_ap468")  # release strides 16x16, model's 10x10
    assert origin == url
    load_pretrained(model, "passt_s_p16_s16_128_ap468", checkpoint)
    assert ARCHITECTURES["passt_s_p16_s16_128_ap468"].url == url
    # column j of the stride-10 model starts at frame 10 j = release column 10 j / 16
    positions = np.arange(19) * 10 / 16
    expected = np.stack([np.interp(positions, np.arange(19), channel)
                         for channel in original.time_pos_embed[0, :, 0].detach().numpy()])
    np.testing.assert_allclose(model.time_pos_embed[0, :, 0].detach().numpy(), expected, atol=1e-6)
    assert_same_parameters(model, original, skip={"time_pos_embed"})


def test_corrupt_cached_download_says_to_delete_it(tmp_path):
    url = "https://example.org/weights/passt.pt"
    cached = tmp_path / "hub" / "checkpoints" / "passt.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    with pytest.raises(PretrainedError, match="Delete the cached file"):
        fetch_checkpoint(url, "test weights")


@pytest.mark.parametrize("content", [b"", b"garbage" * 40, "truncated"])
def test_corrupt_files_are_errors(tmp_path, content):
    path = tmp_path / "broken.pt"
    if content == "truncated":
        torch.save(mini().state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        mini(pretrained=True, pretrained_path=str(path))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*models.net.pretrained_path"):
        mini(pretrained=True, pretrained_path=str(tmp_path / "nowhere.pt"))


def test_pickled_python_objects_are_not_loaded(tmp_path):
    torch.save({"config": socket.AddressFamily.AF_INET}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match="Python objects.*socket.AddressFamily"):
        mini(pretrained=True, pretrained_path=str(tmp_path / "objects.pt"))


def test_other_embedding_width_is_an_error_not_a_partial_load(tmp_path):
    release_file(mini(), tmp_path / "release.pt")
    expected = r"shapes that differ: \['cls_token: checkpoint \(1, 1, 96\), model \(1, 1, 192\)"
    with pytest.raises(ValueError, match=expected):
        get_model("passt_tiny", n_classes=5, input_fdim=64, input_tdim=200, pretrained=True,
                  pretrained_path=str(tmp_path / "release.pt"))


@pytest.mark.parametrize("extra, match", [
    ("blocks.2.norm1.weight", r"keys this model lacks: \['blocks.2.norm1.weight'\]"),
    ("decoder.weight", r"keys this model lacks: \['decoder.weight'\]"),
    ("blocks.0.attn_upper.qkv.weight", "rf_norm_t='high_low_branch'"),
])
def test_unknown_keys_are_errors(tmp_path, extra, match):
    state = release_file(mini(), tmp_path / "release.pt")
    state[extra] = torch.zeros(96)
    torch.save(state, tmp_path / "release.pt")
    with pytest.raises(ValueError, match=match):
        mini(pretrained=True, pretrained_path=str(tmp_path / "release.pt"))


def test_missing_keys_are_errors(tmp_path):
    state = release_file(mini(), tmp_path / "release.pt")
    del state["blocks.1.mlp.fc1.bias"]
    torch.save(state, tmp_path / "release.pt")
    with pytest.raises(ValueError, match=r"missing from the checkpoint: \['blocks.1.mlp.fc1.bias'\]"):
        mini(pretrained=True, pretrained_path=str(tmp_path / "release.pt"))


@pytest.mark.parametrize("checkpoint, match", [
    ({"state_dict": {"net.x": torch.zeros(1)}}, "Lightning checkpoint, not a PaSST release"),
    ({"weights": torch.zeros(3)}, "unrecognised checkpoint"),
    ({"pos_embed": torch.zeros(1, 2 + 6, 96), "dist_token": torch.zeros(1, 1, 96)}, "square grid"),
])
def test_unrecognised_checkpoints_are_errors(tmp_path, checkpoint, match):
    torch.save(checkpoint, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=match):
        mini(pretrained=True, pretrained_path=str(tmp_path / "other.pt"))


@pytest.mark.parametrize("kwargs, match", [
    ({"pretrained": True}, "passt_mini' has no published pretrained weights.*models.net.pretrained_path"),
    ({"pretrained_path": "x.pt"}, "pretrained=True"),
    ({"pretrained": True, "pretrained_source": "imagenet21k"}, "pretrained_source"),
])
def test_option_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mini(**kwargs)


def test_frito_checkpoint_of_another_version_and_unknown_weight_choices_are_errors(tmp_path, plain_and_swa):
    torch.save({"state_dict": {"net.x": torch.zeros(1)}, "frito": {"version": 9, "net": {}}}, tmp_path / "v9.ckpt")
    with pytest.raises(ValueError, match="format version 9; this frito reads version 3 only"):
        mini_from_config(pretrained=True, pretrained_path=str(tmp_path / "v9.ckpt"))
    frito_file(tmp_path / "run.ckpt", plain_and_swa[0])
    with pytest.raises(ValueError, match="ema"):
        mini_from_config(pretrained=True, pretrained_path=str(tmp_path / "run.ckpt"), pretrained_weights="ema")

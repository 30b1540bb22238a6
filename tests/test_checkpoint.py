"""The checkpoint format: written atomically, read once and validated (the current version only), the model rebuilt."""

import pytest
import torch

from helpers.checkpoint import (
    FORMAT_VERSION,
    NETWORK_PREFIXES,
    SWA_COUNT,
    CheckpointError,
    CheckpointIO,
    checkpoint_entry,
    read_checkpoint,
)
from helpers.model_spec import ModelSpec
from models.passt import get_model

NET = {"arch": "passt_mini", "n_classes": 3, "input_fdim": 64, "input_tdim": 100, "rf_norm_t": "per_row_2",
       "fstride": 10, "tstride": 10}
MEL = {"n_mels": 64, "sr": 16000, "win_length": 400, "hopsize": 160, "n_fft": 512}
SPEC = ModelSpec(NET, MEL, sample_rate=16000, clip_length=1.0)


def networks():
    torch.manual_seed(0)
    return get_model(**NET), get_model(**NET)


def frito_file(path, plain, averaged=None, n_averaged=3):
    """A training checkpoint with the weights of ``plain`` (and the average ``averaged``), as training writes it."""
    state = {NETWORK_PREFIXES["plain"] + key: value for key, value in plain.state_dict().items()}
    if averaged is not None:
        state.update({NETWORK_PREFIXES["swa"] + key: value for key, value in averaged.state_dict().items()})
        state[SWA_COUNT] = torch.tensor(n_averaged)
    entry = checkpoint_entry(SPEC, ["a", "b", "c"], ["x"], ["x"], "folder")
    torch.save({"state_dict": state, "frito": entry, "optimizer_states": [], "loops": {}}, path)


def assert_same_weights(module, reference):
    for key, value in reference.state_dict().items():
        assert torch.equal(module.state_dict()[key], value), key


def test_the_weights_and_the_model_are_read_back(tmp_path):
    plain, averaged = networks()
    frito_file(tmp_path / "run.ckpt", plain, averaged)
    checkpoint = read_checkpoint(tmp_path / "run.ckpt")
    assert checkpoint.entry["version"] == FORMAT_VERSION and checkpoint.dataset == "folder"
    assert checkpoint.can_resume and checkpoint.has_swa
    assert_same_weights(checkpoint.build_model("plain").net, plain)
    assert_same_weights(checkpoint.build_model("auto").net, averaged)
    model = checkpoint.build_model()
    assert model.front_end.sr == 16000 and model.net.pattern.name == "per_row_2"


def test_weight_choices(tmp_path):
    plain, averaged = networks()
    frito_file(tmp_path / "not_averaged.ckpt", plain, averaged, n_averaged=0)
    not_averaged = read_checkpoint(tmp_path / "not_averaged.ckpt")
    assert not_averaged.choose_weights("auto") == "plain"
    with pytest.raises(CheckpointError, match="no averaged SWA weights yet"):
        not_averaged.choose_weights("swa")
    frito_file(tmp_path / "plain.ckpt", plain)
    with pytest.raises(CheckpointError, match=r"has no such weights .* it offers \['plain'\]"):
        read_checkpoint(tmp_path / "plain.ckpt").choose_weights("swa")
    with pytest.raises(CheckpointError, match="'ema' is not one of"):
        read_checkpoint(tmp_path / "plain.ckpt").choose_weights("ema")


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"PK\x03\x04 truncated", "not a readable checkpoint"),
    ({"state_dict": {"model.net.x": torch.zeros(1)}}, "no 'frito' entry"),
    ({"state_dict": {}, "frito": {"version": 2}}, "format version 2; this frito reads version 3 only: train the "
                                                  "model again with this frito, or use the frito that wrote it"),
    ({"state_dict": {}, "frito": {"version": 4}}, "format version 4; this frito reads version 3 only"),
    ({"state_dict": {}, "frito": {"version": 3, "net": {}}}, r"lacks \['mel', 'augment', 'class_names', "
                                                             r"'domain_names', 'seen_domains'"),
])
def test_unusable_files_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "x.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_checkpoint_io_writes_atomically_and_hands_over_the_checkpoint_read_already(tmp_path, monkeypatch):
    path = tmp_path / "deep" / "last.ckpt"
    spec = ModelSpec.from_config({"basedataset": {"sample_rate": 16000, "clip_length": 1.0}, "mixup_p": 1.0,
                                  "mixup_alpha": 0.3, "models": {"mel": MEL, "net": {**NET, "pretrained": True}}})
    entry = checkpoint_entry(spec, ["a"], ["x"], ["x"], "folder")
    assert "pretrained" not in entry["net"] and entry["version"] == FORMAT_VERSION
    assert entry["augment"]["mixup"] == {"p": 1.0, "alpha": 0.3}
    assert ModelSpec.from_entry(entry) == spec  # what the checkpoint stores is the spec
    CheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}, "frito": entry}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    resumed = read_checkpoint(path)
    reads = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: reads.append(args))
    assert CheckpointIO(resumed).load_checkpoint(path) is resumed.lightning
    assert reads == []  # a resumed training reads its checkpoint once
    assert torch.equal(resumed.state_dict["w"], torch.ones(2))


def test_a_spec_from_keywords_takes_its_sample_rate():
    spec = ModelSpec.of("passt_mini", clip_length=1.0, n_classes=2, sample_rate=16000, mel={"n_mels": 64})
    assert spec.mel["sr"] == spec.sample_rate == 16000 and spec.build().front_end.sr == 16000

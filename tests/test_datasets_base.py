"""What the dataset packages share: their settings and constructors (datasets.base)."""

import inspect

import pytest

from datasets import base, dcase20, esc50, folder, nsynth
from datasets.base import SHARED_DEFAULTS

PACKAGES = {"dcase20": dcase20, "nsynth": nsynth, "folder": folder, "esc50": esc50}


def constructor_defaults(cls) -> dict:
    """The default of every keyword a Data(...) call accepts: the class's own, then its bases' (nearest first);
    a base's keywords without a default are the subclass's to pass."""
    defaults = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            keyword = parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is not parameter.empty
            if keyword and name not in defaults:
                defaults[name] = parameter.default
    return defaults


@pytest.mark.parametrize("name", PACKAGES)
def test_defaults_name_every_setting_with_the_constructor_defaults(name):
    package = PACKAGES[name]
    defaults = constructor_defaults(package.Data)
    assert set(defaults) == {*package.DEFAULTS, "mel"}
    assert {key: defaults[key] for key in package.DEFAULTS} == package.DEFAULTS
    assert defaults["mel"] is None
    assert set(SHARED_DEFAULTS) <= set(package.DEFAULTS)


def test_only_datasets_with_demo_data_accept_no_base_dir(tmp_path):
    assert dcase20.Data.has_demo() and nsynth.Data.has_demo() and esc50.Data.has_demo() and not folder.Data.has_demo()
    with pytest.raises(ValueError, match=r"basedataset.base_dir is required for the folder dataset \(it has no demo"):
        folder.Data(cache_dir=tmp_path)


def test_unknown_settings_are_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="sampel_rate"):
        nsynth.Data(cache_dir=tmp_path, sampel_rate=16000)


def defaults_lines(module) -> list[str]:
    """The lines of the module's DEFAULTS (or SHARED_DEFAULTS) dict literal."""
    source = inspect.getsource(module)
    start = source.index("DEFAULTS = {")
    return source[start : source.index("\n}\n", start)].splitlines()[1:]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_setting_of_a_dataset_is_commented_where_its_default_is_written(name):
    lines = defaults_lines(PACKAGES[name]) + defaults_lines(base)
    for key in PACKAGES[name].DEFAULTS:
        written = [line for line in lines if line.strip().startswith(f'"{key}":')]
        assert written and all("  # " in line for line in written), key


def test_each_dataset_names_its_domain_groups():
    assert dcase20.Data.group_names == ("seen devices", "unseen devices")
    assert nsynth.Data.group_names == ("in-domain sources", "out-of-domain sources")
    assert folder.Data.group_names == ("seen domains", "unseen domains")

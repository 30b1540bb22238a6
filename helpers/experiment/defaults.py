"""The config the experiments share, as Sacred config scopes chained around each experiment's own defaults.

An experiment file states only its own defaults and dataset wiring, in a config scope function, and calls

    add_config(ex, dcase20, dcase20_defaults)

which gives the experiment these scopes, evaluated in this order (each sees what the earlier ones set and
may change it; values from the command line and from named configs always win):

  shared_defaults   the network, front-end, trainer and training options every experiment starts from
  MethodDefaults    every DG method's settings (helpers.augment.registry), from the methods' declarations
  <its own>         basedataset, the number of classes, learning rate, schedule, batch size, ...
  DatasetDocs       the comments beside the dataset's DEFAULTS, as the docs of the basedataset keys
  MethodSwitches    a method's switch given (use_mixup=True) sets its strength (mixup_p=1.0)
  demo_preset       without basedataset.base_dir, for a dataset with demo data: the CPU-sized preset
                    (cpu_preset: 2 s clips, or the dataset's own where shorter)

Values that follow from others (the front-end's sample rate, the network's input size, the architecture's
strides) are not config entries: they are derived where the model is built (helpers.model_spec), and
print_config shows them.

Sacred reads a config scope's local variables as config entries, the comment beside a top-level entry as
its documentation (print_config), and a scope's docstring as the config's docstring: the scopes that run
after the experiment's own therefore have comments, not docstrings. The keys inside ``basedataset`` are a
dataset's DEFAULTS, whose comments are in datasets/, where Sacred does not look: DatasetDocs reads them.
"""

# ruff: noqa: F841

from __future__ import annotations

import ast
import importlib
import inspect
import io
import tokenize
from types import ModuleType

from sacred import Experiment
from sacred.config.config_dict import ConfigDict
from sacred.config.config_scope import ConfigScope
from sacred.config.config_summary import ConfigSummary
from sacred.config.utils import dogmatize, recursive_fill_in, undogmatize

from helpers.augment.registry import config_defaults, config_docs, switched_strengths

# The CPU preset: a small transformer on 2-second clips with a schedule that leaves warm-up within its
# 20 epochs (named config cpu_tiny; the demo preset adds no loader processes).
CPU_PRESET = {
    "models": {"net": {"arch": "passt_mini"}},
    "basedataset": {"clip_length": 2.0},
    "trainer": {"max_epochs": 20},
    "lr": 1e-3,
    "batch_size": 16,
    "warm_up_len": 2,
    "ramp_down_start": 8,
    "ramp_down_len": 12,
    "last_lr_value": 0.05,
    "swa_epoch_start": 14,
}


def cpu_preset(dataset: ModuleType) -> dict:
    """CPU_PRESET for ``dataset``: its clip length, or the dataset's own where that is shorter (TAU 2022's 1 s),
    so that no clip is padded with silence (cpu_tiny and the demo preset)."""
    own = min(length for length in (dataset.Data.native_clip_length, dataset.Data.demo_clip_length) if length)
    return {**CPU_PRESET, "basedataset": {"clip_length": min(CPU_PRESET["basedataset"]["clip_length"], own)}}


def add_config(ex: Experiment, dataset: ModuleType, own_defaults) -> None:
    """Give ``ex`` the shared config scopes around ``own_defaults`` (a config scope function).

    dataset: the package of ``datasets/`` the experiment trains on; the demo preset applies only when its
    Data has demo data.
    """
    ex.config(shared_defaults)
    ex.configurations.append(MethodDefaults())
    ex.config(own_defaults)
    ex.configurations.append(DatasetDocs(dataset))
    ex.configurations.append(MethodSwitches())
    if dataset.Data.has_demo():
        ex.configurations.append(DemoPreset(dataset))


def shared_defaults():
    """Defaults every experiment shares."""
    models = {
        "net": dict(  # keywords of models.network.get_model (input_fdim/input_tdim follow the front-end and clip)
            arch="passt_s_swa_p16_128_ap476",
            pretrained=False,  # the arch's AudioSet weights: pretrained=True (or pretrained_path=FILE, offline)
            pretrained_path=None,
            pretrained_source="audioset",
            pretrained_weights="auto",
            n_classes=None,  # None: the number of classes of the data
            in_channels=1,
            fstride=None,  # patch stride along frequency; None: the arch's own
            tstride=None,  # patch stride along time; None: the arch's own
            u_patchout=0,
            s_patchout_t=0,
            s_patchout_f=0,
            rf_norm_t="",
            attention_impl="auto",
        ),
        "mel": dict(  # keywords of models.preprocess.AugmentMelSTFT (sr follows basedataset.sample_rate)
            n_mels=128, win_length=800, hopsize=320, n_fft=1024, htk=False,
            fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000,
        ),
    }
    trainer = dict(  # pl.Trainer keywords (and the Lightning 1.x keys, translated)
        devices=1,
        use_tensorboard_logger=False,  # TensorBoard logs in the run folder's tensorboard/
        deterministic=False,  # True: deterministic algorithms only (slower; errors where none exists); "warn"
        benchmark=False,  # True: cuDNN tries convolution algorithms and keeps the fastest (not reproducible)
    )
    schedule_mode = "exp_lin"  # exponential warm-up, then linear ramp-down (per epoch)
    model_selection = "validation"  # the epoch reported: best validation accuracy; "oracle": best test (optimistic)
    executor_costs = None  # attention_impl="auto"'s measured constants: a file of benchmarks.grid --fit; None: shipped
    swa = True  # keep a stochastic weight average (net_swa), evaluated beside the plain model
    swa_freq = 1  # average every swa_freq epochs
    progress_every_batches = 50  # output to a file or pipe: a progress line every this many batches (terminal: a bar)
    progress_every_seconds = 60  # ... or after this many seconds, whichever comes first


class MethodDefaults:
    """Every DG method's settings with their defaults and one-line docs, as its module declares them (read
    from the registry when the config is evaluated)."""

    def __call__(self, fixed=None, preset=None, fallback=None) -> ConfigSummary:
        summary = ConfigDict(config_defaults())(fixed, preset, fallback)
        summary.docs.update(config_docs())
        return summary


class MethodSwitches:
    """A method's switch that is set (the command line, a named config or the experiment's own defaults:
    use_mixup=True) sets the method's strength (mixup_p=1.0), unless the strength is given too (the config
    check then refuses a contradiction)."""

    def __call__(self, fixed=None, preset=None, fallback=None) -> ConfigSummary:
        result = dogmatize(fixed or {})
        recursive_fill_in(result, switched_strengths({**(preset or {}), **(fixed or {})}))
        recursive_fill_in(result, preset or {})
        summary = ConfigSummary(result.revelation(), result.modified, result.typechanges)
        summary.update(undogmatize(result))
        return summary


class DatasetDocs:
    """The comment beside each key of the dataset's DEFAULTS (datasets/<name>/__init__.py, and datasets/base.py
    for the keys every dataset shares) as the documentation of ``basedataset.<key>``; the config is left as it
    is."""

    def __init__(self, dataset: ModuleType):
        self.docs = {f"basedataset.{key}": doc for key, doc in dict_comments(dataset, "DEFAULTS").items()}

    def __call__(self, fixed=None, preset=None, fallback=None) -> ConfigSummary:
        summary = ConfigDict({})(fixed, preset, fallback)
        summary.docs.update(self.docs)
        return summary


def dict_comments(module: ModuleType, name: str) -> dict[str, str]:
    """Key -> the comment on its line, of the dict literal assigned to ``name`` in ``module``'s source; the keys of
    a ``**OTHER`` entry come from OTHER's own literal (in the module, or in the module it is imported from), and
    a later entry's comment replaces an earlier one's, as its value does."""
    source = inspect.getsource(module)
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    tree = ast.parse(source)
    literal = next(node.value for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                   and any(isinstance(target, ast.Name) and target.id == name for target in node.targets))
    docs: dict[str, str] = {}
    for key, value in zip(literal.keys, literal.values, strict=True):
        if key is None and isinstance(value, ast.Name):  # **OTHER
            docs.update(dict_comments(_defining_module(module, tree, value.id), value.id))
        elif isinstance(key, ast.Constant) and key.lineno in comments:
            docs[key.value] = comments[key.lineno]
    return docs


def _defining_module(module: ModuleType, tree: ast.Module, name: str) -> ModuleType:
    """The module whose source assigns ``name``: ``module`` itself, or the one it imports ``name`` from."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(alias.name == name for alias in node.names):
            return importlib.import_module(node.module)
    return module


class DemoPreset:
    """The demo_preset scope for one dataset: it reads the CPU preset's clip length for that dataset
    (cpu_preset) as a fallback entry, a value available to the scope that does not become a config entry."""

    def __init__(self, dataset: ModuleType):
        self.scope = ConfigScope(demo_preset)
        self.clip_length = cpu_preset(dataset)["basedataset"]["clip_length"]

    def __call__(self, fixed=None, preset=None, fallback=None) -> ConfigSummary:
        return self.scope(fixed, preset, {**(fallback or {}), "cpu_clip_length": self.clip_length})


def demo_preset(basedataset, models, trainer, cpu_clip_length):
    # No dataset folder: the bundled demo data, with the CPU preset (cpu_tiny) and no loader processes.
    if basedataset["base_dir"] is None:
        models["net"]["arch"] = CPU_PRESET["models"]["net"]["arch"]
        basedataset["clip_length"] = cpu_clip_length
        trainer["max_epochs"] = CPU_PRESET["trainer"]["max_epochs"]
        lr = CPU_PRESET["lr"]
        batch_size = CPU_PRESET["batch_size"]
        num_workers = 0
        warm_up_len = CPU_PRESET["warm_up_len"]
        ramp_down_start = CPU_PRESET["ramp_down_start"]
        ramp_down_len = CPU_PRESET["ramp_down_len"]
        last_lr_value = CPU_PRESET["last_lr_value"]
        swa_epoch_start = CPU_PRESET["swa_epoch_start"]

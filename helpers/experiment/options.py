"""Config entries of the commands other than main, shared by the experiments (a Sacred config scope:
its local variables become config entries and the comments beside them their documentation)."""

# ruff: noqa: F841


def command_options():
    checkpoint = None  # evaluate_only: path of the .ckpt file to evaluate
    plot_path = None  # plot_attention_mask: PNG to write (None: attention_mask_<rf_norm_t>.png here); never replaced
    speed_test_batch_size = 8  # model_speed_test: clips per forward+backward step
    speed_test_steps = 10  # model_speed_test: timed steps (after 2 warm-up steps)
    files = None  # predict: audio files or folders to classify (a path or a list of paths)
    top_k = 5  # predict: classes printed per file
    hop_fraction = 0.5  # predict: step between the windows of a file longer than the training clip, in clips (0, 1]
    weights = "auto"  # predict, export: "swa", "plain" or "auto" (the SWA average when the checkpoint has one)
    predictions_csv = None  # predict: CSV to write (None: <run folder>/predictions/<checkpoint>_<time>.csv); kept
    export_dir = None  # export: folder for the TorchScript/ONNX files (None: export/ in the run folder)
    export_formats = ["torchscript", "onnx"]  # export: any of "torchscript", "onnx"
    export_seconds = None  # export: fixed clip length of the exported model (None: the training clip length)
    resume = None  # main: continue a training: "last" (newest runs/*/checkpoints/last.ckpt), a run folder or a .ckpt

"""Studies: a grid of variants x seeds of one experiment, run, resumed and reported as one table.

    spec       the study file (TOML): experiment, seeds, settings of every run, variants, [protocol], [slurm]
    folder     the study folder: layout, locks, launch records, each run's state
    execute    launching one run: skip, continue from last.ckpt or start; its console log
    local      the local launcher, N runs at a time (a GPU each, or a share of the CPU cores)
    slurm      the SLURM launcher: one submitit array job, tasks requeued on timeout or preemption
    bootstrap  figures per run and paired bootstrap intervals over seeds and test examples
    figures    the report's figures: each run under three selection rules, per protocol value, pooled
               over the values (from each run's helpers.results.run_files files)
    table      the report: tables over seeds, differences to the baseline, the protocol's tables, Markdown/CSV
    plots      the report's picture, report.png
    cli        `study.py run` and `study.py report`

Layers: these modules use helpers/ and the standard library, never ex_*.py or study.py.
"""

"""The sections of ``benchmarks/gpu_check.py``, one module each, on what they share (:mod:`benchmarks.gpu.check`)
and the interleaved timing of the two timing sections (:mod:`benchmarks.gpu.timing`)."""

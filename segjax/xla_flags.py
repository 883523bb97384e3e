"""segjax's measured XLA defaults, applied before JAX starts its backend.

On XLA's CPU backend, an empty ``--xla_cpu_experimental_ynn_fusion_type=`` sends nothing to
YNNPACK: matrix products (1x1 convolutions are products, ``layers.PointwiseConv``) and
convolutions run in Eigen. XLA's own default sends convolutions to YNNPACK, about twice as slow
for ResNet-D8 training; ``dot`` lets a YNNPACK fusion grow from a product across neighbouring
convolutions (batch-1 inference 26% slower); ``individual_dot`` (each product alone to YNNPACK,
the default until 2026-11-30) was 5-7% slower for training and 17% for PSPNet inference than
Eigen's products on the Intel host. experiments/bench/README.md records each setting. A flag the
user already set in ``XLA_FLAGS`` is never overridden; the flags have no effect on GPU/TPU
backends. Set ``SEGJAX_NO_XLA_DEFAULTS=1`` to run with XLA's own defaults.

Inference and evaluation programs are also compiled with ``memory_options()``, programs that
run once on small inputs (random initialisation, the tests' checks) with ``unoptimised_options()``
(per ``jax.jit``, so the train step keeps XLA's defaults). ``compile_and_trim`` compiles a
program before its first run and hands the heap the compiler freed back to the OS.
"""
import ctypes
import functools
import os

DEFAULTS = {"--xla_cpu_experimental_ynn_fusion_type": ""}


def apply_defaults() -> None:
  if os.environ.get("SEGJAX_NO_XLA_DEFAULTS"):
    return
  flags = os.environ.get("XLA_FLAGS", "")
  extra = [f"{k}={v}" for k, v in DEFAULTS.items() if k not in flags]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


# Per-jit compiler options for programs that run with their parameters already in memory.
# XLA's CPU scheduler by default orders for concurrency: for DeepLabV3+ inference it evaluated the
# three dilated ASPP depthwise convolutions (and two copies of layer4's output) before their
# pointwise convolutions, XLA temp 582 -> 416 MB with the memory-minimising order, peak RSS
# 1.47-1.55 -> 1.23-1.34 GB at the same speed; DeepLabV3+'s random init temp 306 -> 135 MB.
# In the train step that order cost memory (DeepLabV3+ temp 3.6 -> 4.1 GB).
MEMORY_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}

# Options of a program compiled to run once on small inputs (random initialisation, the tests'
# checks): XLA's optimisations would take most of its time, and change rounding only. XLA's older
# fusion emitters compile such programs 25-40% faster (HRNet's small backward pass 8.4-10.5 ->
# 5.5-7.3 s) and with ~0.1 GB less memory (Swin-T UPerNet's random init). Inference keeps the
# MLIR emitters, XLA's default: CGNet's elementwise fusions took 69 ms per image with the older
# ones, 32 ms with these (CGNet 0.22 -> 0.17 s; experiments/bench/README.md).
UNOPTIMISED = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
OLDER_EMITTERS = {"xla_cpu_use_fusion_emitters": False}

# The XLA_FLAGS by which a user makes each choice instead.
USER_CHOICES = {"xla_cpu_scheduler_type": ("--xla_cpu_scheduler_type",
                                           "--xla_cpu_enable_concurrency_optimized_scheduler"),
                "xla_cpu_use_fusion_emitters": ("--xla_cpu_use_fusion_emitters",)}


def memory_options() -> dict:
  """``compiler_options`` for jitted inference and evaluation: ``MEMORY_OPTIONS`` unless
  ``_cpu_defaults`` leaves them out."""
  return _cpu_defaults(MEMORY_OPTIONS)


def unoptimised_options() -> dict:
  """``compiler_options`` of a program that runs once: ``UNOPTIMISED``, ``memory_options()`` and
  the older fusion emitters unless ``_cpu_defaults`` leaves them out."""
  return {**UNOPTIMISED, **memory_options(), **_cpu_defaults(OLDER_EMITTERS)}


def _cpu_defaults(options: dict) -> dict:
  """Each of ``options`` that the CPU backend of this jaxlib has (jaxlib 0.8 lacks the scheduler
  option) and the user's ``XLA_FLAGS`` do not choose; none under ``SEGJAX_NO_XLA_DEFAULTS`` and
  on other backends."""
  if os.environ.get("SEGJAX_NO_XLA_DEFAULTS"):
    return {}
  flags = os.environ.get("XLA_FLAGS", "")
  return {name: value for name, value in options.items()
          if not any(flag in flags for flag in USER_CHOICES[name]) and _cpu_accepts(name, value)}


@functools.cache
def _cpu_accepts(name: str, value) -> bool:
  import jax  # here: apply_defaults must run before jax is imported
  if jax.default_backend() != "cpu":
    return False
  try:  # XLA rejects an option its DebugOptions lack ("No such compile option")
    jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(0.0).compile()
  except RuntimeError:
    return False
  return True


def compile_and_trim(jitted, *args):
  """Compile ``jitted`` for ``args`` (``jax.jit``'s cache keeps the executable, so the next call
  with such arguments runs it), then return the heap the compiler freed to the OS.

  The compile waits for ``args``: the program still computing them (random initialisation, run
  asynchronously) would otherwise hold its scratch memory beside the compiler's. Swin-T UPerNet's
  inference after random init (experiments/bench/infer.py): peak RSS 1.12-1.15 -> 1.04-1.10 GB
  (experiments/bench/README.md).

  XLA's compiler leaves hundreds of MB of freed, fragmented heap with glibc's malloc, and a run's
  scratch buffer, one block of hundreds of MB, is mapped anew beside it: peak RSS of DeepLabV3+
  inference 1.29 -> 1.11 GB, of its train step 5.27 -> 4.79 GB (experiments/bench/README.md).
  Trimming is glibc's ``malloc_trim(0)``; elsewhere (no such function) only the compile happens.
  """
  import jax  # here: apply_defaults must run before jax is imported
  jax.block_until_ready(args)
  compiled = jitted.lower(*args).compile()
  trim = _malloc_trim()
  if trim is not None:
    trim(0)
  return compiled


@functools.cache
def _malloc_trim():
  try:  # among the symbols the process already has
    return ctypes.CDLL(None).malloc_trim
  except (AttributeError, OSError, TypeError):  # not glibc: macOS, musl, Windows (no CDLL(None))
    return None

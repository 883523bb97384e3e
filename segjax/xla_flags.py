"""segjax's measured XLA defaults, applied before JAX starts its backend.

On XLA's CPU backend, ``--xla_cpu_experimental_ynn_fusion_type=individual_dot`` sends each matrix
product (1x1 convolutions are products, ``layers.PointwiseConv``) to YNNPACK on its own and every
other convolution to Eigen. XLA's own default also sends convolutions to YNNPACK, about twice as
slow here for ResNet-D8 training; ``dot`` (segjax's earlier default) lets a YNNPACK fusion grow
from a product across neighbouring convolutions, which made batch-1 inference 26% slower.
experiments/bench/README.md records each setting. A flag the user already set in ``XLA_FLAGS`` is
never overridden; the flags have no effect on GPU/TPU backends. Set ``SEGJAX_NO_XLA_DEFAULTS=1``
to run with XLA's own defaults.
"""
import os

DEFAULTS = {"--xla_cpu_experimental_ynn_fusion_type": "individual_dot"}


def apply_defaults() -> None:
  if os.environ.get("SEGJAX_NO_XLA_DEFAULTS"):
    return
  flags = os.environ.get("XLA_FLAGS", "")
  extra = [f"{k}={v}" for k, v in DEFAULTS.items() if k not in flags]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()

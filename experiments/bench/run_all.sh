#!/usr/bin/env bash
# Every measurement in experiments/bench/README.md, with segjax's XLA defaults and without them.
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
for mode in default xla_defaults_off; do
  if [ "$mode" = xla_defaults_off ]; then export SEGJAX_NO_XLA_DEFAULTS=1; else unset SEGJAX_NO_XLA_DEFAULTS; fi
  for cfg in pspnet_cityscapes.py:r50-d8_512x1024_40k deeplabv3plus_cityscapes.py:r50-d8_512x1024_40k; do
    echo "=== $mode inference $cfg 1x3x512x1024"
    /usr/bin/time -f "peak RSS %M KB, wall %e s" $PY tools/benchmark.py configs/$cfg --shape 512 1024 --repeat 5 --log-interval 5 2>&1 | grep -E "compile|Overall|peak"
    echo "=== $mode train step $cfg 2x512x512"
    /usr/bin/time -f "peak RSS %M KB, wall %e s" $PY experiments/bench/train_step.py configs/$cfg --batch 2 --crop 512 512 --repeat 3 2>&1 | grep -E "compile|train step|peak"
  done
done
# MMSegmentation side by side: MMSEG_PYTHON=/path/to/venv-with-mmseg/bin/python
if [ -n "${MMSEG_PYTHON:-}" ]; then
  for cfg in pspnet_cityscapes.py:r50-d8_512x1024_40k deeplabv3plus_cityscapes.py:r50-d8_512x1024_40k; do
    echo "=== mmseg inference $cfg 1x3x512x1024"
    /usr/bin/time -f "peak RSS %M KB, wall %e s" $MMSEG_PYTHON experiments/bench/mmseg_reference.py configs/$cfg --mode infer --crop 512 1024 --repeat 5 2>&1 | grep -E "^mmseg|peak"
    echo "=== mmseg train step $cfg 2x512x512"
    /usr/bin/time -f "peak RSS %M KB, wall %e s" $MMSEG_PYTHON experiments/bench/mmseg_reference.py configs/$cfg --mode train --batch 2 --crop 512 512 --repeat 3 2>&1 | grep -E "^mmseg|peak"
  done
fi
# The model families of issues 19-23 side by side (segjax and mmseg interleaved; README section
# "Model families side by side"): needs MMSEG_PYTHON; then `families.py --summary families.jsonl`.
if [ -n "${MMSEG_PYTHON:-}" ]; then
  unset SEGJAX_NO_XLA_DEFAULTS  # segjax's defaults, as measured there
  $PY experiments/bench/families.py --rows 23 21 19 20 22 230 --rounds 2 --out families.jsonl
fi

"""Timed repeated calls for the benchmark scripts. No jax or torch here: the segjax scripts and
the ones run in MMSegmentation's virtualenv (mmseg_reference.py, convolutions.py --torch) share it."""
import time


def call_times(call, repeat: int, warmup: int = 1) -> list[float]:
  """Seconds of each of ``repeat`` timed calls of ``call()``, after ``warmup`` untimed ones."""
  for _ in range(warmup):
    call()
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return times

"""MMSegmentation's model zoo as data: every config file vendored in ``configs/mmseg_configs``
with its published results, read from mmseg's metafiles (``<family>/<family>.yml``).

- ``entries()``: one ``ZooEntry`` per mmseg config (family, dataset, crop, schedule, mIoU).
- ``find(spec)``: the file a ``configs/mmseg.py:<spec>`` argument names.
- ``shim_config(family, dataset, variant)``: what ``configs/<algo>_<dataset>.py:<variant>`` runs,
  mmseg's ``<family>/<family>_<variant>_<dataset>.py`` translated.

``tools/zoo_table.py`` writes README's "Model zoo" section and ``configs/ZOO.md`` from it.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import glob
import os
import re

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
MMSEG_CONFIGS = os.path.join(HERE, "mmseg_configs")
# Results mmseg publishes in its configs' READMEs but not in their metafiles, in the metafiles' format.
RESULTS_NOT_IN_METAFILES = os.path.join(HERE, "results_not_in_metafiles.yml")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
  config: str  # relative to configs/mmseg_configs: 'pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py'
  dataset: str  # the dataset part of mmseg's name: 'cityscapes', 'coco-stuff10k', 'ade20k_ms', ...
  crop: str  # 'HxW' from the name, '' when it has none
  iters: int | None  # training iterations from the name's '<N>k' token
  metric: str  # 'mIoU', or 'Dice' (the vessel sets); '' without a published result
  single_scale: float | None  # published result, single-scale test
  multi_scale: float | None  # published 'mIoU(ms+flip)'

  @property
  def family(self) -> str:
    return self.config.split("/")[0]

  @property
  def name(self) -> str:
    return os.path.basename(self.config)[:-3]

  @property
  def command(self) -> str:
    return f"python main.py --config=configs/mmseg.py:{self.config} --workdir=work_dirs/{self.name}"


def _results(metafile: str) -> dict[str, dict]:
  """Config path (relative to configs/mmseg_configs) -> its metrics, from one metafile."""
  with open(metafile) as f:
    models = yaml.safe_load(f).get("Models") or []
  out = {}
  for model in models:
    results = model["Results"] if isinstance(model["Results"], list) else [model["Results"]]
    config = model["Config"]
    out[config[len("configs/"):] if config.startswith("configs/") else config] = results[0]["Metrics"]
  return out


@functools.cache
def published() -> dict[str, dict]:
  """Config path -> mmseg's published metrics for every config that has them."""
  out = {}
  for metafile in sorted(glob.glob(os.path.join(MMSEG_CONFIGS, "*", "*.yml"))):
    out.update(_results(metafile))
  extra = _results(RESULTS_NOT_IN_METAFILES)
  clash = sorted(set(extra) & set(out))
  if clash:
    raise ValueError(f"{RESULTS_NOT_IN_METAFILES}: {clash} are in mmseg's metafiles; drop them here")
  return dict(out, **extra)


def _entry(config: str, metrics: dict | None) -> ZooEntry:
  tokens = os.path.basename(config)[:-3].split("_")
  crops = [t for t in tokens if re.fullmatch(r"\d+x\d+", t) and min(map(int, t.split("x"))) >= 64]
  schedule = [i for i, t in enumerate(tokens) if re.fullmatch(r"\d+k", t)]
  iters, dataset = None, ""
  if schedule:
    iters = int(tokens[schedule[-1]][:-1]) * 1000
    rest = tokens[schedule[-1] + 1:]
    if rest and re.fullmatch(r"b\d+", rest[0]):  # mmseg's total-batch token ('40k_b16_cityscapes')
      rest = rest[1:]
    dataset = "_".join(rest)
  metrics = metrics or {}
  metric = "mIoU" if "mIoU" in metrics else "Dice" if "Dice" in metrics else ""
  return ZooEntry(config=config, dataset=dataset, crop=crops[0] if crops else "", iters=iters,
                  metric=metric, single_scale=metrics.get(metric) if metric else None,
                  multi_scale=metrics.get("mIoU(ms+flip)"))


@functools.cache
def entries() -> tuple[ZooEntry, ...]:
  """Every config file of mmseg's zoo (``_base_`` excluded), sorted by path."""
  results = published()
  configs = sorted(os.path.relpath(p, MMSEG_CONFIGS).replace(os.sep, "/")
                   for p in glob.glob(os.path.join(MMSEG_CONFIGS, "*", "*.py"))
                   if os.path.basename(os.path.dirname(p)) != "_base_")
  return tuple(_entry(c, results.get(c)) for c in configs)


def find(spec: str) -> str:
  """The mmseg config file ``spec`` names: an existing path (absolute or relative to the current
  directory), a path relative to configs/mmseg_configs, or a bare config name (``.py`` optional)
  looked up in every family folder."""
  if os.path.isfile(spec):
    return spec
  vendored = os.path.join(MMSEG_CONFIGS, spec)
  if os.path.isfile(vendored):
    return vendored
  by_name = {e.name: e for e in entries()}
  name = spec[:-3] if spec.endswith(".py") else spec
  if "/" not in name and name in by_name:
    return os.path.join(MMSEG_CONFIGS, by_name[name].config)
  close = difflib.get_close_matches(os.path.basename(name), list(by_name), n=3)
  raise FileNotFoundError(
      f"no mmseg config {spec!r}: not a file (as given, or under {MMSEG_CONFIGS}) nor a config "
      f"name in it" + (f"; close names: {', '.join(close)}" if close else ""))


def variants(family: str, dataset: str) -> dict[str, ZooEntry]:
  """Variant -> entry for mmseg's ``<family>/<family>_<variant>_<dataset>.py`` files."""
  prefix, suffix = f"{family}/{family}_", f"_{dataset}.py"
  return {e.config[len(prefix):-len(suffix)]: e for e in entries()
          if e.config.startswith(prefix) and e.config.endswith(suffix)}


def shim_config(family: str, dataset: str, variant: str):
  """The segjax config of mmseg's ``<family>/<family>_<variant>_<dataset>.py``."""
  from segjax.convert.mmseg_config import config_from_file
  available = variants(family, dataset)
  if variant not in available:
    raise ValueError(f"mmseg has no config {family}/{family}_{variant}_{dataset}.py; variants: "
                     f"{', '.join(available)}")
  return config_from_file(os.path.join(MMSEG_CONFIGS, available[variant].config))

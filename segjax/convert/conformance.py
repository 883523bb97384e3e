"""segjax against MMSegmentation 0.30's zoo: ``reference`` is a folder with ``mmseg_configs/``
(mmseg's 644 config files) and ``mmseg_zoo/`` (``index.json``: per config the classes, parameter
count and key listing mmseg itself built; ``keys/*.tsv``: ``key<TAB>shape`` of its state_dict).

A config whose classes segjax has must build at full size (``jax.eval_shape``, no arrays) with
mmseg's parameter count and take exactly mmseg's state_dict (``check_state_dict``); any other
config must fail to build with an error naming a class segjax lacks. Used by
tests/test_conformance.py and tools/conformance_table.py (README's table).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp

from segjax import models
from segjax.convert import check_state_dict, checkpoint_rules
from segjax.convert.mmseg_config import load_model_dict

# Model-dict keys that change no parameter: configs differing only in these share one build.
PARAMETER_FREE = frozenset({"loss_decode", "sampler", "align_corners", "dropout_ratio", "init_cfg",
                            "pretrained", "train_cfg", "test_cfg"})
TABLE_START = "<!-- conformance-table:start (tools/conformance_table.py --write README.md) -->"
TABLE_END = "<!-- conformance-table:end -->"


@dataclasses.dataclass
class Architecture:
  """Configs of one model: the same key listing and the same model dict up to PARAMETER_FREE."""
  keys_file: str
  params: int
  model_dict: dict
  configs: list[str]


def load_index(reference: str) -> dict[str, dict]:
  with open(os.path.join(reference, "mmseg_zoo", "index.json")) as f:
    return json.load(f)


def config_path(reference: str, config: str) -> str:
  return os.path.join(reference, "mmseg_configs", config)


def class_names(entry: dict) -> list[str]:
  """The mmseg classes a config's model is built of (index.json's entry)."""
  names = [entry["segmentor"], entry["backbone"], entry["neck"], *(entry["decode_heads"] or []),
           *(entry["auxiliary_heads"] or [])]
  return [n for n in names if n]


def missing_classes(entry: dict) -> list[str]:
  have = {*models.SEGMENTORS, *models.BACKBONES, *models.NECKS, *models.HEADS}
  return [n for n in class_names(entry) if n not in have]


def _without_parameter_free(value):
  if isinstance(value, dict):
    return {k: _without_parameter_free(v) for k, v in value.items() if k not in PARAMETER_FREE}
  if isinstance(value, (list, tuple)):
    return [_without_parameter_free(v) for v in value]
  return value


def architectures(reference: str, index: dict[str, dict]) -> list[Architecture]:
  """The distinct models among the configs of ``index`` whose classes segjax has."""
  groups: dict[tuple, Architecture] = {}
  for config, entry in sorted(index.items()):
    if missing_classes(entry):
      continue
    model_dict = load_model_dict(config_path(reference, config))
    signature = (entry["keys"], json.dumps(_without_parameter_free(model_dict), sort_keys=True, default=str))
    if signature not in groups:
      groups[signature] = Architecture(entry["keys"], entry["params"], model_dict, [])
    groups[signature].configs.append(config)
  return list(groups.values())


def key_listing(reference: str, keys_file: str) -> dict[str, tuple[int, ...]]:
  """mmseg's state_dict of one model as ``{key: shape}`` (``keys/*.tsv``)."""
  shapes = {}
  with open(os.path.join(reference, "mmseg_zoo", keys_file)) as f:
    for line in f:
      key, shape = line.rstrip("\n").split("\t")
      shapes[key] = tuple(int(d) for d in shape.split(",")) if shape else ()
  return shapes


def abstract_variables(model_dict: dict) -> dict:
  """The full-size model's variables as ShapeDtypeStructs (``jax.eval_shape``: nothing allocated).
  Initialised on 64x64 unless that fails, then on the config's test crop."""
  model = models.build_segmentor(model_dict)
  try:
    return jax.eval_shape(lambda rng: models.init_variables(model, rng), jax.random.PRNGKey(0))
  except Exception:
    crop = (model_dict.get("test_cfg") or {}).get("crop_size")
    if not crop:
      raise
    dummy = jax.ShapeDtypeStruct((1, *crop, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy)


def frozen_parameter_count(model_dict: dict) -> int:
  """Elements of the parameters mmseg creates with ``requires_grad=False`` and segjax holds as
  constants (a class's ``FROZEN_PARAMETERS``, e.g. STDCHead's fusion kernel): mmseg counts them,
  segjax's ``params`` (trained, weight-decayed) must not hold them."""
  count = 0
  for kind, table in (("backbone", models.BACKBONES), ("neck", models.NECKS),
                      ("decode_head", models.HEADS), ("auxiliary_head", models.HEADS)):
    cfg = model_dict.get(kind)
    for sub in cfg if isinstance(cfg, (list, tuple)) else [cfg] if cfg else []:
      count += getattr(table.get(sub.get("type")), "FROZEN_PARAMETERS", 0)
  return count


def check_architecture(reference: str, arch: Architecture) -> None:
  """Raises unless segjax's model has mmseg's parameter count and takes mmseg's state_dict."""
  variables = abstract_variables(arch.model_dict)
  count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))
  count += frozen_parameter_count(arch.model_dict)
  if count != arch.params:
    raise AssertionError(f"{arch.configs[0]}: segjax has {count} parameters, mmseg {arch.params}")
  check_state_dict(key_listing(reference, arch.keys_file), variables, checkpoint_rules(arch.model_dict))


def build_error(reference: str, config: str) -> str | None:
  """Why the config's model does not build, or None when it builds."""
  try:
    models.build_segmentor(load_model_dict(config_path(reference, config)))
  except ValueError as e:
    return str(e)
  return None


def family_counts(reference: str, index: dict[str, dict]) -> dict[str, tuple[int, int]]:
  """``{mmseg config folder: (configs that run, configs mmseg has)}``; a config runs when
  segjax has its classes and it builds (tests/test_conformance.py then checks its parameters)."""
  counts = collections.defaultdict(lambda: [0, 0])
  for config, entry in index.items():
    family = config.split("/")[0]
    counts[family][1] += 1
    if not missing_classes(entry) and build_error(reference, config) is None:
      counts[family][0] += 1
  return {family: tuple(counts[family]) for family in sorted(counts)}


def markdown_table(counts: dict[str, tuple[int, int]]) -> str:
  runs, has = sum(r for r, _ in counts.values()), sum(h for _, h in counts.values())
  rows = [f"| {family} | {r} / {h} |" for family, (r, h) in counts.items()]
  return "\n".join(["| mmseg config folder | configs that run / configs mmseg has |", "|---|---|",
                    *rows, f"| **all** | **{runs} / {has}** |"])


def readme_section(counts: dict[str, tuple[int, int]]) -> str:
  return f"{TABLE_START}\n{markdown_table(counts)}\n{TABLE_END}"

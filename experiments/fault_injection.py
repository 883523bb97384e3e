"""Kill a training run again and again and check it still ends where an unbroken run ends.

  python experiments/fault_injection.py --out /tmp/fault_injection --kills 12 --seed 0

A tiny PSPNet trains ``--steps`` steps on a small generated dataset through ``main.py`` (a
checkpoint every 2 steps), first without interruption, then killed ``--kills`` times at random
steps: SIGKILL and SIGTERM mixed, some SIGKILLs while orbax is writing a checkpoint (its temporary
folder exists), each restart with 0 or 2 loader workers at random. Once, after a kill, a random
file of the newest checkpoint is truncated or deleted. The final parameters and BatchNorm
statistics must equal the unbroken run's bit for bit, the damaged checkpoint must be kept in
``checkpoints_damaged/``, and no loader process may outlive its trainer. Prints one line per
kill and a summary; exits 1 when a check fails.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = '''"""experiments/fault_injection.py's tiny PSPNet on its generated dataset."""
import sys
sys.path.insert(0, {root!r})
from configs import pspnet_synthetic


def get_config():
  c = pspnet_synthetic.get_config()
  m = c.model
  m.backbone.stem_channels = m.backbone.base_channels = 8
  m.decode_head.in_channels, m.decode_head.channels = 64, 16
  m.auxiliary_head.in_channels, m.auxiliary_head.channels = 32, 8
  for split in (c.data.train, c.data.val, c.data.test):
    split.data_root = {data!r}
  c.data.train.pipeline[2]["img_scale"] = (64, 64)
  c.data.train.pipeline[3]["crop_size"] = (48, 48)
  c.data.train.pipeline[-1]["size"] = (48, 48)
  c.data.samples_per_gpu, c.data.workers_per_gpu = 4, 0
  c.total_iters, c.log_interval = {steps}, 1
  c.evaluation.interval, c.checkpoint.interval = 10, 2
  return c
'''


def start(config: str, workdir: str, workers: int) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), f"--config={config}",
                           f"--workdir={workdir}", f"--config.data.workers_per_gpu={workers}"],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def log_size(workdir: str) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  return os.path.getsize(path) if os.path.exists(path) else 0


def last_step(workdir: str, since: int = 0) -> int:
  """The last step logged after byte ``since`` of metrics.jsonl (log_interval 1: every step),
  so the steps of an earlier, killed run do not count; 0 before the first."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    f.seek(since)
    steps = [json.loads(line)["step"] for line in f if line.endswith("\n") and '"train"' in line]
  return max(steps, default=0)


def saving(workdir: str) -> bool:
  folder = os.path.join(workdir, "checkpoints")
  return os.path.isdir(folder) and any("tmp" in n for n in os.listdir(folder))


def finished_steps(workdir: str) -> list[int]:
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def descendants(pid: int) -> set[int]:
  parents = {}
  for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{entry}/stat") as f:
        parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
      pass
  found, frontier = set(), {pid}
  while frontier:
    frontier = {p for p, parent in parents.items() if parent in frontier} - found
    found |= frontier
  return found


def alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def damage_newest(workdir: str, rng: random.Random) -> str:
  newest = os.path.join(workdir, "checkpoints", str(finished_steps(workdir)[-1]))
  # Not orbax's per-process ocdbt files (merged into state/d and state/manifest.ocdbt once the
  # save completes, so a restore does not read them: a first run truncated one to no effect) nor
  # the commit markers: a random file among those a restore reads.
  files = sorted(os.path.join(d, f) for d, _, fs in os.walk(newest) for f in fs
                 if "ocdbt.process_" not in d and f != "commit_success.txt")
  victim = rng.choice(files)
  if rng.random() < 0.5:
    os.truncate(victim, 0)
    return f"truncated {os.path.relpath(victim, workdir)}"
  os.remove(victim)
  return f"deleted {os.path.relpath(victim, workdir)}"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="folder for the dataset, config and both runs")
  parser.add_argument("--kills", type=int, default=12)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  from segjax.data import synthetic
  os.makedirs(args.out, exist_ok=False)
  data = synthetic.ensure_dataset(os.path.join(args.out, "data"), num_train=16, num_val=8, size=64, seed=3)
  config = os.path.join(args.out, "tiny_config.py")
  with open(config, "w") as f:
    f.write(CONFIG.format(root=ROOT, data=data, steps=args.steps))
  full, broken = os.path.join(args.out, "full"), os.path.join(args.out, "broken")

  t0 = time.time()
  run = start(config, full, 0)
  if run.wait() != 0:
    sys.exit(f"the unbroken run failed:\n{run.stderr.read()[-3000:]}")
  print(f"unbroken run: {args.steps} steps in {time.time() - t0:.0f} s", flush=True)

  # The three kinds equally often, in random order; the damage after a kill in the middle.
  kinds = [["SIGKILL", "SIGTERM", "SIGKILL during save"][i % 3] for i in range(args.kills)]
  rng.shuffle(kinds)
  damage_after = rng.randrange(1, args.kills - 1)
  failures, workers_seen, damaged = [], set(), None
  t0 = time.time()
  for i, kind in enumerate(kinds):
    resumed_at = finished_steps(broken)[-1] if finished_steps(broken) else 0
    workers = rng.choice([0, 2])
    since = log_size(broken)
    run = start(config, broken, workers)
    target = resumed_at + rng.randint(1, 5)
    while run.poll() is None:
      step = last_step(broken, since)
      if kind == "SIGKILL during save" and step > resumed_at and saving(broken):
        break
      if kind != "SIGKILL during save" and step >= min(target, args.steps - 1):
        break
      time.sleep(0.005)
    if run.poll() is not None:
      failures.append(f"kill {i + 1}: the run ended (exit {run.returncode}) before it was killed:\n"
                      f"{run.stderr.read()[-2000:]}")
      break
    during_save = saving(broken)
    workers_seen |= descendants(run.pid)
    run.send_signal(signal.SIGTERM if kind == "SIGTERM" else signal.SIGKILL)
    code = run.wait()
    if kind == "SIGTERM" and code != 128 + signal.SIGTERM:
      failures.append(f"kill {i + 1}: SIGTERM exited with {code}:\n{run.stderr.read()[-2000:]}")
    line = (f"kill {i + 1:2d}: {kind:<19} workers {workers}  resumed at {resumed_at:2d}, killed at "
            f"step {last_step(broken, since):2d}{' (checkpoint being written)' if during_save else ''}; "
            f"checkpoints now {finished_steps(broken)}")
    if i == damage_after:
      damaged = (finished_steps(broken)[-1], damage_newest(broken, rng))
      line += f"; then {damaged[1]}"
    print(line, flush=True)

  run = start(config, broken, rng.choice([0, 2]))
  if run.wait() != 0:
    failures.append(f"the final resume failed:\n{run.stderr.read()[-3000:]}")
  print(f"interrupted run finished in {time.time() - t0:.0f} s", flush=True)

  from flax import traverse_util
  import numpy as np
  from segjax.train import checkpoint
  a = traverse_util.flatten_dict(checkpoint.load_variables(full))
  b = traverse_util.flatten_dict(checkpoint.load_variables(broken))
  differing = [("/".join(k)) for k in a if k not in b or not np.array_equal(np.asarray(a[k]), np.asarray(b[k]))]
  if differing or a.keys() != b.keys():
    failures.append(f"final variables differ from the unbroken run: {differing[:10]}")
  # A damaged file that a restore does not read leaves the checkpoint usable: then it is not set
  # aside, and the bitwise comparison above shows it restored right.
  set_aside = damaged and os.path.isdir(os.path.join(broken, checkpoint.DAMAGED_DIR, str(damaged[0])))
  orphans = sorted(p for p in workers_seen if alive(p))
  if orphans:
    failures.append(f"loader processes outlived their trainer: {orphans}")
  print(f"{len(kinds)} kills ({', '.join(f'{kinds.count(k)} {k}' for k in sorted(set(kinds)))}), "
        f"damage: {damaged[1] if damaged else 'none'} (step {damaged[0] if damaged else '-'}, "
        f"set aside: {'yes' if set_aside else 'no'}), "
        f"{len(a)} arrays compared, {len(workers_seen)} child processes checked")
  print("FAILED:\n" + "\n".join(failures) if failures else
        "OK: final parameters and BatchNorm statistics equal the unbroken run's bit for bit")
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()

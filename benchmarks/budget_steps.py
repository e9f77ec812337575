"""Equal CPU budgets for the comparison runs: CPU seconds per training step, and the step counts that cost
what the reference run costs.

The architecture study (seed N) and the MoFA baseline (seed P) give every run the default model's
CPU time, not its step count. This times one training step of each config (CPU time of this
process, ``time.process_time``, one torch thread, batch and input size from the config) with the
configs interleaved step by step, so all of them see the same machine load, and prints the median
over ``--steps`` steps after two warm-up steps:

- an lsqface config (``lsqface train``): its main-stage step; budget steps =
  reference steps x reference s/step / its s/step;
- a MoFA config (``lsqface train-mofa``): a landmark pretraining step and a main step, each timed
  with the face pool already drawn (a run draws its pool once, in its first iterations); the
  pretraining steps are kept and the main phase gets what is left: (reference CPU time -
  pretraining steps x s/step) / main s/step.

Run: ``python benchmarks/budget_steps.py --reference configs/default.toml configs/arch-*.toml
configs/mofa-none-landmarks.toml`` (about 2 minutes). Not a test: timings on a shared machine vary
by some per cent; the ratios between configs are what counts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def _lsqface_trainer(path: str):
    from lsqface.config import load_config
    from lsqface.morphable.cache import load_uv_model
    from lsqface.train.config import TrainConfig
    from lsqface.train.trainer import Trainer

    config = load_config(TrainConfig, path)
    return config, Trainer(config, "train", tempfile.mkdtemp(), load_uv_model(size=config.uv_size))


def _mofa_trainers(path: str):
    from lsqface.baselines.train_mofa import MoFATrainer, load_mofa_config
    from lsqface.morphable.cache import load_uv_model

    config = load_mofa_config(path)
    uv_model = load_uv_model(size=config.uv_size)
    pretraining = MoFATrainer(config, tempfile.mkdtemp(), uv_model)
    main = MoFATrainer(config, tempfile.mkdtemp(), uv_model)
    main.step = config.pretrain.rotation_xy_steps + config.pretrain.rotation_translation_steps
    pool = config.data.synthetic_pool
    if pool > 0:  # draw the pool once, as a run does in its first iterations, and share it
        pretraining.images.batch(list(range(pool)))
        main.images._pool = pretraining.images._pool
    return config, pretraining, main


def _is_mofa(path: str) -> bool:
    from lsqface.config import read_toml

    return "pretrain" in read_toml(path) and "rotation_xy_steps" in read_toml(path)["pretrain"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="lsqface or MoFA training configs")
    parser.add_argument("--reference", default="configs/default.toml", help="the run whose CPU time every config gets")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config (default 20)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    reference_config, reference = _lsqface_trainer(args.reference)
    timers = {"reference": reference.train_step}
    kinds = {}
    for path in args.configs:
        if _is_mofa(path):
            config, pretraining, main_phase = _mofa_trainers(path)
            timers[f"{path} pretraining"] = pretraining.train_step
            timers[f"{path} main"] = main_phase.train_step
            kinds[path] = ("mofa", config)
        else:
            config, trainer = _lsqface_trainer(path)
            timers[path] = trainer.train_step
            kinds[path] = ("lsqface", config)
    for step in timers.values():
        step()
        step()
    seconds: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.steps):
        for name, step in timers.items():
            start = time.process_time()
            step()
            seconds[name].append(time.process_time() - start)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    budget = reference_config.train.steps * median["reference"]
    print(f"reference {args.reference}: {reference_config.train.steps} steps x {median['reference']:.3f} CPU s "
          f"= {budget / 60:.1f} CPU minutes")
    print(f"{'config':48s} {'CPU s/step':>11s} {'ratio':>6s} {'budget steps':>13s} {'config steps':>13s}")
    for path, (kind, config) in kinds.items():
        if kind == "lsqface":
            per_step = median[path]
            print(f"{path:48s} {per_step:11.3f} {per_step / median['reference']:6.2f} "
                  f"{budget / per_step:13,.0f} {config.train.steps:13,d}")
        else:
            pretraining_steps = config.pretrain.rotation_xy_steps + config.pretrain.rotation_translation_steps
            pre, main_step = median[f"{path} pretraining"], median[f"{path} main"]
            main_steps = (budget - pretraining_steps * pre) / main_step
            print(f"{path + ' (pretraining)':48s} {pre:11.3f} {pre / median['reference']:6.2f} "
                  f"{pretraining_steps:13,d} {pretraining_steps:13,d}")
            print(f"{path + ' (main)':48s} {main_step:11.3f} {main_step / median['reference']:6.2f} "
                  f"{main_steps:13,.0f} {config.train.steps:13,d}")


if __name__ == "__main__":
    main()

"""Recipes: one training config that trains a model in stages (`talkmotion train CONFIG`).

A config's own settings train the model it names. When that model fine-tunes another run,
the earlier stages are `[[stage]]` tables in the same file, in training order. Each stage is
the file's settings with its table's over them (tables merge key by key; anything else, a
list such as data.sources included, is replaced). Each starts from the export of the stage
before it (the first from scratch, or from its own `init`), and the file's own settings
start from the last stage's export. So one file and one command rebuild a fine-tuned model:

    [[stage]]                                  # the base model, from scratch
    name = "talkmotion-default-v6"
    out_dir = "runs/default_base"
    export = "runs/default_base/default_model.safetensors"
    [stage.optim]
    steps = 12000

* A stage's table sets its own `out_dir` and `export` (where the next stage starts).
* A stage whose export exists and records this stage's recipe (its sections in
  RECIPE_SECTIONS, and all its steps) is done and skipped. An export recording another
  recipe is an error naming what differs; it is never silently reused. A stage cut
  short resumes from its run folder like any run.
* Overrides (`--set`) go over every stage that trains, its own table included: `--set
  threads=1` reaches them all. `--stage N` trains stages 1 to N only (stage 1 of the
  recipe above rebuilds the base model alone, and takes `--set out_dir=...`). An `init`
  override means "fine-tune from this instead": only the last of those stages trains.
  The file itself may not set `init` beside [[stage]] tables.
* Every stage's settings are checked before the first stage trains, so a mistake in the
  last stage fails in seconds, not after the first stage's hours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .config import ConfigError, from_dict, merged, read_config_file, to_dict, with_overrides

STAGE_KEY = "stage"
RECIPE_SECTIONS = ("model", "data", "optim", "loss", "seed", "cached_encoder", "cached_hearings")


class Recipe:
    """A config file's stages as config tables, in training order; the file's own settings last.

    `last_stage` (1-based) stops the recipe after that stage; `overrides` ("a.b" keys) go over
    every stage that trains, and an `init` among them trains the last stage alone, from it.
    """

    def __init__(self, path: str | Path, overrides: dict | None = None, last_stage: int | None = None):
        self.path = Path(path)
        data = read_config_file(self.path)
        tables = data.pop(STAGE_KEY, [])
        self._check_tables(tables, "init" in data)
        try:
            stages = [merged(data, table) for table in tables] + [data]
        except RecursionError:
            raise ConfigError(f"{self.path}: [[{STAGE_KEY}]] tables nested too deeply to read") from None
        if last_stage is not None and not 1 <= last_stage <= len(stages):
            raise ConfigError(f"{self.path}: there is no stage {last_stage}; its stages are 1 to {len(stages)}")
        self.numbers = list(range(1, len(stages) + 1))[:last_stage]     # the stages that train
        if "init" in (overrides or {}):
            self.numbers = self.numbers[-1:]                            # from the given file instead
        self.count = len(stages)
        self.stages = [with_overrides(stages[n - 1], overrides) for n in self.numbers]
        for index, (stage, later) in enumerate(zip(self.stages, self.stages[1:])):
            if not stage.get("export"):
                raise ConfigError(f"{self.where(index)}: an override left this stage without an export, "
                                  f"the file the next stage starts from")
            later["init"] = stage["export"]
        for key in ("out_dir", "export"):
            self._check_distinct(key)

    def _check_tables(self, tables, file_sets_init: bool) -> None:
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ConfigError(f"{self.path}: {STAGE_KEY} must be an array of tables ([[{STAGE_KEY}]] ...)")
        if tables and file_sets_init:
            raise ConfigError(f"{self.path}: init cannot be set beside [[{STAGE_KEY}]] tables: the file's own "
                              f"settings start from the last stage's export")
        for number, table in enumerate(tables, 1):
            where = f"{self.path} [[{STAGE_KEY}]] {number}"
            if number > 1 and "init" in table:
                raise ConfigError(f"{where}: only the first stage may set init; the others start from "
                                  f"the stage before")
            missing = [key for key in ("out_dir", "export") if not table.get(key)]
            if missing:
                raise ConfigError(f"{where}: needs its own {' and '.join(missing)} "
                                  f"(its run folder, and the file the next stage starts from)")

    def where(self, index: int) -> str:
        """The place in the file of the index-th stage that trains (0-based; -1 the last), for messages."""
        number = self.numbers[index]
        return str(self.path) if number == self.count else f"{self.path} [[{STAGE_KEY}]] {number}"

    def config(self, index: int):
        """Stage `index`'s TrainConfig; a chained stage's init (the stage before's export) must exist."""
        from .train import TrainConfig

        return from_dict(TrainConfig, self.stages[index], self.where(index))

    def check(self) -> None:
        """Build every stage's config; after the first, init (the stage before's export, not made
        yet) is left out."""
        from .train import TrainConfig

        for index, stage in enumerate(self.stages):
            from_dict(TrainConfig, {**stage, "init": ""} if index else stage, self.where(index))

    def _check_distinct(self, key: str) -> None:
        values = [str(stage.get(key, "")) for stage in self.stages]
        for index, value in enumerate(values):
            if value and value in values[:index]:
                raise ConfigError(f"{self.where(index)}: {key} {value!r} is also an earlier stage's; each stage "
                                  f"needs its own (an override goes over every stage; --stage N trains fewer)")


def train_recipe(path: str | Path, overrides: dict | None, train: Callable, last_stage: int | None = None,
                 say: Callable[[str], None] = print):
    """Train each stage of the recipe in turn (skipping those done); (last config, train's result)."""
    recipe = Recipe(path, overrides, last_stage)
    recipe.check()
    for index, number in enumerate(recipe.numbers[:-1]):
        cfg = recipe.config(index)
        if stage_done(cfg, recipe.where(index)):
            say(f"train: stage {number} of {recipe.count} ({cfg.name}) is done: {cfg.export}")
            continue
        say(f"train: stage {number} of {recipe.count} ({cfg.name}) in {cfg.out_dir}")
        train(cfg)
    cfg = recipe.config(-1)
    if recipe.count > 1:
        start = f", from {cfg.init}" if cfg.init else ""
        say(f"train: stage {recipe.numbers[-1]} of {recipe.count} ({cfg.name}) in {cfg.out_dir}{start}")
    return cfg, train(cfg)


def stage_done(cfg, where: str) -> bool:
    """Whether stage `cfg`'s export exists and records its recipe; an export from another recipe is
    a ConfigError naming what differs."""
    from .checkpoint import read_header

    export = Path(cfg.export)
    if not export.exists():
        return False
    record = read_header(export).get("training") or {}
    if not isinstance(record.get("config"), dict):
        raise ConfigError(f"{where}: export {export} exists but records no training run; move it away")
    now, then = config_json(cfg), config_json(recorded_config(export, record))
    differ = [key for key in RECIPE_SECTIONS if now[key] != then[key]]
    if record.get("steps") != cfg.optim.steps and "optim" not in differ:
        differ.append(f"steps (it ran {record.get('steps')})")
    if differ:
        raise ConfigError(f"{where}: export {export} exists but was trained with other {', '.join(differ)}; "
                          f"move it away or give this stage another export")
    return True


def recorded_config(checkpoint: str | Path, record: dict | None = None):
    """The TrainConfig a checkpoint's header records (`record`: its "training" entry, if already
    read). Its init is left out: it names a file on the machine that trained it, not the recipe."""
    from .checkpoint import read_header
    from .train import TrainConfig

    record = record if record is not None else read_header(checkpoint)["training"]
    return from_dict(TrainConfig, {**record["config"], "init": ""}, f"{checkpoint} (its training record)")


def config_json(cfg) -> dict:
    """A TrainConfig as plain JSON values (tuples as a header's JSON lists), for comparing sections."""
    return json.loads(json.dumps(to_dict(cfg)))

"""Lambda schedules: they own lam and see the measurements they need.

Protocol (see LambdaSchedule): the trainer asks `wants_measurement(step, epoch_step)` after each optimizer
step; when True it calls `observe(step, metrics)` with the metrics of that step (train bare loss
and accuracy of the batch just used, measured before the update). `lam` is read whenever the
penalty or prox is applied.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..registry import Registry, subclass_of, validate_options


class ScheduleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LambdaSchedule:
    name: ClassVar[str] = ""
    Options: ClassVar[type[ScheduleOptions]] = ScheduleOptions

    def __init__(self, lam0: float, options: ScheduleOptions):
        self.lam = float(lam0)
        self.options = options
        self.history: list[tuple[int, float]] = [(0, self.lam)]
        """(step, lam) at every measurement or change, for the lambda trajectory."""

    def wants_measurement(self, step: int, epoch_step: int | None = None) -> bool:
        """Whether to measure after global step `step` (0-based); `epoch_step` is the batch's
        0-based index within its epoch, for schedules that count in epochs (AutoL2 compat)."""
        return False

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        """metrics has train_loss (bare batch loss) and train_acc (batch accuracy, 0..1)."""

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state["lam"])
        self.history = [tuple(h) for h in state["history"]]


SCHEDULES: Registry[type[LambdaSchedule]] = Registry(
    "schedule", ("a subclass of reglab.schedules.LambdaSchedule", subclass_of(LambdaSchedule))
)


@SCHEDULES.register("constant")
class Constant(LambdaSchedule):
    name = "constant"


def _schedule_options(cfg) -> dict:
    return {k: v for k, v in cfg.model_dump().items() if k != "name"}


def check_schedule_options(cfg, where: str) -> None:
    cls = SCHEDULES.get(cfg.name, f"{where}.name")
    validate_options(cls, _schedule_options(cfg), where, "schedule")


def build_schedule(cfg, lam0: float, where: str = "schedule") -> LambdaSchedule:
    cls = SCHEDULES.get(cfg.name, f"{where}.name")
    return cls(lam0, validate_options(cls, _schedule_options(cfg), where, "schedule"))

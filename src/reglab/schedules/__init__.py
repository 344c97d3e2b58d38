"""Lambda schedules looked up by name: constant (base.py) and the AutoL2 family (autol2.py)."""

from . import autol2  # noqa: F401  (registers autol2, advance_l2)
from .base import SCHEDULES, LambdaSchedule, ScheduleOptions, build_schedule, check_schedule_options

__all__ = ["SCHEDULES", "LambdaSchedule", "ScheduleOptions", "build_schedule", "check_schedule_options"]

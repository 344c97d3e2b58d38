"""AutoL2 and AdvanceL2 lambda schedules (filled in by the schedules work)."""

"""Domain logic: functions over a Session that never commit (the caller owns the unit of work)."""

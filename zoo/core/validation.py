"""Field checks shared by every config, plan, router and expert bank: one wording for each rule, and
the error always names the field."""
from __future__ import annotations



def check_positive(**fields: int) -> None:
    """Each value must be a positive int (bool is not an int here)."""
    for name, value in fields.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

"""The planner's version: part of every plan_id, so a new solver never reuses an old plan."""

__version__ = "0.1.0"

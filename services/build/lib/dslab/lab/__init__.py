"""The lab: start stacks, drive load, return DataFrames. Notebooks call this and plot."""

from . import db, lb
from .load import fire, fire_for, random_rids
from .plots import save_figure

__all__ = ["db", "fire", "fire_for", "lb", "random_rids", "save_figure"]

"""The lab: start stacks, drive load, return DataFrames. Notebooks call this and plot."""

from . import (
    algorithms,
    capacity,
    cpu,
    db,
    dbcharts,
    dbfindings,
    faults,
    lb,
    lbfindings,
    replication,
    shares,
)
from .load import fire, random_rids
from .plots import save_figure

__all__ = ["algorithms", "capacity", "cpu", "db", "dbcharts", "dbfindings", "faults", "fire", "lb",
           "lbfindings", "random_rids", "replication", "save_figure", "shares"]

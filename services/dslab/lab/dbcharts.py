"""The Part 2 speed charts: rates per world and kind, and where the CPU went."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .dbfindings import KINDS

__all__ = ["cpu_bars", "speed_bars"]


def speed_bars(table: pd.DataFrame) -> Figure:
    """A panel per world (rows) and kind (columns): each configuration's mean rate as a bar,
    every run as a dot (the spread). Worlds keep their own scale: capped servers are slower."""
    kinds = [k for k in KINDS if k in set(table.kind)]
    grid = sns.catplot(table, x="config", y="per_s", row="world", col="kind", col_order=kinds,
                       kind="bar", errorbar=None, height=2.8, aspect=1.25, sharey=False,
                       color="tab:blue", alpha=0.75)
    grid.map_dataframe(sns.stripplot, x="config", y="per_s", color="black", size=4)
    for (world, kind), ax in grid.axes_dict.items():
        ax.set_title(f"{world}: {KINDS[kind][0]}", fontsize=9)
        ax.set_ylabel(KINDS[kind][1])
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelsize=8)
    grid.figure.suptitle("bars: mean of the runs; dots: each run", y=1.01, fontsize=9)
    return grid.figure


def cpu_bars(cpu: pd.DataFrame) -> Figure:
    """Cores used per part (the balancer, the clients, the metadata engine, the busiest server
    and all servers together), mean over the runs, a panel per world and configuration."""
    parts = ["balancer", "client", "metadata engine", "busiest server", "all servers"]
    long = cpu.rename(columns={"servers": "all servers"}).melt(
        id_vars=["world", "config", "kind"], value_vars=parts, var_name="part",
        value_name="cores")
    grid = sns.catplot(long, x="kind", y="cores", hue="part", hue_order=parts, row="world",
                       col="config", kind="bar", errorbar=None, height=2.8, aspect=1.4,
                       sharey="row",  # type: ignore[arg-type]  # the stubs say bool; "row" works
                       palette="tab10")
    caps = cpu.groupby("world").cap.first()
    for (world, config), ax in grid.axes_dict.items():
        ax.set_title(f"{config}\n{world}", fontsize=8)
        ax.set_xlabel("")
        if pd.notna(caps[world]):
            ax.axhline(caps[world], color="black", linestyle=":", linewidth=1)
            ax.annotate("quota of a server", (0.01, caps[world]), xycoords=("axes fraction", "data"),
                        fontsize=7, va="bottom")
    grid.set_ylabels("cores (mean of the runs)")
    return grid.figure

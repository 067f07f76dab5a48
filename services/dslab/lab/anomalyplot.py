"""A non-linearizable register's operations around its anomaly, as Porcupine draws them: one
row per client, one bar per operation over time, labelled with its value (w175 a write of
175, r174 a read that returned 174, r- a read of nothing), the stuck operations outlined in
red and the operation that fixed the value held in blue."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.patches import Patch

from ..faults.history import Kind, Op, Outcome
from ..faults.linearizable import NotLinearizable

__all__ = ["label", "plot_anomaly"]

WINDOW = 2.0  # seconds either side of the stuck operation, by default
MOST = 30  # operations drawn at most: the nearest to the stuck one (more are unreadable)
FILL = {(Kind.WRITE, Outcome.OK): "#4c72b0", (Kind.WRITE, Outcome.UNKNOWN): "#a6bddb",
        (Kind.INSERT, Outcome.OK): "#4c72b0", (Kind.INSERT, Outcome.UNKNOWN): "#a6bddb",
        (Kind.READ, Outcome.OK): "#55a868"}
FAILED = "#d9d9d9"
STUCK, FIXED = "#c44e52", "#1f3a93"


def label(op: Op) -> str:
    """w175, r174, r- (a read of nothing)."""
    return ("r" if op.kind is Kind.READ else "w") + ("-" if op.value is None else str(op.value))


def plot_anomaly(ax: Axes, verdict: NotLinearizable, ops: Sequence[Op],
                 window: float | None = None) -> None:
    """Draw ``verdict.key``'s operations of ``ops`` (any keys: the others are left out) within
    ``window`` seconds of the stuck operation (default ``WINDOW``), the ``MOST`` nearest it;
    the ops that show the anomaly are drawn wherever they are."""
    stuck = verdict.stuck_op
    ax.set_title(verdict.short(), fontsize=8, wrap=True)
    if stuck is None:
        return
    w = WINDOW if window is None else window
    middle = (stuck.start + stuck.end) / 2
    near = sorted((op for op in ops if op.key == verdict.key
                   and op.end >= stuck.start - w and op.start <= stuck.end + w),
                  key=lambda op: abs((op.start + op.end) / 2 - middle))
    marked = [op for op in (*verdict.stuck, verdict.fixed_by, verdict.written_by)
              if op is not None]
    drawn: dict[int, Op] = {}
    for op in marked + near:  # the ops that show the anomaly, then the nearest
        if len(drawn) < max(MOST, len(marked)):
            drawn.setdefault(op.id, op)
    processes = sorted({op.process for op in drawn.values()})
    row = {p: n for n, p in enumerate(processes)}
    stuck_ids = {op.id for op in verdict.stuck}
    fixed_id = None if verdict.fixed_by is None else verdict.fixed_by.id
    bold = {op.id for op in marked}
    # The time shown: the drawn ops, cut to the window (a long unknown write runs off it)
    # but never cutting off the stuck ops and the one that fixed the value.
    kept = [op for op in (*verdict.stuck, verdict.fixed_by) if op is not None]
    lo = max(min(op.start for op in drawn.values()),
             min([stuck.start - w, *(op.start for op in kept)]))
    hi = min(max(op.end for op in drawn.values()),
             max([stuck.end + w, *(op.end for op in kept)]))
    pad = 0.03 * (hi - lo) or 0.01
    # A label fits a bar about a quarter of an inch wide, whatever the figure's size.
    figure = ax.get_figure()
    inches = ax.bbox.width / (figure.dpi if figure is not None else 100.0)
    fits = (hi - lo + 2 * pad) * 0.25 / max(inches, 0.1)
    for op in drawn.values():
        fill = FILL.get((op.kind, op.outcome), FAILED)
        edge, width = "#333333", 0.5
        if op.id in stuck_ids:
            edge, width = STUCK, 2.5
        elif op.id == fixed_id:
            edge, width = FIXED, 2.5
        ax.barh(row[op.process], op.end - op.start, left=op.start, height=0.6, color=fill,
                edgecolor=edge, linewidth=width,
                hatch="//" if op.outcome is Outcome.UNKNOWN else None,
                alpha=0.5 if op.outcome is Outcome.FAIL else 1.0)
        left, right = max(op.start, lo), min(op.end, hi)
        if op.id in bold:  # on top of its neighbours' labels, on a white ground
            ax.text((left + right) / 2, row[op.process], label(op), ha="center", va="center",
                    fontsize=7, clip_on=True, fontweight="bold", zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.85,
                          "edgecolor": "none"})
        elif right - left >= fits:
            ax.text((left + right) / 2, row[op.process], label(op), ha="center", va="center",
                    fontsize=7, clip_on=True)
    ax.set_yticks(range(len(processes)), [f"client {p}" for p in processes], fontsize=7)
    ax.set_ylim(len(processes) - 0.5, -0.5)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel("seconds", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=FILL[Kind.WRITE, Outcome.OK], label="write ok"),
                       Patch(facecolor=FILL[Kind.WRITE, Outcome.UNKNOWN], hatch="//",
                             label="write unknown"),
                       Patch(color=FILL[Kind.READ, Outcome.OK], label="read ok"),
                       Patch(color=FAILED, label="refused / failed"),
                       Patch(facecolor="white", edgecolor=STUCK, linewidth=2.5,
                             label="could not come next"),
                       Patch(facecolor="white", edgecolor=FIXED, linewidth=2.5,
                             label="fixed the value held")],
              fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


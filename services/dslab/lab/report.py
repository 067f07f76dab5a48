"""``make report``: run every experiment notebook with papermill and render it with nbconvert.

Each notebook in ``notebooks/`` runs with the seed's sizes (or ``--quick`` sizes, for tests),
its figures go to ``reports/figures/*.png`` (which the README embeds) and the executed notebook
becomes ``reports/<name>.html``: text, tables and charts, without the code (which is in the
notebook). Its observations and charts also go to ``reports/findings/<name>.md``, which the
docs link to. Progress goes to the terminal only, never into a report: a line per experiment,
and from within the long experiments a line per run and a bar per batch of requests
(``progress.py``; papermill's own bar per cell is off, as it would fight the kernel's bars
for the same terminal line); at the end the first sentences of each experiment's
observations.

Every report says how it was made: its first line (and the findings' line under their title)
names the commit (and whether ``services/`` or ``notebooks/`` had uncommitted changes), the
date, the machine (cores, CPU, memory, load average at the start), the sizes and the
notebook's parameters as run (``provenance``, pure; ``gather_provenance`` reads git and
``/proc``). An experiment that raises is named in the summary at the end, the others still
run and render, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EXPERIMENTS", "QUICK", "Machine", "findings", "gather_provenance", "headline", "main",
           "observations", "parameters_as_run", "provenance", "run_experiment", "summary"]

ROOT = Path(__file__).resolve().parents[3]
# Installed from a wheel the package is not in a checkout: the notebooks and reports are then
# the current directory's.
HOME = ROOT if (ROOT / "notebooks").is_dir() else Path.cwd()

# name -> the one-line description printed while it runs
EXPERIMENTS: dict[str, str] = {
    "lb_a1": "Part 1 A-1: requests on N=3",
    "lb_a2": "Part 1 A-2: N from 2 to 6; throughput against N, uncapped and capped",
    "lb_a3": "Part 1 A-3: endpoints, and a replica killed under load",
    "lb_a4": "Part 1 A-4: five algorithms, hash functions, K, bounded loads vs HAProxy, live",
    "db_a1": "Part 2 A-1: writes and reads, default configuration, uncapped and capped",
    "db_a2": "Part 2 A-2: 7 replicas per shard, against A-1, uncapped and capped",
    "db_a3": "Part 2 A-3: 10 servers, 6 shards, 8 replicas, against A-1, uncapped and capped",
    "db_a4": "Part 2 A-4: endpoints, and a shard server killed and refilled",
    "db_a5": "Part 2 A-5: a nemesis and a history checker, per read consistency",
    "db_a6": "Part 2 A-6: --replication all against majority, under the same load and faults",
}

DB_QUICK: dict[str, Any] = {"n_writes": 200, "n_reads": 200, "n_hot_reads": 100, "repeats": 1,
                            "capped_writes": 60, "capped_reads": 60, "capped_hot_reads": 60}

# Small sizes: every notebook runs in seconds (make test runs them all like this).
QUICK: dict[str, dict[str, Any]] = {
    "lb_a1": {"n_requests": 300},
    "lb_a2": {"n_requests": 300, "ns": [2, 3], "capacity_ns": [2], "capacity_seconds": 1},
    "lb_a3": {"seconds": 2.5, "kill_at": 0.8},
    "lb_a4": {"n_requests": 300, "ns": [2, 3],
              "algorithms": ["ring seed", "ring K9", "jump", "ring seed bounded 1.25"],
              "speed_replicas": 3, "speed_seconds": 1, "speed_rounds": 1, "haproxy_replicas": 3},
    "db_a1": DB_QUICK,
    "db_a2": DB_QUICK,
    "db_a3": DB_QUICK,
    "db_a4": {"n_rows": 200},
    "db_a5": {"scale": 0.2, "cost_seconds": 3.0, "writers": 2, "updaters": 2, "readers": 3,
              "registers_per_updater": 3},
    "db_a6": {"scale": 0.4, "faults": ["secondary paused", "primary killed"], "writers": 2,
              "updaters": 2, "readers": 2, "registers_per_updater": 2},
}


@dataclass(frozen=True)
class Machine:
    """Where and when a report was made, read before its notebook runs (``gather_provenance``):
    ``commit`` None outside a git checkout; ``dirty`` when git lists changes under
    services/ or notebooks/."""

    when: dt.datetime
    commit: str | None = None
    dirty: bool = False
    cores: int | None = None
    cpu: str | None = None
    memory_bytes: int | None = None
    load: float | None = None


def provenance(machine: Machine, *, quick: bool, parameters: dict[str, Any]) -> str:
    """The line a report opens with (Markdown): how it was made. Pure: ``machine`` as
    ``gather_provenance`` read it, ``parameters`` as ``parameters_as_run`` found them."""
    if machine.commit is None:
        source = "not a git checkout"
    else:
        source = f"commit {machine.commit}" + (" with uncommitted changes" if machine.dirty else "")
    when = machine.when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    box = [f"{machine.cores} cores" if machine.cores else "cores unknown"]
    if machine.cpu:
        box.append(machine.cpu)
    if machine.memory_bytes:
        box.append(f"{machine.memory_bytes / 2 ** 30:.1f} GiB of memory")
    if machine.load is not None:
        box.append(f"load average {machine.load:.1f} at start")
    sizes = "quick (--quick) sizes" if quick else "full sizes"
    shown = ", ".join(f"{name}={value!r}" for name, value in parameters.items()
                      if not name.endswith("_dir"))
    return (f"*How this report was made:* {source}; {when}; {', '.join(box)}; {sizes}; "
            f"parameters as run: `{shown or 'none'}`.")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def gather_provenance(notebooks: Path) -> Machine:
    """Read what ``provenance`` states, now: the commit of the checkout ``notebooks`` is in
    (and its uncommitted changes under services/ and notebooks/), the machine from
    ``os`` and ``/proc``, the load average."""
    commit = dirty = None
    top = _git(notebooks, "rev-parse", "--show-toplevel")
    if top is not None:
        commit = (_git(notebooks, "rev-parse", "--short", "HEAD") or "").strip() or None
        status = _git(Path(top.strip()), "status", "--porcelain", "--", "services", "notebooks")
        dirty = bool(status and status.strip())
    cpu = None
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = re.sub(r"\s+", " ", found.group(1)).strip() if found else None
    except OSError:
        pass
    memory = None
    try:
        total = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        memory = int(total.group(1)) * 1024 if total else None
    except OSError:
        pass
    try:
        load: float | None = os.getloadavg()[0]
    except OSError:
        load = None
    return Machine(when=dt.datetime.now(dt.UTC), commit=commit, dirty=bool(dirty),
                   cores=os.cpu_count(), cpu=cpu, memory_bytes=memory, load=load)


def parameters_as_run(notebook: Any) -> dict[str, Any]:
    """A notebook's parameters as it ran: the defaults of its cell tagged ``parameters``
    (values where they are literals, else their source text) with papermill's injected
    values (``metadata.papermill.parameters``) applied, in the cell's order."""
    values: dict[str, Any] = {}
    for cell in notebook.cells:
        if cell.get("cell_type") != "code" or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell.get("source", ""))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if not isinstance(target, ast.Name):
                continue
            try:
                values[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                values[target.id] = _Source(ast.get_source_segment(source, value) or "?")
        break
    metadata = getattr(notebook, "metadata", None) or {}
    values.update(metadata.get("papermill", {}).get("parameters", {}) or {})
    return values


class _Source(str):
    """A default that is an expression, not a literal: shown as written."""

    def __repr__(self) -> str:
        return str(self)


def observations(notebook: Any) -> str:
    """The Markdown a notebook displayed from its observations cell on: the paragraph that
    begins with "Observations." and any Markdown shown after it (computed, every word)."""
    shown = [output.get("data", {}).get("text/markdown", "")
             for cell in notebook.cells for output in cell.get("outputs", [])]
    shown = [text for text in shown if text]
    start = next((k for k, text in enumerate(shown) if "Observations." in text), None)
    return "" if start is None else "\n\n".join(shown[start:])


def findings(name: str, notebook: Any, figures: list[str], quick: bool, made: str = "") -> str:
    """``reports/findings/<name>.md``: what the run showed, for the docs to link to. Only the
    notebook's computed text and the run's charts; nothing written by hand. ``made``: the
    provenance line, under the title."""
    sizes = "small (--quick) sizes" if quick else "the experiment's full sizes"
    charts = "\n".join(f"![{figure}](../figures/{figure}.png)" for figure in figures)
    return (f"# {EXPERIMENTS[name]}\n\n"
            + (f"{made}\n\n" if made else "")
            + f"What the last `make report` of `{name}` showed ({sizes}, on a machine with "
            f"{os.cpu_count()} cores); the whole report is [`reports/{name}.html`](../{name}.html)."
            f"\n\n{charts}\n\n{observations(notebook)}\n")


def headline(notebook: Any, width: int = 320) -> str:
    """The start of a notebook's observations (the Markdown output that begins with
    "Observations."), as plain text: its first sentences, cut at ``width`` characters."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown", "")
            if "Observations." in text:
                plain = re.sub(r"\*\*|`", "", text.split("Observations.", 1)[1]).strip()
                plain = re.sub(r"\s+", " ", plain)
                return plain if len(plain) <= width else plain[:width].rsplit(" ", 1)[0] + " ..."
    return "(no observations)"


def run_experiment(name: str, *, notebooks: Path, reports: Path, quick: bool = False,
                   executed_dir: Path | None = None) -> tuple[Path, str]:
    """Execute ``notebooks/<name>.ipynb`` and write ``reports/<name>.html``; returns that path
    and the experiment's headline. The report opens with how it was made (``provenance``)
    and is titled by the experiment's description."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    machine = gather_provenance(notebooks)  # the date and the load average: at the start

    parameters = dict(QUICK.get(name, {})) if quick else {}
    # Run in the reports folder, figures given relative to it: no path of this machine
    # reaches the notebook (papermill writes its parameters into it).
    parameters["figures_dir"] = "figures"
    with tempfile.TemporaryDirectory() as tmp:
        executed = (executed_dir or Path(tmp)) / f"{name}.ipynb"
        papermill.execute_notebook(str(notebooks / f"{name}.ipynb"), str(executed),
                                   parameters=parameters, progress_bar=False,
                                   kernel_name="python3", cwd=str(reports),
                                   # the kernel's warning about its loopback TCP transport
                                   # is noise on make report's terminal; and the kernel must
                                   # not capture its file descriptor 2 into the notebook:
                                   # progress (sys.__stderr__) and the logs of the stacks it
                                   # starts belong on the terminal, not in a report
                                   extra_arguments=["--IPKernelApp.log_level=ERROR",
                                                    "--IPKernelApp.capture_fd_output=False"])
        executed_notebook = nbformat.read(executed, as_version=4)
        made = provenance(machine, quick=quick, parameters=parameters_as_run(executed_notebook))
        page = nbformat.from_dict(executed_notebook)  # what is rendered: the line, a title
        page.cells.insert(0, nbformat.v4.new_markdown_cell(made))
        page.metadata["title"] = EXPERIMENTS.get(name, name)  # nbconvert's <title>
        # The reader gets the text, tables and charts; the code is in notebooks/.
        body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(page)
    html = reports / f"{name}.html"
    html.write_text(body, encoding="utf-8")
    figures = sorted(p.stem for p in (reports / "figures").glob(f"{name}_*.png"))
    (reports / "findings").mkdir(exist_ok=True)
    (reports / "findings" / f"{name}.md").write_text(
        findings(name, executed_notebook, figures, quick, made), encoding="utf-8")
    return html, headline(executed_notebook)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dslab.lab.report", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"experiments (default all: {', '.join(EXPERIMENTS)})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--notebooks", type=Path, default=HOME / "notebooks")
    parser.add_argument("--reports", type=Path, default=HOME / "reports")
    args = parser.parse_args(argv)
    names = args.names or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"unknown experiment(s): {', '.join(unknown)}; known: {', '.join(EXPERIMENTS)}")
    args.reports.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    headlines: dict[str, str] = {}
    took: dict[str, tuple[float, str | None]] = {}  # name -> seconds, why it failed (or None)
    for k, name in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {name}: {EXPERIMENTS[name]}", flush=True)
        t = time.monotonic()
        try:
            html, headlines[name] = run_experiment(name, notebooks=args.notebooks,
                                                   reports=args.reports, quick=args.quick)
        except Exception as error:  # the others still run; named in the summary, exit 1
            took[name] = time.monotonic() - t, _failure(error)
            print(f"      FAILED after {took[name][0]:.0f}s: {took[name][1]}", flush=True)
            continue
        took[name] = time.monotonic() - t, None
        print(f"      done in {took[name][0]:.0f}s -> {html.relative_to(Path.cwd()) if html.is_relative_to(Path.cwd()) else html}",
              flush=True)
    failed = [name for name, (_, why) in took.items() if why is not None]
    print(f"\n{len(names) - len(failed)} of {len(names)} experiments in "
          f"{time.monotonic() - started:.0f}s; figures in {args.reports / 'figures'}", flush=True)
    print(summary(took), flush=True)
    if headlines:
        print("\nheadlines (the start of each report's observations):")
    for name, text in headlines.items():
        print(f"  {name}: {text}", flush=True)
    if failed:
        sys.exit(f"\nfailed: {', '.join(failed)} (their reports were not rendered)")


def _failure(error: BaseException) -> str:
    """One line for a failed experiment: the exception the notebook raised (papermill gives
    its name and value), or the one raised around it."""
    ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
    if ename:
        return f"{ename}: {evalue}".splitlines()[0][:200]
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]


def summary(took: dict[str, tuple[float, str | None]]) -> str:
    """The table printed at the end of a run: each experiment, its seconds, ok or failed."""
    width = max([len("experiment"), *map(len, took)])
    lines = [f"{'experiment':<{width}}  {'seconds':>7}  result"]
    for name, (seconds, why) in took.items():
        lines.append(f"{name:<{width}}  {seconds:>7.0f}  {'ok' if why is None else 'FAILED: ' + why}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

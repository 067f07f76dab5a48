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
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["EXPERIMENTS", "QUICK", "findings", "headline", "main", "observations",
           "run_experiment"]

ROOT = Path(__file__).resolve().parents[3]

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
}


def observations(notebook: Any) -> str:
    """The Markdown a notebook displayed from its observations cell on: the paragraph that
    begins with "Observations." and any Markdown shown after it (computed, every word)."""
    shown = [output.get("data", {}).get("text/markdown", "")
             for cell in notebook.cells for output in cell.get("outputs", [])]
    shown = [text for text in shown if text]
    start = next((k for k, text in enumerate(shown) if "Observations." in text), None)
    return "" if start is None else "\n\n".join(shown[start:])


def findings(name: str, notebook: Any, figures: list[str], quick: bool) -> str:
    """``reports/findings/<name>.md``: what the run showed, for the docs to link to. Only the
    notebook's computed text and the run's charts; nothing written by hand."""
    sizes = "small (--quick) sizes" if quick else "the experiment's full sizes"
    charts = "\n".join(f"![{figure}](../figures/{figure}.png)" for figure in figures)
    return (f"# {EXPERIMENTS[name]}\n\n"
            f"What the last `make report` of `{name}` showed ({sizes}, on a machine with "
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
    and the experiment's headline."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

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
        # The reader gets the text, tables and charts; the code is in notebooks/.
        body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(executed_notebook)
    html = reports / f"{name}.html"
    html.write_text(body, encoding="utf-8")
    figures = sorted(p.stem for p in (reports / "figures").glob(f"{name}_*.png"))
    (reports / "findings").mkdir(exist_ok=True)
    (reports / "findings" / f"{name}.md").write_text(
        findings(name, executed_notebook, figures, quick), encoding="utf-8")
    return html, headline(executed_notebook)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dslab.lab.report", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"experiments (default all: {', '.join(EXPERIMENTS)})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    args = parser.parse_args(argv)
    names = args.names or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"unknown experiment(s): {', '.join(unknown)}; known: {', '.join(EXPERIMENTS)}")
    args.reports.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    headlines: dict[str, str] = {}
    for k, name in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {name}: {EXPERIMENTS[name]}", flush=True)
        t = time.monotonic()
        html, headlines[name] = run_experiment(name, notebooks=args.notebooks,
                                               reports=args.reports, quick=args.quick)
        print(f"      done in {time.monotonic() - t:.0f}s -> {html.relative_to(Path.cwd()) if html.is_relative_to(Path.cwd()) else html}",
              flush=True)
    print(f"all {len(names)} experiments in {time.monotonic() - started:.0f}s; "
          f"figures in {args.reports / 'figures'}", flush=True)
    print("\nheadlines (the start of each report's observations):")
    for name, text in headlines.items():
        print(f"  {name}: {text}", flush=True)


if __name__ == "__main__":
    main()

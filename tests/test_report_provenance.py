"""How each report says it was made (``dslab.lab.report.provenance``), on made-up data both
ways, and what is read to make it: the parameters as papermill ran them, git, /proc."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import nbformat

from conftest import REPO
from dslab.lab.report import Machine, gather_provenance, parameters_as_run, provenance, summary

WHEN = dt.datetime(2026, 12, 7, 3, 4, 59, tzinfo=dt.UTC)


def test_provenance_of_a_full_run_from_a_changed_checkout():
    machine = Machine(when=WHEN, commit="683e981", dirty=True, cores=2, cpu="AMD EPYC",
                      memory_bytes=24 * 2 ** 30, load=1.234)
    line = provenance(machine, quick=False, parameters={
        "scale": 1.0, "modes": ["linearizable", "any"], "figures_dir": "figures",
        "backend": "process", "histories_dir": "histories"})
    assert line == ("*How this report was made:* commit 683e981 with uncommitted changes; "
                    "2026-12-07 03:04 UTC; 2 cores, AMD EPYC, 24.0 GiB of memory, load average "
                    "1.2 at start; full sizes; parameters as run: "
                    "`scale=1.0, modes=['linearizable', 'any'], backend='process'`.")


def test_provenance_of_a_quick_run_outside_a_checkout_says_so_and_only_what_is_known():
    machine = Machine(when=dt.datetime(2026, 12, 7, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    line = provenance(machine, quick=True, parameters={"figures_dir": "figures"})
    assert line == ("*How this report was made:* not a git checkout; 2026-12-07 03:00 UTC; "
                    "cores unknown; quick (--quick) sizes; parameters as run: `none`.")
    clean = provenance(Machine(when=WHEN, commit="683e981", cores=4, load=0.0), quick=True,
                       parameters={"n_requests": 300})
    assert "commit 683e981;" in clean and "uncommitted" not in clean
    assert "4 cores, load average 0.0 at start; quick (--quick) sizes" in clean
    assert clean.endswith("`n_requests=300`.")


def test_parameters_as_run_are_the_defaults_with_papermills_values_applied():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A-5\n\nscale = 99"),
        nbformat.v4.new_code_cell("import os"),
        nbformat.v4.new_code_cell(
            'scale = 1.0\nmodes = ["linearizable", "any"]  # each\nworkers: int = 2\n'
            'cores = os.cpu_count() or 1\nbackend = "process"\nfigures_dir = ""',
            metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('# Parameters\nscale = 0.2\nfigures_dir = "figures"\n',
                                  metadata={"tags": ["injected-parameters"]}),
    ]
    notebook.metadata["papermill"] = {"parameters": {"scale": 0.2, "figures_dir": "figures",
                                                     "extra": [1, 2]}}
    found = parameters_as_run(notebook)
    assert found == {"scale": 0.2, "modes": ["linearizable", "any"], "workers": 2,
                     "cores": "os.cpu_count() or 1", "backend": "process",
                     "figures_dir": "figures", "extra": [1, 2]}
    line = provenance(Machine(when=WHEN), quick=False, parameters=found)
    assert ("`scale=0.2, modes=['linearizable', 'any'], workers=2, cores=os.cpu_count() or 1, "
            "backend='process', extra=[1, 2]`") in line
    # A notebook run without papermill (no metadata) shows its defaults.
    del notebook.metadata["papermill"]
    assert parameters_as_run(notebook)["scale"] == 1.0


def test_gather_provenance_reads_git_and_the_machine(tmp_path):
    here = gather_provenance(tmp_path)  # /tmp: not in a checkout
    assert here.commit is None and not here.dirty
    assert here.cores and here.cores > 0 and here.when.tzinfo is not None
    assert here.load is not None and here.load >= 0
    ours = gather_provenance(Path(REPO) / "notebooks")
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    status = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "services",
                             "notebooks"], capture_output=True, text=True, check=True).stdout
    assert ours.commit == head and ours.dirty == bool(status.strip())
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        assert ours.cpu
    if Path("/proc/meminfo").exists():
        assert ours.memory_bytes and ours.memory_bytes > 2 ** 20
    assert "not a git checkout" in provenance(here, quick=True, parameters={})


def test_summary_names_each_experiment_its_seconds_and_whether_it_failed():
    table = summary({"lb_a1": (12.4, None), "db_a5": (3.0, "ValueError: no")}).splitlines()
    assert table == ["experiment  seconds  result",
                     "lb_a1            12  ok",
                     "db_a5             3  FAILED: ValueError: no"]

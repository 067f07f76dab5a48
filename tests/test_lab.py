"""The lab library against real stacks with small sizes, and every notebook run by papermill."""

from __future__ import annotations

import argparse
import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from dslab.lab import capacity, lb, random_rids
from dslab.lab.report import EXPERIMENTS, QUICK, main
from dslab.ring.analysis import assign, loads

needs_cgroups = pytest.mark.skipif(capacity.available() is not None,
                                   reason="a CPU quota per server cannot be set here")


def test_live_distribution_is_exactly_what_the_ring_predicts():
    config = lb.HashConfig("blake2b", "blake2b")
    requests = lb.requests_per_server(400, 3, config, concurrency=16, seed=3)
    per_server = lb.summarize(requests)
    names = ["Server1", "Server2", "Server3"]
    predicted = loads(assign(config.ring(names), random_rids(400, 3)), names)
    assert dict(zip(per_server.server, per_server.requests)) == predicted
    assert (requests.status == 200).all() and len(requests) == 400


def test_balance_table_from_scaling_is_the_rings_split_at_every_n():
    config = lb.HashConfig("seed")
    table = lb.balance_table(lb.scaling([2, 3], 300, config, concurrency=16))
    assert list(table.N) == [2, 3] and list(table["mean"]) == [150, 100]
    for run in table.itertuples():
        names = [f"Server{i}" for i in range(1, run.N + 1)]
        counts = loads(assign(config.ring(names), random_rids(300, 0)), names)
        assert (run.max, run.min) == (max(counts.values()), min(counts.values())), run
        assert run.max_over_mean == max(counts.values()) / (300 / run.N)


def test_kill_under_load_measures_a_recovery_with_no_failures():
    requests, events = lb.kill_under_load(seconds=3, kill_at=1, concurrency=8)
    assert events["failed"] == 0 and events["requests"] == len(requests) > 100
    assert events["victim"] not in events["replicas_after"]
    assert events["replacement"] in events["replicas_after"]
    assert 0 < events["recovery_s"] < 2.5
    assert events["killed_at"] < events["first_served_at"]


def test_endpoint_tour_shows_successes_and_errors():
    with lb.lb_stack(3) as balancer:
        tour = lb.endpoint_tour(balancer)
    assert list(tour.status) == [200, 200, 200, 400, 200, 400, 400, 400, 200, 400, 400, 200]
    assert "Length of hostname list is more than newly added instances" in tour.response[5]


def test_ring_layout_has_k_nodes_per_server():
    layout = lb.ring_layout(lb.HashConfig("seed"), ["Server1", "Server2"])
    assert len(layout) == 512 and layout.node.value_counts().to_dict() == {"Server1": 9, "Server2": 9}
    assert layout.served_by.notna().all()


def rendered(html: Path) -> tuple[list[list], str]:
    """What headless Chromium shows of ``html``: [complete, naturalWidth] of every image once
    loaded, and the page's visible text. A copy of the page records them into the DOM on load,
    and Chromium dumps the DOM."""
    probe = ("<script>window.addEventListener('load', () => {"
             "document.body.setAttribute('data-images', JSON.stringify(Array.from("
             "document.images).map(i => [i.complete, i.naturalWidth])));"
             "document.body.setAttribute('data-text', document.body.innerText);});</script></body>")
    page = html.with_suffix(".probe.html")
    page.write_text(html.read_text().replace("</body>", probe))
    done = subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    images = re.search(r'data-images="([^"]*)"', done.stdout)
    text = re.search(r'data-text="([^"]*)"', done.stdout)
    assert images and text, f"Chromium rendered no page: {done.stderr[-500:]}"
    return json.loads(html_lib.unescape(images.group(1))), html_lib.unescape(text.group(1))


README_FIGURES = set(re.findall(r"reports/figures/([\w-]+)\.png",
                                (Path(REPO) / "README.md").read_text()))

# What a reader must not meet in a report: progress bars (tqdm's "42%|" and "it/s"), a
# warning, a traceback, or a path of the machine that rendered it.
MACHINERY = re.compile(r"\d+%\||\d it/s|\ds/it|s so far, ~|\w+Warning\b|WARNING|Traceback|"
                       r"(?<![\w.:/])/(?:work|root|tmp|home|usr|opt|var|srv)/")


def assert_clean_report(text: str, *paths: Path) -> None:
    found = MACHINERY.search(text)
    assert found is None, text[max(0, found.start() - 200):found.end() + 200]
    for path in paths:
        assert str(path) not in text, f"a path of this machine: {path}"
    # The observations are there, computed: their text holds numbers.
    observed = text.split("Observations.", 1)
    assert len(observed) == 2 and re.search(r"\d", observed[1][:400]), text[-800:]


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_notebook_runs_and_renders(name, tmp_path, monkeypatch):
    """`make report` of one experiment with small sizes (a test each, so that the workers
    share them): HTML with its charts, loaded by headless Chromium, text a reader can read
    (no progress, warning or path of this machine), and the figures the README embeds."""
    # Under pytest a kernel would not capture its descriptor 2 whatever it is told (ipykernel
    # looks for this variable): without it, the kernel runs as under make report.
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    main([name, "--quick", "--reports", str(tmp_path)])
    html = (tmp_path / f"{name}.html").read_text()
    assert_clean_report(html, tmp_path, Path(REPO))  # the page's source, scripts and all
    # Each chart is in the report itself, not only in reports/figures/.
    figures = {p.stem for p in (tmp_path / "figures").glob(f"{name}_*.png")}
    assert html.count('src="data:image/png') >= len(figures) > 0, name
    images, text = rendered(tmp_path / f"{name}.html")
    assert images and all(complete and width > 0 for complete, width in images), images
    assert_clean_report(text, tmp_path, Path(REPO))
    assert "import " not in text  # the code stays in the notebook
    # It opens with how it was made (commit, date, machine, sizes, the parameters as run) and
    # is titled by its experiment, not "Notebook".
    made = text.lstrip().splitlines()[0]
    assert made.startswith("How this report was made: commit "), text[:400]
    assert " UTC; " in made and " cores" in made and "load average" in made, made
    assert "quick (--quick) sizes; parameters as run: " in made, made
    assert all(f"{key}=" in made for key in QUICK[name]) and "figures_dir" not in made, made
    assert f"<title>{html_lib.escape(EXPERIMENTS[name], quote=False)}</title>" in html
    if name == "lb_a1":  # the intro states this run's sizes, not only the assignment's 10 000
        assert "This run: 300 requests" in text
    embedded = {f for f in README_FIGURES if f.startswith(f"{name}_")}
    assert embedded <= figures, f"the README embeds figures {name} does not make: {embedded - figures}"
    # The findings the docs link to: this run's charts and its computed observations.
    found = (tmp_path / "findings" / f"{name}.md").read_text()
    # under its title, the report's own line (the same, in Markdown)
    assert re.sub(r"[*`]", "", found.splitlines()[2]) == made, found[:800]
    linked = set(re.findall(r"\(\.\./figures/([\w-]+)\.png\)", found))
    assert linked == figures
    assert_clean_report(found, tmp_path, Path(REPO))


def test_findings_hold_the_observations_and_what_follows_them_only():
    from dslab.lab.report import observations

    def markdown(text):
        return {"output_type": "display_data", "data": {"text/markdown": text}}

    notebook = argparse.Namespace(cells=[
        {"cell_type": "code", "outputs": [markdown("Machine: 2 cores")]},
        {"cell_type": "code", "outputs": [{"output_type": "stream", "text": "x"}]},
        {"cell_type": "code", "outputs": [markdown("**Observations.** It grew 2x."),
                                          markdown("**Capped**: 300 requests/s.")]},
    ])
    assert observations(notebook) == "**Observations.** It grew 2x.\n\n**Capped**: 300 requests/s."
    assert observations(argparse.Namespace(cells=notebook.cells[:2])) == ""


def test_the_report_check_finds_what_it_looks_for():
    """The check above, on text that has each kind of machinery in it."""
    clean = "A-1. Observations. 300 of 300 requests succeeded."
    assert_clean_report(clean)
    for dirt in ("GET /home:  42%|####", "12.5 it/s", "TqdmWarning: IProgress not found",
                 "seed: run 1/5 (N = 2): 2,025 requests/s; 6 s so far, ~25 s left",
                 "2026-12-02 06:30:11,554 WARNING dslab.keeper.keeper: Server0 evicted",
                 "Traceback (most recent call last)", "saved to /tmp/x/figures",
                 "[IPKernelApp] WARNING | Kernel"):
        with pytest.raises(AssertionError):
            assert_clean_report(clean + " " + dirt)
    with pytest.raises(AssertionError):
        assert_clean_report("A-1 with no findings")
    with pytest.raises(AssertionError):
        assert_clean_report(clean + " in /srv/lab", Path("/srv/lab"))


def test_every_figure_the_readme_embeds_comes_from_an_experiment():
    assert README_FIGURES
    assert all(any(f.startswith(f"{n}_") for n in EXPERIMENTS) for f in README_FIGURES)


def test_unknown_experiment_is_refused():
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["nope"])


def test_db_speed_counts_every_row_and_read_and_where_the_cpu_went():
    from dslab.db.seed import seed_init
    from dslab.lab import db

    runs = db.speed(seed_init(), n_writes=400, n_reads=50, n_hot_reads=30, batch=10, label="t")
    table = db.speed_table(runs.requests).set_index("kind")
    configured = runs.configured["t"]
    assert configured["N"] == 6 and len(configured["shards"]) == 4
    requests = runs.requests
    assert requests[requests.kind == "write"]["items"].sum() == 400
    assert (requests.status == 200).all() and (requests.world == "uncapped").all()
    assert (requests.kind.value_counts()[["read", "hot read"]] == [50, 30]).all()
    assert (table.per_s > 0).all() and (table.failed == 0).all()
    # The CPU of every server (with its engine) of the stack, by name, beside the others'.
    for kind, usage in runs.cpu.groupby("kind"):
        for role in ("server", "engine"):
            assert set(usage[usage.role == role].part) == set(configured["servers"]), kind
        assert {"balancer", "client", "metadata engine"} <= set(usage.role)
    # CPU time is counted in 10 ms ticks: the short read phases may show none of a part.
    cpu = db.cpu_table(runs.cpu).set_index("kind")
    assert cpu.servers.sum() > 0 and cpu.balancer.sum() > 0
    assert cpu.loc["write", "metadata engine"] > 0  # valid_idx is written with every batch


@needs_cgroups
def test_db_speed_capped_keeps_every_server_within_its_quota():
    from dslab.db.seed import seed_init
    from dslab.lab import db

    # Reads come from the servers' row caches, thousands a second: 3 000 make a phase of about
    # a second, long enough for the quota's 100 ms periods and the 10 ms ticks to average out.
    runs = db.timed([("A-1", seed_init())], [db.World(0.1, 200, 3000, 3000)], repeats=1,
                    progress=False)
    assert (runs.requests.status == 200).all()
    assert set(runs.requests.world) == {"capped at 0.1 core per server"}
    cpu = db.cpu_table(runs.cpu)
    assert (cpu.cap == 0.1).all()
    # The quota is a ceiling the kernel enforces: no server, engine included, above it (with
    # CPU time counted in 10 ms ticks, and a quota per 100 ms period, over phases of 1-2 s).
    assert (cpu["busiest of cap"] <= 1.2).all() and (cpu["busiest of cap"] > 0.3).all()


def test_db_kill_and_refill_reports_equal_counts_on_every_replica():
    from dslab.db.seed import seed_init
    from dslab.lab import db

    with db.db_stack(seed_init()) as stack:
        result = db.kill_and_refill(stack, "Server3", n_rows=300)
    before, after = result["before"], result["after"]
    assert result["replacement_shards"] == result["victim_shards"] == ["sh1", "sh3"]
    assert before.rows.sum() == after.rows.sum() == 3 * 300
    for shard in ("sh1", "sh3"):
        held = after[after.shard == shard]
        assert result["replacement"] in set(held.server) and held.rows.nunique() == 1


def test_the_lab_runs_the_default_plane_where_it_routes_the_configuration():
    """A configuration the native plane routes runs on it, as the default does; one it cannot
    route, or one pinned for a comparison, on the Python plane, and the report line says why."""
    from dslab.balancer import native

    ring = lb.HashConfig("seed")
    maglev = lb.HashConfig("m", "blake2b", algorithm="maglev")
    bounded = lb.HashConfig("seed, bounded", balance_factor=1.25)
    pinned = lb.HashConfig("pinned", plane="python")
    if native.available():
        assert ring.plane_used() == ("native", None)
        assert "--plane" in ring.args(3) and ring.args(3)[ring.args(3).index("--plane") + 1] == "auto"
    assert maglev.plane_used()[0] == bounded.plane_used()[0] == pinned.plane_used()[0] == "python"
    note = lb.plane_note([maglev, bounded, pinned])
    assert "ring algorithm only" in note and "bounded loads" in note and "pinned" in note
    assert "*seed, bounded*" in note  # a name with a comma stays whole

"""The lab library against real stacks with small sizes, and every notebook run by papermill."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from dslab.lab import lb, random_rids
from dslab.lab.report import EXPERIMENTS, main
from dslab.ring.analysis import assign, loads


def test_live_distribution_is_exactly_what_the_ring_predicts():
    config = lb.HashConfig("blake2b", "blake2b")
    requests = lb.requests_per_server(400, 3, config, concurrency=16, seed=3)
    per_server = lb.summarize(requests)
    names = ["Server1", "Server2", "Server3"]
    predicted = loads(assign(config.ring(names), random_rids(400, 3)), names)
    assert dict(zip(per_server.server, per_server.requests)) == predicted
    assert (requests.status == 200).all() and len(requests) == 400


def test_balance_table_from_scaling():
    table = lb.balance_table(lb.scaling([2, 3], 300, lb.HashConfig("seed"), concurrency=16))
    assert list(table.N) == [2, 3]
    assert (table["mean"] == [150, 100]).all()
    assert (table.max_over_mean >= 1).all()


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


def rendered_images(html: Path) -> list[list]:
    """[complete, naturalWidth] of every image of ``html`` once headless Chromium loaded it: a
    copy of the page records them into the DOM on load, and Chromium dumps the DOM."""
    probe = ("<script>window.addEventListener('load', () => document.body.setAttribute("
             "'data-images', JSON.stringify(Array.from(document.images).map("
             "i => [i.complete, i.naturalWidth]))));</script></body>")
    page = html.with_suffix(".probe.html")
    page.write_text(html.read_text().replace("</body>", probe))
    done = subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'data-images="([^"]*)"', done.stdout)
    assert found, f"Chromium rendered no page: {done.stderr[-500:]}"
    return json.loads(html_lib.unescape(found.group(1)))


def test_every_notebook_runs_and_renders(tmp_path):
    """`make report` with small sizes: HTML per experiment with its charts, loaded by headless
    Chromium, and the figures the README embeds."""
    main(["--quick", "--reports", str(tmp_path)])
    for name in EXPERIMENTS:
        html = (tmp_path / f"{name}.html").read_text()
        assert "Observations." in html and "Traceback" not in html
        # Each chart is in the report itself, not only in reports/figures/.
        saved = len(list((tmp_path / "figures").glob(f"{name}_*.png")))
        assert html.count('src="data:image/png') >= saved > 0, name
    if shutil.which("chromium"):  # Debian's chromium; make tools installs it
        for name in EXPERIMENTS:
            images = rendered_images(tmp_path / f"{name}.html")
            assert images and all(complete and width > 0 for complete, width in images), \
                (name, images)
    # The intro states this run's sizes, not only the assignment's 10 000.
    assert "this run: <strong>300</strong> requests" in (tmp_path / "lb_a1.html").read_text()
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    embedded = set(__import__("re").findall(r"reports/figures/([\w-]+\.png)",
                                            (Path(REPO) / "README.md").read_text()))
    assert embedded <= figures, f"the README embeds figures no notebook makes: {embedded - figures}"


def test_unknown_experiment_is_refused():
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["nope"])


def test_db_speed_counts_every_row_and_read():
    from dslab.db.seed import seed_init
    from dslab.lab import db

    runs, configured = db.speed(seed_init(), n_writes=120, n_reads=50, batch=10, label="t",
                                progress=False)
    runs["repeat"] = 1
    table = db.speed_table(runs).set_index("kind")
    assert configured["N"] == 6 and len(configured["shards"]) == 4
    assert runs[runs.kind == "write"]["items"].sum() == 120 and (runs.status == 200).all()
    assert len(runs[runs.kind == "read"]) == 50
    assert (table.per_s > 0).all() and (table.failed == 0).all()


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

"""`make report` over a made-up notebook folder, with real papermill and nbconvert: an
experiment that raises is named in the summary at the end, the others still run and render,
and the exit status says one failed. Each report opens with how it was made and is titled by
its experiment."""

from __future__ import annotations

import html as html_lib
import re

import nbformat
import pytest

from dslab.lab.report import EXPERIMENTS, main


def notebook(body: str) -> nbformat.NotebookNode:
    made = nbformat.v4.new_notebook()
    made.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}
    made.cells = [
        nbformat.v4.new_markdown_cell("# A made-up experiment"),
        nbformat.v4.new_code_cell('n_requests = 10\nfigures_dir = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    return made


PASSES = ("from IPython.display import Markdown, display\n"
          "display(Markdown(f'**Observations.** {n_requests} requests, all served.'))")
RAISES = "raise ValueError('made to fail')"


def test_a_failed_experiment_is_named_and_the_others_still_render(tmp_path, capsys):
    notebooks, reports = tmp_path / "notebooks", tmp_path / "reports"
    notebooks.mkdir()
    for name, body in (("lb_a1", RAISES), ("lb_a2", PASSES)):
        nbformat.write(notebook(body), notebooks / f"{name}.ipynb")
    with pytest.raises(SystemExit) as stopped:  # the one after the failure runs all the same
        main(["lb_a1", "lb_a2", "--notebooks", str(notebooks), "--reports", str(reports)])
    assert stopped.value.code not in (0, None)
    assert "lb_a1" in str(stopped.value.code) and "lb_a2" not in str(stopped.value.code)
    out = capsys.readouterr().out
    table = out[out.index("experiment  seconds  result"):].splitlines()
    assert re.fullmatch(r"lb_a1 +\d+  FAILED: ValueError: made to fail", table[1]), table
    assert re.fullmatch(r"lb_a2 +\d+  ok", table[2]), table
    assert not (reports / "lb_a1.html").exists()
    for name in ("lb_a2",):
        page = (reports / f"{name}.html").read_text()
        assert f"<title>{html_lib.escape(EXPERIMENTS[name], quote=False)}</title>" in page
        # the first thing in the page's body is how it was made; then the notebook's title
        made = page.index("How this report was made:")
        assert made < page.index('<h1 id="A-made-up-experiment"')
        line = html_lib.unescape(re.sub(r"<[^>]+>", "", page[made:page.index("\n", made)]))
        assert "not a git checkout" in line and "full sizes" in line
        assert "n_requests=10`" not in line and "n_requests=10" in line  # rendered as code
        assert "figures_dir" not in line and "load average" in line
        found = (reports / "findings" / f"{name}.md").read_text().splitlines()
        assert found[0] == f"# {EXPERIMENTS[name]}"
        assert found[2].startswith("*How this report was made:* not a git checkout;")
        assert "`n_requests=10`" in found[2]

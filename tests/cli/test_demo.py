"""`trajx demo` end to end, shortened (one seed, T = 3): server, upload, jobs, download, table."""

import io

from rich.console import Console

from trajx.demo.run import run_demo


def test_demo_runs_through_the_service_and_prints_its_table(tmp_path):
    out = io.StringIO()

    rows = run_demo(seeds=(1,), steps=3, data_dir=tmp_path, console=Console(file=out, width=120))

    assert [row.model for row in rows] == ["target init (untrained)", "Naive transfer", "FGMT transfer",
                                           "trained source"]
    assert all(0.0 <= acc <= 1.0 for row in rows for acc in row.accuracies)
    assert rows[-1].mean() > 0.8  # the source really trained
    assert all(row.seconds is not None and row.seconds > 0 for row in rows[1:])
    assert "FGMT transfer" in out.getvalue()
    assert (tmp_path / "results" / "fgmt" / "target-0" / "last.safetensors").exists()

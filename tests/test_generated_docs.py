"""docs/reference.md is generated from Settings and the job spec models: it must not drift."""

import runpy
from pathlib import Path

GENERATOR = Path(__file__).resolve().parents[1] / "docs" / "generate.py"


def test_reference_page_matches_the_code():
    generator = runpy.run_path(str(GENERATOR))
    assert generator["PAGE"].read_text() == generator["render"](), \
        "docs/reference.md is out of date: run .venv/bin/python docs/generate.py"


def test_every_setting_and_every_kind_is_documented():
    from app.core.settings import Settings
    from trajx.job_spec import JOB_KINDS

    page = runpy.run_path(str(GENERATOR))["render"]()
    for name, field in Settings.model_fields.items():
        assert f"`TRAJX_{name.upper()}`" in page
        assert field.description, f"Settings.{name} has no description for docs/reference.md"
    for kind in JOB_KINDS:
        assert f"### `{kind}`" in page

"""The README and config.yaml document every config key (they are generated from the schema)."""

from pathlib import Path

from monitor.config import describe

REPO = Path(__file__).resolve().parents[1]


def test_readme_documents_every_config_key_and_the_two_setup_commands():
    readme = (REPO / "README.md").read_text()
    for key, _, _ in describe():
        assert f"`{key}`" in readme, f"README does not document {key}: run python scripts/config_table.py"
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()

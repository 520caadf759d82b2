"""The duplicate window defaults to 3 s (issue 3), wherever a reader's rules come from: the pipeline's own
ReaderRules, a [reader] table that does not set it, and the rules the service derives from the config."""

from __future__ import annotations

import tomllib
from pathlib import Path

from gateway import config
from gateway.pipeline import ReaderRules
from gateway.service import reader_rules

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.example.toml"


def test_pipeline_rules_default_to_a_3_s_window() -> None:
    assert ReaderRules().dedup_window_s == 3.0
    assert ReaderRules().dedup_mode == "first"


def test_a_reader_table_without_the_key_gets_3_s(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[[reader]]\nname = "finish"\nurl = "tcp-listen://127.0.0.1:3097"\nformat = "mylaps"\n')
    settings = config.load(path, environ={})
    (reader,) = settings.readers
    assert reader.dedup_window_s == 3.0
    assert config.ReaderSettings(name="x", url="tcp://127.0.0.1:1").dedup_window_s == 3.0
    # and the pipeline is handed that window for the reader
    assert reader_rules(settings)["finish"].dedup_window_s == 3.0


def test_the_example_config_documents_the_default() -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert example["reader"][0]["dedup_window_s"] == 3.0

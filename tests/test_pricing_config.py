"""The pricing service's settings: strict like the device's config (device/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pricing.config import load_service_config
from pricing.errors import ServiceConfigError


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('port = "1883"', "port"),  # was read as 1883
        ("stats_interval_s = inf", "stats_interval_s"),  # was accepted: stats never sent
        ("k = 20.0", "k"),  # was read as 20
        ('min_neighbours = "3"', "min_neighbours"),
        ("metrics_port = true", "metrics_port"),
    ],
)
def test_a_pricing_setting_of_the_wrong_type_or_not_finite_is_refused(
    tmp_path: Path, line: str, key: str
) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text(line + "\n")
    with pytest.raises(ServiceConfigError, match=rf"config file {path}: {key}: "):
        load_service_config(path, {})


def test_a_pricing_config_with_paths_as_text_and_whole_numbers_for_floats_loads(tmp_path: Path) -> None:
    """Strict, but a path is a TOML string and a float may be written as a whole number; the command
    line's --catalog gives a list of strings."""
    path = tmp_path / "pricing.toml"
    path.write_text(
        'catalog = ["a.sqlite", "b.sqlite"]\nca_file = "/etc/pricing/ca.crt"\nstats_interval_s = 5\n'
        "min_similarity = 1\nport = 8883\n"
    )
    config = load_service_config(path, {})
    assert config.catalog == (Path("a.sqlite"), Path("b.sqlite")) and config.ca_file == Path(
        "/etc/pricing/ca.crt"
    )
    assert config.stats_interval_s == 5.0 and config.min_similarity == 1.0 and config.port == 8883
    flags = load_service_config(path, {"catalog": ["c.sqlite"], "port": 1883, "min_similarity": 0.7})
    assert flags.catalog == (Path("c.sqlite"),) and flags.port == 1883

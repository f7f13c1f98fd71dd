"""oceanid.driver: NVIDIA driver releases compared as NVIDIA numbers them (issue 23)."""

import pytest

from oceanid import driver
from oceanid.settings import SettingsError, from_data


@pytest.mark.parametrize(
    ("version", "minimum", "older"),
    [
        ("580.159.04", "575", False),
        ("575.51.03", "575", False),
        ("570.172.08", "575", True),
        ("535.86.10", "535.86", False),
        ("535.54.03", "535.86", True),
        ("1000.1", "575", False),  # numbers, not strings: "1000" < "575" as text
        ("", "575", True),
    ],
)
def test_older(version, minimum, older):
    assert driver.older(version, minimum) is older


def test_the_pinned_image_has_its_minimum_next_to_it(data):
    settings = from_data(data)
    assert settings.triton_image.endswith(":25.08-py3") and settings.triton_min_driver == "575"


def test_a_malformed_minimum_is_refused_in_words(data):
    data["triton_min_driver"] = "R575"
    with pytest.raises(SettingsError) as raised:
        from_data(data)
    (line,) = raised.value.problems
    assert line.startswith("triton_min_driver: must be an NVIDIA driver release such as 575")
    assert "^" not in line

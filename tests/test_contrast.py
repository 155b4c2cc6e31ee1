"""Status colours meet WCAG AA (4.5:1 for text) in the light and the dark scheme."""

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[1] / "static" / "css" / "app.css").read_text()
# Text colour variable on background variable, as the stylesheet pairs them.
PAIRS = [
    ("text", "bg"), ("text", "surface"), ("muted", "surface"), ("muted", "bg"),
    ("ok", "ok-bg"), ("bad", "bad-bg"), ("pending", "pending-bg"),
    ("ok", "surface"), ("bad", "surface"), ("pending", "surface"), ("accent", "surface"),
    ("accent-text", "accent"), ("surface", "bad"),
]


def _scheme(block: str) -> dict[str, str]:
    return dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})\s*;", block))


def _schemes() -> dict[str, dict[str, str]]:
    light = _scheme(CSS[CSS.index(":root {") : CSS.index("}", CSS.index(":root {"))])
    dark_start = CSS.index("@media (prefers-color-scheme: dark)")
    dark_root = CSS.index(":root {", dark_start)
    dark = {**light, **_scheme(CSS[dark_root : CSS.index("}", dark_root)])}
    return {"light": light, "dark": dark}


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted([_luminance(a), _luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("fg", "bg"), PAIRS)
def test_text_colours_meet_wcag_aa(scheme, fg, bg):
    colours = _schemes()[scheme]
    ratio = contrast(colours[fg], colours[bg])
    assert ratio >= 4.5, f"{scheme}: --{fg} on --{bg} is {ratio:.2f}:1"


def test_the_checker_itself():
    assert round(contrast("#000000", "#ffffff"), 1) == 21.0
    assert contrast("#777777", "#ffffff") < 4.5

"""Server-rendered pages: Jinja2 templates shipped in the package (templates/), and QR codes
drawn as inline SVG by segno. Nothing a page shows is fetched from elsewhere."""
from __future__ import annotations

import functools
from typing import Any

from markupsafe import Markup


@functools.cache
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("kaccy_bitcoin.adapters.http_api", "templates"),
                              autoescape=jinja2.select_autoescape(default=True), trim_blocks=True,
                              lstrip_blocks=True)


def render(template: str, **values: Any) -> str:
    return _environment().get_template(template).render(**values)


def qr_svg(text: str, title: str, *, width_px: int = 360) -> Markup:
    """`text` as a QR code in an inline SVG about `width_px` wide (whole pixels per module, so a
    camera or a screenshot reads it sharp), marked as an image whose name is `title`."""
    import segno

    code = segno.make(text, error="m", micro=False)
    modules = code.symbol_size(scale=1, border=4)[0]
    scale = max(2, width_px // modules)
    svg = code.svg_inline(scale=scale, border=4, dark="#000", light="#fff", title=title, svgclass="qr",
                          lineclass=None, omitsize=False)
    return Markup(svg.replace("<svg ", '<svg role="img" focusable="false" ', 1))

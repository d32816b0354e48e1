"""Pictures for people: image grids with captions under each cell."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont


def caption_grid(
    images: list[Image.Image],
    captions: list[str],
    columns: int = 4,
    cell: int = 192,
    lines: int = 4,
    marked: set[int] | frozenset[int] = frozenset(),
) -> Image.Image:
    """Images scaled (nearest, so pixels stay crisp) to `cell` px, each with its caption below; the cells in
    `marked` (a verifier's pick) get a green frame."""
    font = ImageFont.load_default(size=12)
    line_height = 15
    rows = (len(images) + columns - 1) // columns
    widest = max(image.width / image.height for image in images)
    cell_w = int(cell * widest)
    pad = 6
    text_h = lines * line_height + pad
    grid = Image.new("RGB", (columns * (cell_w + pad) + pad, rows * (cell + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    chars = max(12, cell_w // 7)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x = pad + (i % columns) * (cell_w + pad)
        y = pad + (i // columns) * (cell + text_h + pad)
        scaled = image.resize((round(cell * image.width / image.height), cell), Image.Resampling.NEAREST)
        grid.paste(scaled, (x, y))
        if i in marked:
            draw.rectangle((x - 3, y - 3, x + scaled.width + 2, y + scaled.height + 2), outline=(0, 170, 60), width=3)
        wrapped = textwrap.wrap(caption, chars)[:lines]
        for k, text in enumerate(wrapped):
            draw.text((x, y + cell + 3 + k * line_height), text, fill="black", font=font)
    return grid

#!/usr/bin/env python3
"""A contact sheet of renders: a grid of images, each with lines of text under it.

    python3 tools/contact_sheet.py OUT.png --cols 4 --cell 256 IMAGE=LABEL [IMAGE=LABEL ...]

LABEL may hold several lines separated by "|". Each image is scaled to fit a CELL x CELL box
(aspect ratio kept, centred); each row is as tall as its tallest picture. Needs Pillow (pip install
pillow); it builds documentation only, nst itself never runs it.
"""

import argparse

from PIL import Image, ImageDraw, ImageFont


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("entries", nargs="+", help="IMAGE=LABEL")
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--cell", type=int, default=256)
    parser.add_argument("--font-size", type=int, default=13)
    args = parser.parse_args()

    font = ImageFont.load_default(size=args.font_size)
    entries = [e.split("=", 1) if "=" in e else (e, "") for e in args.entries]
    images = []
    for path, _ in entries:
        image = Image.open(path).convert("RGB")
        scale = args.cell / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        images.append(image.resize(size, Image.LANCZOS))
    lines = max(len(label.split("|")) for _, label in entries)
    line_height = args.font_size + 4
    pad = 6
    cell_w = args.cell + 2 * pad
    rows = [range(r, min(r + args.cols, len(entries))) for r in range(0, len(entries), args.cols)]
    # Each row is as tall as its tallest picture, plus the lines of text.
    heights = [max(images[k].height for k in row) + 2 * pad + lines * line_height for row in rows]
    sheet = Image.new("RGB", (args.cols * cell_w, sum(heights)), "white")
    draw = ImageDraw.Draw(sheet)
    y0 = 0
    for row, height in zip(rows, heights):
        tallest = max(images[k].height for k in row)
        for k in row:
            x0 = (k % args.cols) * cell_w
            image = images[k]
            sheet.paste(image, (x0 + pad + (args.cell - image.width) // 2, y0 + pad + (tallest - image.height) // 2))
            for i, line in enumerate(entries[k][1].split("|")):
                draw.text((x0 + pad, y0 + pad + tallest + 2 + i * line_height), line, fill="black", font=font)
        y0 += height
    sheet.save(args.output, optimize=True)


if __name__ == "__main__":
    main()

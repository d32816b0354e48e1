"""Plan-guided positions: what each image position is told about the planned box it lies in.

A checkpoint whose tokenizer holds layout tokens (`<lay_dx_k>`, `<lay_dy_k>`, `<lay_w_k>`, `<lay_h_k>`,
never written in text) draws with them: for an image patch that overlaps a planned box, the rows of
    dx, dy   the patch's top-left pixel minus the box's (-(P-1) .. S-1: the patch may start left of the box)
    w, h     the box's width and height in pixels (1 .. S)
and the rows of the box's phrase words ("red", "star") are added to the input that predicts that patch
(`thinkdraw.engine.sampling.Layout`). A patch that overlaps two boxes gets both. The plan's text is the
only source: a box is read from the plan tokens the model wrote (or was given), so teacher forcing sees
exactly what sampling saw, and entries that do not parse guide nothing.

The idea is GoT's spatial guidance (its diffusion decoder is told where each planned object goes), put
into the embedding rows of a standard Janus checkpoint as the world's 2-D position rows are. Janus-Pro
checkpoints have no layout tokens and draw as before.
"""

from __future__ import annotations

import torch

from thinkdraw.engine.sampling import Layout
from thinkdraw.plan import GRID, readable_entries

KINDS = ("dx", "dy", "w", "h")


def layout_token(kind: str, k: int) -> str:
    return f"<lay_{kind}_{k}>"


def layout_token_names(image_size: int, patch: int) -> list[str]:
    """All layout tokens of a model drawing image_size pixels in patch x patch tokens, kind by kind."""
    counts = {"dx": image_size + patch - 1, "dy": image_size + patch - 1, "w": image_size, "h": image_size}
    return [layout_token(kind, k) for kind in KINDS for k in range(counts[kind])]


class LayoutBuilder:
    """Builds the Layout of plans (token ids per row) for a tokenizer with layout tokens."""

    def __init__(self, tokenizer, image_size: int, grid: int, decode):
        self.tokenizer, self.size, self.grid, self.decode = tokenizer, image_size, grid, decode
        self.patch = image_size // grid
        vocab = tokenizer.get_vocab()
        self.first = {kind: vocab[layout_token(kind, 0)] for kind in KINDS}

    @classmethod
    def of(cls, tokenizer, image_size: int, grid: int, decode) -> LayoutBuilder | None:
        names = layout_token_names(image_size, image_size // grid)
        vocab = tokenizer.get_vocab()
        if layout_token("dx", 0) not in vocab:
            return None
        ids = [vocab.get(n) for n in names]
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise ValueError(f"layout tokens must be {len(names)} consecutive tokens for {image_size} px images")
        return cls(tokenizer, image_size, grid, decode)

    @property
    def token_range(self) -> range:
        return range(self.first["dx"], self.first["dx"] + len(layout_token_names(self.size, self.patch)))

    def rows(self, plan_ids: list[int]) -> list[list[int]]:
        """Per image position (raster order), the ids of the rows to add."""
        per_position: list[list[int]] = [[] for _ in range(self.grid * self.grid)]
        unk = self.tokenizer.unk_token_id
        for obj in readable_entries(self.decode(plan_ids)) if plan_ids else []:
            x0, y0, x1, y1 = (round(v * self.size / GRID) for v in obj.box)
            w, h = min(max(x1 - x0, 1), self.size), min(max(y1 - y0, 1), self.size)
            words = [i for i in self.tokenizer(obj.phrase, add_special_tokens=False)["input_ids"] if i != unk]
            P = self.patch  # patches overlapping the box: from the one holding its first pixel to its last
            for r in range(y0 // P, min(self.grid, -(-(y0 + h) // P))):
                for c in range(x0 // P, min(self.grid, -(-(x0 + w) // P))):
                    dx, dy = c * P - x0, r * P - y0
                    per_position[r * self.grid + c] += [
                        self.first["dx"] + dx + P - 1,
                        self.first["dy"] + dy + P - 1,
                        self.first["w"] + w - 1,
                        self.first["h"] + h - 1,
                        *words,
                    ]
        return per_position

    def __call__(self, plans: list[list[int]], device: torch.device | str = "cpu") -> Layout:
        rows = [self.rows(p) for p in plans]
        M = max(1, max(len(ids) for row in rows for ids in row))
        ids = torch.zeros(len(plans), self.grid * self.grid, M, dtype=torch.long)
        mask = torch.zeros(len(plans), self.grid * self.grid, M)
        for b, row in enumerate(rows):
            for k, position in enumerate(row):
                ids[b, k, : len(position)] = torch.tensor(position, dtype=torch.long)
                mask[b, k, : len(position)] = 1.0
        return Layout(ids.to(device), mask.to(device))

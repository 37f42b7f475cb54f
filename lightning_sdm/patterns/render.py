"""Text renderings of pattern plans for people: the step grid, the plan, the visibility."""

from __future__ import annotations

import itertools
from typing import Any

from lightning_sdm.patterns.layout import PatternLayout
from lightning_sdm.patterns.pattern import Pattern, make_pattern

MATRIX_LIMIT = 160
# The step grid and the plan grow with T: past these the first ones are shown and the rest
# counted (the summary line holds the totals), not ten megabytes of text for T = 100000.
GRID_LIMIT = 64  # timesteps (columns of the step grid)
PLAN_LIMIT = 100  # decoding steps (rows of the plan)


def summarize(pattern: Pattern, layout: PatternLayout) -> dict[str, Any]:
    return {
        "pattern": pattern.name,
        "schedule": pattern.schedule.name,
        "representation": str(pattern.representation),
        "T": layout.num_timesteps,
        "C": layout.num_levels,
        "decoding_steps": layout.num_decoding_steps,
        "positions": layout.num_positions,
        "max_cache_keys": layout.max_live_keys,
    }


def table_rows(num_timesteps: int, num_levels: int) -> list[dict[str, Any]]:
    """Every pattern of patterns.md plus stack-delay k = 1..4, measured on its plan."""
    patterns = [make_pattern(name) for name in ("parallel", "delay", "flat", "stack")]
    patterns += [make_pattern("stack_delay", k=k) for k in (1, 2, 3, 4)]
    return [summarize(p, p.layout(num_timesteps, num_levels)) for p in patterns]


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "pattern",
        "schedule",
        "representation",
        "decoding_steps",
        "positions",
        "max_cache_keys",
    ]
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [str(row[h]) for h in headers]
        lines.append(
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return "\n".join(lines)


def render(pattern: Pattern, layout: PatternLayout, show_matrix: bool = True) -> str:
    s = summarize(pattern, layout)
    out = [
        f"{pattern.describe()}  T={s['T']} C={s['C']}",
        f"decoding steps: {s['decoding_steps']}   positions: {s['positions']}   "
        f"max live cache keys: {s['max_cache_keys']}",
        "",
        "Step G(i, t) at which each token c[i, t] is sampled:",
    ]
    shown_t = min(layout.num_timesteps, GRID_LIMIT)
    steps = layout.token_steps[:, :shown_t]
    width = max(3, len(str(int(steps.max()))) + 1)
    out.append("  i\\t " + "".join(str(t).rjust(width) for t in range(shown_t)))
    for level in range(layout.num_levels):
        out.append(f"  {level:>3} " + "".join(str(int(v)).rjust(width) for v in steps[level]))
    if shown_t < layout.num_timesteps:
        out.append(f"  ... timesteps {shown_t} to {layout.num_timesteps - 1} not shown")
    out += ["", "Decoding plan (position labels: (t, j) for stacks, sN for token steps):"]
    rows = [("step", "computes", "samples", "evicts", "live")]
    for block in itertools.islice(layout.decoding_steps(), PLAN_LIMIT):
        rows.append(
            (
                str(block.step),
                " ".join(layout.position_label(p) for p in block.positions),
                " ".join(f"c[{i},{t}]" for i, t in block.sampled) or "-",
                " ".join(layout.position_label(p) for p in block.evicted) or "-",
                str(block.live_keys),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    for row in rows:
        out.append(
            "  "
            + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if layout.num_decoding_steps > PLAN_LIMIT:
        hidden = layout.num_decoding_steps - PLAN_LIMIT
        out.append(f"  ... {hidden} more steps not shown")
    if show_matrix:
        out += ["", *_visibility(layout)]
    return "\n".join(out)


def _visibility(layout: PatternLayout) -> list[str]:
    if layout.num_positions > MATRIX_LIMIT:
        return [f"(visibility matrix omitted: {layout.num_positions} positions > {MATRIX_LIMIT})"]
    labels = [layout.position_label(p) for p in range(layout.num_positions)]
    pad = max(len(label) for label in labels)
    lines = ["What each position sees (row = query, # = visible key, columns in row order):"]
    mask = layout.attention_mask
    for query, label in enumerate(labels):
        row = "".join("#" if mask[query, key] else "." for key in range(layout.num_positions))
        lines.append(f"  {label.rjust(pad)} @{int(layout.step[query]):>3} {row}")
    return lines

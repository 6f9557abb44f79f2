#!/usr/bin/env python3
"""Derive Tally's compact price table from LiteLLM's model price catalog.

Usage (from the repository root):

    python3 scripts/derive_price_catalog.py \
        ../shared/data/model_prices_and_context_window.json > src/pricing/catalog.tsv

The input is LiteLLM's model_prices_and_context_window.json (MIT licence,
copyright the LiteLLM authors / Berri AI; see NOTICE). The output is a
tab-separated table that src/pricing/catalog.rs embeds and parses:

    # comment lines (origin, licence, source checksum)
    model  provider  mode  input  output  cache_read  cache_write  reasoning

Prices are USD per token, written with repr() so every value survives the
round trip to f64 exactly; a cell is empty when the catalog does not give that
price. The `sample_spec` entry and entries with neither an input nor an output
per-token price are skipped. Rows are sorted by model name. Anything the
Rust parser could not read (tabs or newlines in a name, non-numeric or negative
prices) stops the script with an error rather than producing a bad table.

Python 3.11, standard library only.
"""

import hashlib
import json
import math
import sys

# Output column -> LiteLLM field.
PRICE_FIELDS = [
    ("input", "input_cost_per_token"),
    ("output", "output_cost_per_token"),
    ("cache_read", "cache_read_input_token_cost"),
    ("cache_write", "cache_creation_input_token_cost"),
    ("reasoning", "output_cost_per_reasoning_token"),
]
COLUMNS = ["model", "provider", "mode"] + [column for column, _ in PRICE_FIELDS]
SKIPPED_KEYS = {"sample_spec"}


class CatalogError(Exception):
    """The source catalog holds something the price table cannot represent."""


def text_cell(model: str, field: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CatalogError(f"{model!r}: {field} is {value!r}, expected a string")
    if any(ch in value for ch in "\t\r\n"):
        raise CatalogError(f"{model!r}: {field} {value!r} contains a tab or newline")
    return value


def price_cell(model: str, field: str, value: object) -> str:
    if value is None:
        return ""
    # bool is a subclass of int; a boolean price is a catalog error, not 0 or 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CatalogError(f"{model!r}: {field} is {value!r}, expected a number")
    price = float(value)
    if not math.isfinite(price) or price < 0:
        raise CatalogError(f"{model!r}: {field} is {value!r}, expected a finite number >= 0")
    return repr(price)


def derive_rows(catalog: dict) -> list[list[str]]:
    rows = []
    for model, entry in catalog.items():
        if model in SKIPPED_KEYS or not isinstance(entry, dict):
            continue
        if entry.get("input_cost_per_token") is None and entry.get("output_cost_per_token") is None:
            continue
        text_cell(model, "model name", model)
        if model == "" or model.startswith("#"):
            raise CatalogError(f"model name {model!r} cannot be written as a table row")
        row = [
            model,
            text_cell(model, "litellm_provider", entry.get("litellm_provider")),
            text_cell(model, "mode", entry.get("mode")),
        ]
        row += [price_cell(model, field, entry.get(field)) for _, field in PRICE_FIELDS]
        if row[1] == "":
            raise CatalogError(f"{model!r}: litellm_provider is missing")
        rows.append(row)
    rows.sort(key=lambda row: row[0])
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} model_prices_and_context_window.json > catalog.tsv", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as source:
        raw = source.read()
    try:
        rows = derive_rows(json.loads(raw))
    except CatalogError as error:
        print(f"{argv[0]}: {error}", file=sys.stderr)
        return 1
    out = sys.stdout
    out.write(
        "# Derived from LiteLLM's model_prices_and_context_window.json "
        "(MIT licence, copyright the LiteLLM authors / Berri AI; see NOTICE) "
        "by scripts/derive_price_catalog.py. USD per token; empty cell = not priced.\n"
    )
    out.write(f"# source sha256 {hashlib.sha256(raw).hexdigest()}, {len(rows)} rows\n")
    out.write("\t".join(COLUMNS) + "\n")
    for row in rows:
        out.write("\t".join(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

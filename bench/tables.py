"""Plain-text tables for the benchmarks that print rows of strings."""


def table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print `title`, then `header` and `rows` in left-aligned columns."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)))

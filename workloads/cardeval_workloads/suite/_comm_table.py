"""Seed 003's communication table: DeepSpeed's comm bench on the A100 (8 and 32 cards).

Each row is scored as a ratio to the A100 only at its own card count and size;
the weighted score covers the rows measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from cardeval_workloads.harness.builder import EnvelopeBuilder


@dataclass(frozen=True)
class TableRow:
    op: str            # our operation (pt2pt → send_recv)
    name: str          # the table's name
    cards: int
    weight: float      # percent
    elements: int      # float32 elements per rank, as in the table's "Size" column
    a100_ms: float
    a100_gbps: float

    @property
    def size_bytes(self) -> int:
        """The table's size: each rank's buffer (for all_gather, each rank's input)."""
        return self.elements * 4

    def our_nbytes(self) -> int:
        """The same run in our ``S`` convention (all_gather: the gathered output)."""
        return self.size_bytes * self.cards if self.op == "all_gather" else self.size_bytes

    def deepspeed_gbps(self, seconds: float) -> float:
        """Throughput as the table computes it (DeepSpeed's comms benchmark, Gbit/s)."""
        size = self.size_bytes
        if self.op == "all_reduce":
            size *= 2
        elif self.op == "all_gather":
            size *= self.cards
        return size / seconds * 8 / 1e9


A100_TABLE = (
    TableRow("all_reduce", "all_reduce", 8, 25.0, 4259924984, 126.905, 2148.338),
    TableRow("all_reduce", "all_reduce", 32, 25.0, 4259924984, 373.565, 729.815),
    TableRow("all_gather", "all_gather", 8, 6.3, 134217728, 16.915, 2031.292),
    TableRow("all_gather", "all_gather", 32, 6.3, 33554432, 47.117, 729.249),
    TableRow("all_to_all", "all_to_all", 8, 6.3, 1073741824, 17.54, 1958.977),
    TableRow("all_to_all", "all_to_all", 32, 6.3, 1073741824, 314.13, 109.38),
    TableRow("broadcast", "broadcast", 8, 6.3, 4259924984, 72.62, 1877.133),
    TableRow("broadcast", "broadcast", 32, 6.3, 4259924984, 196.439, 693.939),
    TableRow("send_recv", "pt2pt", 8, 6.3, 4259924984, 66.02, 2064.778),
    TableRow("send_recv", "pt2pt", 32, 6.3, 4259924984, 762.939, 178.673),
)


#: The names :func:`report_table` emits under its prefix.
TABLE_METRICS = ("a100_ratio", "a100_duration_ms", "a100_gbps", "a100_weighted_score")


def table_rows_for(n: int) -> list[TableRow]:
    return [row for row in A100_TABLE if row.cards == n]


def report_table(out: EnvelopeBuilder, n: int, measured: dict[tuple[str, int], float], why_not: str,
                 prefix: str = "collective") -> None:
    """Seed 003's rows as ratios to the A100 (A100 duration / ours = our throughput / the A100's).

    ``measured``: (op, our S in bytes) → median seconds of the runs at the table's exact sizes.
    A row is scored only at its own card count and size; the others say why not.
    """
    scored: list[tuple[TableRow, float]] = []
    for row in A100_TABLE:
        labels = {"op": row.name, "cards": str(row.cards), "size_bytes": str(row.size_bytes),
                  "weight_pct": f"{row.weight:g}", "detail": "true"}
        seconds = measured.get((row.op, row.our_nbytes())) if row.cards == n else None
        if seconds is None:
            reason = (f"the row is {row.cards} cards; this run has {n} ranks" if row.cards != n else why_not)
            out.metric(f"{prefix}.a100_ratio", None, "ratio", labels=labels, unavailable=reason[:500])
            continue
        ratio = row.a100_ms / (seconds * 1e3)
        scored.append((row, ratio))
        out.metric(f"{prefix}.a100_ratio", ratio, "ratio", labels=labels)
        out.metric(f"{prefix}.a100_duration_ms", seconds * 1e3, "ms", labels={**labels, "a100_ms": f"{row.a100_ms:g}"})
        out.metric(f"{prefix}.a100_gbps", row.deepspeed_gbps(seconds), "Gbit/s",
                   labels={**labels, "a100_gbps": f"{row.a100_gbps:g}", "convention": "DeepSpeed comms bench"})
    if scored:
        total = sum(r.weight for r, _ in scored)
        score = sum(r.weight * v for r, v in scored) / total
        out.metric(f"{prefix}.a100_weighted_score", score, "ratio",
                   labels={"rows": ",".join(f"{r.name}@{r.cards}" for r, _ in scored),
                           "weights_pct": f"{total:g} of {sum(r.weight for r in A100_TABLE):g}"})
    else:
        out.metric(f"{prefix}.a100_weighted_score", None, "ratio",
                   unavailable=f"no seed-003 row measured ({n} ranks); see {prefix}.a100_ratio"[:120])

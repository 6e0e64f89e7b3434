"""The results table, the issue's target ratios with PASS/FAIL, and the JSON and Markdown written to disk."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

MIB = 1024 * 1024
RSS_LIMIT_MIB = 80.0
OTHER_LOAD_WARN_PCT = 10.0


@dataclass(frozen=True)
class Row:
    """One line of the table. ``concurrency`` is ``None`` for the in-process loop."""

    contender: str
    route: str
    rows: int
    concurrency: int | None
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    #: CPU time the server (or the loop) spent per request, in microseconds: less sensitive to other load
    cpu_us_per_req: float | None = None
    #: share of the server's core that other processes used during the cell (other engineers' work), in %
    other_load_pct: float | None = None


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    limit: float
    higher_is_better: bool
    unit: str
    #: the same ratio from CPU time per row instead of wall-clock throughput (informational): less
    #: sensitive to other processes taking turns on the server's core
    by_cpu: float | None = None

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        verdict = "PASS" if self.passed else "FAIL"
        cpu = "" if self.by_cpu is None else f"; by CPU time per row: {self.by_cpu:.2f}x"
        return f"{verdict}  {self.name}: {self.value:.2f}{self.unit} (target {op} {self.limit:.2f}{self.unit}{cpu})"


#: the default server with its metrics turned off, for the cost of metrics
METRICS_OFF = "modelapi --no-metrics"
#: the default server logging every answered row, for the cost of the prediction log
LOG_ALL = "modelapi --log-predictions 1.0"


def _throughput(name: str, mine: Row | None, theirs: Row | None, limit: float) -> list[Target]:
    """``mine`` vs ``theirs`` in rows/s (requests/s when both carry as many rows), and by CPU time per row."""
    if mine is None or theirs is None or not theirs.rows_per_s:
        return []
    by_cpu = None
    if mine.cpu_us_per_req and theirs.cpu_us_per_req:
        by_cpu = (theirs.cpu_us_per_req / theirs.rows) / (mine.cpu_us_per_req / mine.rows)
    return [Target(name, mine.rows_per_s / theirs.rows_per_s, limit, True, "x", by_cpu)]


def find(rows: Iterable[Row], contender: str, route: str, n: int, c: int | None) -> Row | None:
    return next(
        (r for r in rows if r.contender == contender and r.route == route and r.rows == n and r.concurrency == c),
        None,
    )


MODELAPI_ROUTES = ("friendly JSON", "V2 JSON", "V2 binary")
#: the one-connection cells measured in alternating rounds (``bench/paired.py``): (contender, route, rows) -> each
#: round's row, in round order
Rounds = dict[tuple[str, str, int], list[Row]]
INPROCESS_FIRST, INPROCESS_LAST = "JSON loop, first", "JSON loop, last"


def fastest_inprocess(rows: Iterable[Row], n: int) -> Row | None:
    """The faster of the in-process loop's two runs (first and last in the bench) for ``n``-row bodies."""
    runs = [r for r in rows if r.contender == "in-process" and r.rows == n]
    return max(runs, key=lambda r: r.rps, default=None)


#: modelapi with an API key required and metrics on, as production runs it (issue 16)
PRODUCTION = "modelapi, key + metrics"
FLOOR = "HTTP floor"
#: issue 16's bounds, each a ratio against the HTTP floor or the in-process limit of the same run
FLOOR_1ROW_C64, LIMIT_1ROW_C64, LIMIT_32ROW_C64 = 1.3, 0.7, 1.0
FLOOR_C1_CPU, FLOOR_C1_P50_MS, PRODUCTION_WITHIN = 1.3, 0.15, 0.10


def _cost(name: str, mine: Row | None, theirs: Row | None, limit: float, unit: str = "x") -> list[Target]:
    """``mine``'s CPU time per request against ``theirs`` (lower is better)."""
    if mine is None or theirs is None or not mine.cpu_us_per_req or not theirs.cpu_us_per_req:
        return []
    return [Target(name, mine.cpu_us_per_req / theirs.cpu_us_per_req, limit, False, unit)]


def _paired(rounds: Rounds, mine: tuple[str, str, int], theirs: tuple[str, str, int]) -> list[tuple[Row, Row]]:
    """The rounds in which both cells were measured with CPU time, each pair from the same round."""
    pairs = zip(rounds.get(mine, []), rounds.get(theirs, []), strict=False)
    return [(m, t) for m, t in pairs if m.cpu_us_per_req and t.cpu_us_per_req]


def _paired_c1(
    name: str, pairs: list[tuple[Row, Row]], cpu_limit: float, p50_limit: float, p50_ratio: bool
) -> list[Target]:
    """The median of the rounds' CPU ratios, and of their p50 differences (``p50_ratio``: ratios)."""
    if not pairs:
        return []
    cpu = statistics.median(m.cpu_us_per_req / t.cpu_us_per_req for m, t in pairs)  # type: ignore[operator]
    k = len(pairs)
    out = [Target(f"{name} CPU/req (median of {k} paired rounds)", cpu, cpu_limit, False, "x")]
    if p50_ratio:
        p50 = statistics.median(m.p50_ms / t.p50_ms for m, t in pairs if t.p50_ms)
        out.append(Target(f"{name} p50 (median of {k} paired rounds)", p50, p50_limit, False, "x"))
    else:
        p50 = statistics.median(m.p50_ms - t.p50_ms for m, t in pairs)
        out.append(Target(f"{name} p50 above the floor's (median of {k} paired rounds)", p50, p50_limit, False, " ms"))
    return out


def yardstick_targets(rows: list[Row], contender: str, rounds: Rounds | None = None) -> list[Target]:
    """Issue 16's targets for one modelapi configuration, against the floor and the in-process limit; at one
    connection from ``rounds`` where they hold the cells (each round's ratio to the same round's floor)."""
    out: list[Target] = []
    inproc = {n: fastest_inprocess(rows, n) for n in (1, 32)}
    floor = {(n, c): find(rows, FLOOR, "/predict", n, c) for n in (1, 32) for c in (1, 64)}
    for route in MODELAPI_ROUTES:
        one64 = find(rows, contender, route, 1, 64)
        out += _throughput(f"{contender} {route} 1-row c64 req/s vs HTTP floor", one64, floor[(1, 64)], FLOOR_1ROW_C64)
        out += _throughput(f"{contender} {route} 1-row c64 req/s vs in-process limit", one64, inproc[1], LIMIT_1ROW_C64)
        many64 = find(rows, contender, route, 32, 64)
        out += _throughput(
            f"{contender} {route} 32-row c64 rows/s vs in-process limit", many64, inproc[32], LIMIT_32ROW_C64
        )
        for n in (1, 32):
            pairs = _paired(rounds or {}, (contender, route, n), (FLOOR, "/predict", n))
            if pairs:
                name = f"{contender} {route} {n}-row c1 vs HTTP floor:"
                out += _paired_c1(name, pairs, FLOOR_C1_CPU, FLOOR_C1_P50_MS, p50_ratio=False)
                continue
            mine1, theirs1 = find(rows, contender, route, n, 1), floor[(n, 1)]
            out += _cost(f"{contender} {route} {n}-row c1 CPU/req vs HTTP floor", mine1, theirs1, FLOOR_C1_CPU)
            if mine1 and theirs1:
                limit = theirs1.p50_ms + FLOOR_C1_P50_MS
                out.append(
                    Target(f"{contender} {route} {n}-row c1 p50 (floor + 0.15 ms)", mine1.p50_ms, limit, False, " ms")
                )
    json32, binary32 = find(rows, contender, "V2 JSON", 32, 64), find(rows, contender, "V2 binary", 32, 64)
    if json32 and binary32 and json32.rows_per_s:
        # "more on V2 binary": above V2 JSON's rows/s in the same run
        out.append(
            Target(
                f"{contender} V2 binary vs V2 JSON 32-row c64 rows/s",
                binary32.rows_per_s / json32.rows_per_s,
                1.0,
                True,
                "x",
            )
        )
    return out


def production_targets(rows: list[Row], rounds: Rounds | None = None) -> list[Target]:
    """With a key and metrics on, each measure within 10 % of the default configuration's (at one connection
    from ``rounds`` where they hold the cells: each round's ratio to the same round's default cell)."""
    out: list[Target] = []
    low, high = 1 - PRODUCTION_WITHIN, 1 + PRODUCTION_WITHIN
    for route in MODELAPI_ROUTES:
        for n in (1, 32):
            prod64, default64 = find(rows, PRODUCTION, route, n, 64), find(rows, "modelapi", route, n, 64)
            out += _throughput(f"{PRODUCTION} vs default: {route} {n}-row c64 rows/s", prod64, default64, low)
            pairs = _paired(rounds or {}, (PRODUCTION, route, n), ("modelapi", route, n))
            if pairs:
                out += _paired_c1(f"{PRODUCTION} vs default: {route} {n}-row c1", pairs, high, high, p50_ratio=True)
                continue
            prod1, default1 = find(rows, PRODUCTION, route, n, 1), find(rows, "modelapi", route, n, 1)
            out += _cost(f"{PRODUCTION} vs default: {route} {n}-row c1 CPU/req", prod1, default1, high)
            if prod1 and default1 and default1.p50_ms:
                name = f"{PRODUCTION} vs default: {route} {n}-row c1 p50"
                out.append(Target(name, prod1.p50_ms / default1.p50_ms, high, False, "x"))
    return out


def targets(rows: list[Row], rss: dict[str, list[int]], footprint: int, rounds: Rounds | None = None) -> list[Target]:
    """Issue 16's targets (default and production configuration), then those of issue 3 and issue 11 that
    the yardsticks do not replace; a missing cell just has no target line. ``rounds``: the one-connection cells
    measured in alternating rounds (``bench/paired.py``), which the one-connection targets then use."""
    out = (
        yardstick_targets(rows, "modelapi", rounds)
        + yardstick_targets(rows, PRODUCTION, rounds)
        + production_targets(rows, rounds)
    )
    flask = {(n, c): find(rows, "flask+gunicorn", "/predict", n, c) for n in (1, 32) for c in (1, 64)}
    for route in MODELAPI_ROUTES:
        one64 = find(rows, "modelapi", route, 1, 64)
        out += _throughput(f"{route} 1-row c64 req/s vs Flask", one64, flask[(1, 64)], 3.0)
        for n in (1, 32):
            mine64, theirs64 = find(rows, "modelapi", route, n, 64), flask[(n, 64)]
            if mine64 and theirs64:
                out.append(Target(f"{route} {n}-row c64 p99", mine64.p99_ms, theirs64.p99_ms / 2, False, " ms"))
    floor1 = find(rows, FLOOR, "/predict", 1, 1)
    for contender in sorted({r.contender for r in rows if r.contender.startswith("modelapi --workers")}):
        mine1 = find(rows, contender, "friendly JSON", 1, 1)
        if mine1 and floor1:
            limit = floor1.p50_ms + FLOOR_C1_P50_MS
            out.append(Target(f"{contender} 1-row c1 p50 (Nagle; floor + 0.15 ms)", mine1.p50_ms, limit, False, " ms"))
    metrics_on, metrics_off = (
        find(rows, "modelapi", "friendly JSON", 1, 64),
        find(rows, METRICS_OFF, "friendly JSON", 1, 64),
    )
    out += _throughput("friendly JSON 1-row c64 req/s, metrics on vs off", metrics_on, metrics_off, 0.95)
    log_all = find(rows, LOG_ALL, "friendly JSON", 1, 64)
    out += _throughput("friendly JSON 1-row c64 req/s, prediction log 100 % vs off", log_all, metrics_on, 0.90)
    on = find(rows, "modelapi forest, batching on", "friendly JSON", 1, 64)
    off = find(rows, "modelapi forest, batching off", "friendly JSON", 1, 64)
    out += _throughput("forest 1-row c64 req/s, batching on vs off", on, off, 5.0)
    for contender, sizes in rss.items():
        for i, size in enumerate(sizes):
            extra = (size - footprint) / MIB
            out.append(
                Target(
                    f"{contender} worker {i + 1} RSS above the model's footprint", extra, RSS_LIMIT_MIB, False, " MiB"
                )
            )
    return out


def warnings(rows: list[Row]) -> list[str]:
    """Cells whose numbers cannot be trusted: failed requests, or none answered within the cell."""
    out = []
    for r in rows:
        where = f"{r.contender} {r.route} {r.rows}-row" + ("" if r.concurrency is None else f" c{r.concurrency}")
        if r.rps == 0:
            out.append(f"WARN  {where}: no request answered within the cell (longer cells needed)")
        elif r.errors:
            out.append(f"WARN  {where}: {r.errors} requests failed (socket errors, timeouts or non-2xx)")
        if r.other_load_pct is not None and r.other_load_pct > OTHER_LOAD_WARN_PCT:
            out.append(f"WARN  {where}: other processes took {r.other_load_pct:.0f}% of the server's core")
    return out


def _opt(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def _c(row: Row) -> str:
    return "-" if row.concurrency is None else str(row.concurrency)


def table(rows: list[Row]) -> str:
    head = [
        "contender",
        "route",
        "rows",
        "conc",
        "req/s",
        "rows/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "other load",
        "errors",
    ]
    body = [
        [r.contender, r.route, str(r.rows), _c(r), f"{r.rps:,.0f}", f"{r.rows_per_s:,.0f}",
         f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", _opt(r.cpu_us_per_req, "{:,.0f}"), _opt(r.other_load_pct, "{:.0f}%"),
         str(r.errors)]
        for r in rows
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def markdown(meta: dict[str, Any], rows: list[Row], checks: list[Target]) -> str:
    parts = [
        f"# modelapi benchmark, {meta['date']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        *(f"- {k}: {v}" for k, v in meta.items() if k not in ("date", "command")),
        "",
        table(rows),
        "",
        "## Targets",
        "",
        *(f"- {t.line()}" for t in checks),
        *(f"- {w}" for w in warnings(rows)),
        "",
    ]
    return "\n".join(parts)


def write(directory: Path, stamp: str, meta: dict[str, Any], rows: list[Row], checks: list[Target]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "rows": [asdict(r) for r in rows],
        "targets": [{**asdict(t), "passed": t.passed} for t in checks],
    }
    paths = [directory / f"bench-{stamp}.json", directory / f"bench-{stamp}.md"]
    paths[0].write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    paths[1].write_text(markdown(meta, rows, checks))
    return paths

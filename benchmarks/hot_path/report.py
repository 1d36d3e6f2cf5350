"""Summaries, the targets of issue 9 (met or missed), markdown tables and plots."""

from __future__ import annotations

import contextlib
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from benchmarks.hot_path.load import short_error

JsonDict = dict[str, Any]
FIELDS = (
    "p50_us",
    "p99_us",
    "throughput",
    "client_cores",
    "server_cores",
    "other_cores",
    "client_cpu_us_per_call",
    "server_cpu_us_per_call",
)
README_BEGIN = "<!-- hot_path:begin (written by benchmarks/bench_hot_path.py) -->"
README_END = "<!-- hot_path:end -->"
GIB_KIB = 1024 * 1024
QUIET_CORES = 0.25  # other processes' CPU (of 2 cores) for a run to count as quiet


def plan_dict(plan: Any) -> JsonDict:
    """The plan as JSON (paths as strings)."""
    out = asdict(plan) if is_dataclass(plan) and not isinstance(plan, type) else dict(plan)
    return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


# --- summaries -------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _quiet(runs: Sequence[JsonDict]) -> bool:
    return all(r["other_cores"] <= QUIET_CORES for r in runs)


def core_figures(records: Sequence[JsonDict]) -> dict[str, dict[int, JsonDict]]:
    """scenario -> concurrency -> medians over the quiet rounds (other processes used at most
    QUIET_CORES), or over all rounds when none was quiet."""
    groups: dict[tuple[str, int], list[JsonDict]] = defaultdict(list)
    for r in records:
        groups[(r["scenario"], r["concurrency"])].append(r)
    out: dict[str, dict[int, JsonDict]] = defaultdict(dict)
    for (scenario, level), every in groups.items():
        runs = [r for r in every if _quiet([r])] or every
        fig: JsonDict = {k: _median([r[k] for r in runs]) for k in FIELDS}
        batch = runs[0]["batch"]
        fig["batch"] = batch
        fig["decisions_per_s"] = fig["throughput"] * max(batch, 1)
        fig["errors"] = sum(r["errors"] for r in every)
        fig["requests"] = sum(r["requests"] for r in every)
        fig["rounds"] = len(every)
        fig["quiet_rounds"] = sum(_quiet([r]) for r in every)
        out[scenario][level] = fig
    return dict(out)


Pair = tuple[str, int]


def per_round(
    records: Sequence[JsonDict],
    keys: Sequence[Pair],
    fn: Callable[[dict[Pair, JsonDict]], float],
) -> float | None:
    """Median over rounds of ``fn`` of one round's runs ``keys`` (scenario, concurrency): over
    the rounds where all of them were quiet, or over all rounds when none was."""
    rounds: dict[int, dict[Pair, JsonDict]] = defaultdict(dict)
    for r in records:
        rounds[r["round"]][(r["scenario"], r["concurrency"])] = r
    usable = [runs for runs in rounds.values() if all(k in runs for k in keys)]
    quiet = [runs for runs in usable if _quiet([runs[k] for k in keys])]
    values = []
    for runs in quiet or usable:
        with contextlib.suppress(ZeroDivisionError):
            values.append(fn(runs))
    return statistics.median(values) if values else None


def _target(
    name: str, value: float | None, op: str, threshold: float, fmt: str, note: str = ""
) -> JsonDict:
    met = None if value is None else (value <= threshold if op == "<=" else value >= threshold)
    if op == "<":
        met = None if value is None else value < threshold
    return {
        "target": name,
        "value": value,
        "op": op,
        "threshold": threshold,
        "format": fmt,
        "met": met,
        "note": note,
    }


def _policy(records: Sequence[JsonDict], variant: str, count: int) -> JsonDict | None:
    for r in records:
        if r["variant"] == variant and r["policies"] == count:
            return r
    return None


def _policy_ratio(
    records: Sequence[JsonDict], variant: str, count: int
) -> tuple[float | None, str]:
    base, big = _policy(records, variant, 10), _policy(records, variant, count)
    if base is None or big is None:
        return None, "not measured"
    failed = big["c1"]["errors"]
    total = failed + big["c1"]["requests"]
    if big["c1"]["requests"] == 0:
        return None, f"every request failed: {short_error(big['c1']['first_error'])}"
    note = f"{failed}/{total} requests failed" if failed else ""
    # The small store measured right after the big one, when the run has it (side by side).
    reference = big.get("base_c1") or base["c1"]
    return big["c1"]["p50_us"] / reference["p50_us"], note


def summarize(data: JsonDict) -> JsonDict:
    """Figures per scenario, policy count table, client ceiling and the targets."""
    records = data["core"]
    figs = core_figures(records)
    workers = data["machine"]["workers"]
    default = f"memory-w{workers}" if workers else "memory"
    hot = 16

    def ratio(
        a: str, b: str, key: str, level: int, a_level: int | None = None, scale: float = 1.0
    ) -> float | None:
        ka, kb = (a, a_level or level), (b, level)
        return per_round(records, [ka, kb], lambda rs: rs[ka][key] / scale / rs[kb][key])

    targets = [
        _target(
            "IsAuthorized p50 at c=1 (memory, 1 worker) / floor p50",
            ratio("memory", "floor", "p50_us", 1),
            "<=",
            1.2,
            "x",
        ),
    ]
    for count, limit in ((10_000, 1.5), (100_000, None)):
        for variant in ("scope", "condition"):
            value, note = _policy_ratio(data["policies"], variant, count)
            name = f"p50 at {count:,} policies / p50 at 10 ({variant} variant)"
            if limit is None:
                targets.append(_target(name, value, "report", float("nan"), "x", note))
            else:
                targets.append(_target(name, value, "<=", limit, "x", note))
    if "cerbos" in figs:
        targets.append(
            _target(
                f"decisions/s at c=16 ({default}) / Cerbos",
                ratio(default, "cerbos", "throughput", hot),
                ">=",
                1.0,
                "x",
                "stretch: 1.5x",
            )
        )
        targets.append(
            _target(
                f"p99 at c=16 ({default}) / Cerbos p99",
                ratio(default, "cerbos", "p99_us", hot),
                "<=",
                1.0,
                "x",
            )
        )
    targets.append(
        _target(
            "Redis cache-hit p50 / memory p50 (c=1)",
            ratio("redis-hit", "memory", "p50_us", 1),
            "<=",
            1.2,
            "x",
        )
    )
    targets.append(
        _target(
            "BatchAuthorize(100) p50 per decision / IsAuthorized p50 (c=1, memory)",
            ratio("batch100-memory", "memory", "p50_us", 1, scale=100),
            "<=",
            1 / 20,
            "x",
        )
    )
    big = _policy(data["policies"], "scope", 100_000)
    if big is not None:
        targets.append(
            _target(
                "peak RSS of one worker, 100,000 policies (GiB)",
                big["peak_rss_kib"] / GIB_KIB,
                "<",
                1.0,
                "GiB",
                f"startup {big['load_s']:.1f} s",
            )
        )
    ceiling = {c["server"]: c for c in data.get("ceiling", [])}
    return {
        "figures": figs,
        "default_workers_scenario": default,
        "targets": targets,
        "ceiling": ceiling,
    }


# --- markdown ------------------------------------------------------------------------------


def _us(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:,.0f} µs"


def _rate(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:,.0f}"


def _cores(fig: JsonDict) -> str:
    return f"{fig['client_cores']:.2f} / {fig['server_cores']:.2f} / {fig['other_cores']:.2f}"


def _value(t: JsonDict) -> str:
    v = t["value"]
    if v is None:
        return "—"
    return f"{v:.3f}" if t["format"] == "x" and v < 0.1 else f"{v:.2f}"


def markdown(data: JsonDict) -> str:
    """The tables for benchmarks/README.md."""
    s = data["summary"]
    figs = s["figures"]
    m = data["machine"]
    lines = [
        f"Run of {m['date']} on commit {m['commit']} ({m['cpus']} CPUs, Python {m['python']}, "
        f"cedarpy {m['cedarpy']}, grpcio {m['grpcio']}, redis-server {m['redis_server']}, "
        f"Cerbos {m['cerbos']}); `--workers`: "
        + (f"yes, N = {m['workers']}" if m["workers_flag"] else "not in this CLI (one process)")
        + f"; {data['plan']['rounds']} interleaved rounds, medians; whole run "
        f"{data['wall_s']:.0f} s.",
        "",
        "Cores = client / server / everything else, in CPU-seconds per second during the "
        "measured phase (the machine has 2).",
        "",
        "**Targets** (ratios within a round, median over rounds):",
        "",
        "| target | measured | needed | |",
        "|---|---|---|---|",
    ]
    for t in s["targets"]:
        need = "report" if t["op"] == "report" else f"{t['op']} {t['threshold']:.3g}"
        verdict = (
            "—"
            if t["op"] == "report"
            else {True: "met", False: "**missed**", None: "**missed**"}[t["met"]]
        )
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']} | {_value(t)}{note} | {need} | {verdict} |")
    lines += [
        "",
        "**IsAuthorized, lending mix (25 cases), one client process:**",
        "",
        "| scenario | p50 c=1 | p99 c=1 | /s c=1 | cores c=1 | p50 c=16 | p99 c=16 "
        "| decisions/s c=16 | cores c=16 | quiet rounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, levels in figs.items():
        if name.startswith("batch") or 1 not in levels or 16 not in levels:
            continue
        a, b = levels[1], levels[16]
        err = f" ({a['errors'] + b['errors']} errors)" if a["errors"] + b["errors"] else ""
        lines.append(
            f"| {name}{err} | {_us(a['p50_us'])} | {_us(a['p99_us'])} | {_rate(a['throughput'])} "
            f"| {_cores(a)} | {_us(b['p50_us'])} | {_us(b['p99_us'])} | "
            f"{_rate(b['decisions_per_s'])} | {_cores(b)} | "
            f"{a['quiet_rounds']}/{a['rounds']}, {b['quiet_rounds']}/{b['rounds']} |"
        )
    curve = [n for n, lv in figs.items() if len(lv) > 2 and not n.startswith("batch")]
    levels = sorted({c for n in curve for c in figs[n]})
    lines += [
        "",
        "**Latency vs concurrency** (p50 / p99, decisions/s):",
        "",
        "| scenario | " + " | ".join(f"c={c}" for c in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for name in curve:
        cells = [
            f"{_us(figs[name][c]['p50_us'])} / {_us(figs[name][c]['p99_us'])}, "
            f"{_rate(figs[name][c]['decisions_per_s'])}/s"
            if c in figs[name]
            else "—"
            for c in levels
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**BatchAuthorize** (lending mix cycled):",
        "",
        "| server, items | p50 c=1 per call | µs per decision c=1 | decisions/s c=16 "
        "| cores c=16 |",
        "|---|---|---|---|---|",
    ]
    for name, lv in figs.items():
        if name.startswith("batch") and 1 in lv and 16 in lv:
            size = lv[1]["batch"]
            lines.append(
                f"| {name.split('-', 1)[1]}, {size} | {_us(lv[1]['p50_us'])} | "
                f"{lv[1]['p50_us'] / size:,.1f} | {_rate(lv[16]['decisions_per_s'])} | "
                f"{_cores(lv[16])} |"
            )
    lines += [
        "",
        "**Policy count** (generated store; one worker; c=16 decisions/s):",
        "",
        "| variant | policies | startup | RSS peak | p50 c=1 | p99 c=1 | x p50 of the smallest "
        "| decisions/s c=16 | failed | cores c=1; c=16 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["policies"]:
        c1, c16 = r["c1"], r["c16"]
        failed = c1["errors"] + c16["errors"]
        total = failed + c1["requests"] + c16["requests"]
        first = short_error(c1["first_error"] or c16["first_error"])
        fail = f"{failed}/{total}" + (f" ({first})" if first else "")
        base = r.get("base_c1")
        side = "—"
        if base and base["requests"] and c1["requests"]:
            side = f"{c1['p50_us'] / base['p50_us']:.2f}x (its p50 {_us(base['p50_us'])})"
        lines.append(
            f"| {r['variant']} | {r['policies']:,} | {r['load_s']:.1f} s | "
            f"{r['peak_rss_kib'] / 1024:,.0f} MiB | "
            f"{_us(c1['p50_us'] if c1['requests'] else None)} | "
            f"{_us(c1['p99_us'] if c1['requests'] else None)} | {side} | "
            f"{_rate(c16['throughput'] if c16['requests'] else None)} | {fail if failed else 0} "
            f"| {_cores(c1)}; {_cores(c16)} |"
        )
    ceiling = s["ceiling"]
    if ceiling:
        lines += [
            "",
            "**The load generator's ceiling** (c=16 in total, one process vs two, back to back):",
            "",
            "| server | one client process, /s | cores | two client processes, /s | cores "
            "| phases overlapping | client CPU per call (one process) | one core's worth |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, c in ceiling.items():
            one = c["one_process"]
            per_call = one["client_cpu_us_per_call"]
            lines.append(
                f"| {name} | {_rate(one['throughput'])} | {_cores(one)} | "
                f"{_rate(c['throughput'])} | {_cores(c)} | {c['overlap_share']:.0%} "
                f"| {per_call:,.0f} µs | {1e6 / per_call:,.0f}/s |"
            )
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between the hot_path markers of the benchmarks README."""
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    block = f"{README_BEGIN}\n{table}{README_END}"
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text += f"\n{block}\n"
    readme.write_text(text, encoding="utf-8")


# --- plots ---------------------------------------------------------------------------------


def write_plots(data: JsonDict, out: Path) -> None:
    """hot_path_concurrency.png, hot_path_policies.png, hot_path_throughput.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = data["summary"]["figures"]
    title = (
        f"{data['machine']['cpus']} cores shared by client and servers; "
        f"commit {data['machine']['commit']}"
    )

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name, lv in figs.items():
        if name.startswith("batch") or len(lv) <= 2:
            continue
        levels = sorted(lv)
        line = left.plot(
            levels, [lv[c]["p50_us"] / 1000 for c in levels], marker="o", label=f"{name} p50"
        )[0]
        left.plot(
            levels,
            [lv[c]["p99_us"] / 1000 for c in levels],
            marker="x",
            ls="--",
            color=line.get_color(),
            label=f"{name} p99",
        )
        right.plot(levels, [lv[c]["decisions_per_s"] for c in levels], marker="o", label=name)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (closed loop)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("latency (ms)")
    left.set_title("IsAuthorized latency vs concurrency")
    right.set_ylabel("decisions/s")
    right.set_title("throughput vs concurrency")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "hot_path_concurrency.png", dpi=110)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for variant in ("scope", "condition"):
        rows = [r for r in data["policies"] if r["variant"] == variant]
        ok = [r for r in rows if r["c1"]["requests"]]
        failed = [r for r in rows if r["c1"]["errors"]]
        line = left.plot(
            [r["policies"] for r in ok],
            [r["c1"]["p50_us"] / 1000 for r in ok],
            marker="o",
            label=f"{variant}: p50 c=1",
        )[0]
        left.plot(
            [r["policies"] for r in ok],
            [r["c1"]["p99_us"] / 1000 for r in ok],
            marker="x",
            ls="--",
            color=line.get_color(),
            label=f"{variant}: p99 c=1",
        )
        if failed:
            left.scatter(
                [r["policies"] for r in failed],
                [0.1] * len(failed),
                marker="X",
                s=80,
                color=line.get_color(),
                label=f"{variant}: requests failed",
            )
        right.plot(
            [r["policies"] for r in rows],
            [r["c16"]["throughput"] if r["c16"]["requests"] else 0 for r in rows],
            marker="o",
            label=f"{variant}: decisions/s c=16",
        )
    if "floor" in figs:
        left.axhline(figs["floor"][1]["p50_us"] / 1000, color="grey", ls=":", label="floor p50")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("policies in the store")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("latency (ms)")
    left.set_title("latency vs policy count (one worker)")
    right.set_ylabel("successful decisions/s")
    right.set_title("throughput vs policy count")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "hot_path_policies.png", dpi=110)
    plt.close(fig)

    names = [n for n, lv in figs.items() if 16 in lv]
    values = [figs[n][16]["decisions_per_s"] for n in names]
    fig, ax = plt.subplots(figsize=(13, 5))
    bars = ax.bar(
        range(len(names)),
        values,
        color=[
            "grey"
            if n == "floor"
            else "tab:orange"
            if n == "cerbos"
            else "tab:green"
            if n.startswith("batch")
            else "tab:blue"
            for n in names
        ],
    )
    for bar, name in zip(bars, names, strict=True):
        f = figs[name][16]
        ax.annotate(
            f"{f['decisions_per_s']:,.0f}\nc {f['client_cores']:.1f} s {f['server_cores']:.1f}"
            f" o {f['other_cores']:.1f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("decisions/s at c=16 (log)")
    ax.set_title(
        "decisions/s per scenario at c=16 (labels: cores used by c = client, s = server, "
        "o = other processes)"
    )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "hot_path_throughput.png", dpi=110)
    plt.close(fig)

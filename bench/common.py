"""Helpers every benchmark uses: the machine/version header and Markdown tables."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version


def machine_header(packages: tuple[str, ...]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    vers = []
    for p in packages:
        try:
            vers.append(f"{p} {version(p)}")
        except PackageNotFoundError:
            vers.append(f"{p} (not installed)")
    return (
        f"- machine: {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}\n"
        f"- python {platform.python_version()}; {', '.join(vers)}\n"
    )


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def dir_bytes(path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def write_report(path, report: str) -> None:
    """Every benchmark's last step: the Markdown report to its file and to stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    print(report)

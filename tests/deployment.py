"""What the deployment tests share: the metrics catalogue (docs/metrics.md), the CLI's
commands, and which parts come from branches not merged yet."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "docs" / "metrics.md"

# The read service (issue 5) is developed on its own branch. Until it is merged, its
# command and settings are allowed to be missing here; once `memstream serve` exists
# every one of them must exist too (no allowance survives the merge).
READ_SERVICE_COMMANDS = frozenset({"serve", "rebuild-index", "replay", "hash-token"})
READ_SERVICE_SETTINGS = frozenset({
    "serve_host", "serve_port", "serve_data_dir", "ready_max_lag", "consistency_timeout_s",
    "exact_search_max", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search",
})

# Labels that would make one time series per user, event or record.
UNBOUNDED_LABELS = frozenset({
    "tenant", "session_id", "interaction_id", "event_id", "memory_id", "summary_id",
    "token", "user", "path", "offset", "key",
})


@dataclass(frozen=True)
class CatalogueMetric:
    """One row of docs/metrics.md."""

    name: str
    type: str
    labels: frozenset[str]
    sources: tuple[str, ...]  # "worker", "worker/<agent>", "serve"

    @property
    def family(self) -> str:
        """The family name prometheus_client's parser reports (counters lose ``_total``)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    def exported_by(self, process: str) -> bool:
        """Whether ``process`` (``worker`` or ``serve``) may export it."""
        return any(s.split("/", 1)[0] == process for s in self.sources)

    def required_in(self, process: str, agents: Collection[str] = ()) -> bool:
        """Whether ``process`` running ``agents`` must export it (``worker/<agent>``: only
        when that agent is one of them)."""
        for source in self.sources:
            owner, _, agent = source.partition("/")
            if owner == process and (not agent or agent in agents):
                return True
        return False

    def series(self) -> set[str]:
        """The series names a query may use."""
        if self.type == "counter":
            return {self.name, f"{self.family}_created"}
        if self.type == "histogram":
            return {f"{self.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        return {self.name}


_ROW = re.compile(r"^\|\s*`(memstream_[a-z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|")


def catalogue() -> dict[str, CatalogueMetric]:
    """docs/metrics.md's table, by name."""
    rows: dict[str, CatalogueMetric] = {}
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if not match:
            continue
        name, kind, labels, source = (g.strip() for g in match.groups())
        assert name not in rows, f"docs/metrics.md lists {name} twice"
        rows[name] = CatalogueMetric(
            name, kind, frozenset(re.findall(r"`([a-z_]+)`", labels)),
            tuple(s.strip() for s in source.split(",")),
        )
    return rows


def allowed_series() -> dict[str, CatalogueMetric]:
    """Every series name a query may use, to the catalogue row it belongs to."""
    return {s: m for m in catalogue().values() for s in m.series()}


def cli_commands() -> set[str]:
    """Every command of the ``memstream`` CLI: ``worker``, ``topics create``, ..."""
    from streams.ops.cli import app

    # typer vendors its own click: groups are recognised by their ``commands``.
    root = typer.main.get_command(app)
    found: set[str] = set()
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found.add(name)
        found.update(f"{name} {sub}" for sub in getattr(command, "commands", {}))
    return found


def read_service_merged() -> bool:
    """Whether this tree has the read service (its ``memstream serve`` command)."""
    return "serve" in cli_commands()

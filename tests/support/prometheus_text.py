"""Reading a Prometheus exposition in tests, with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample_values(text: str, name: str) -> dict[Labels, float]:
    """The samples of one name, by sorted labels."""
    return {labels: value for (sample, labels), value in samples(text).items() if sample == name}

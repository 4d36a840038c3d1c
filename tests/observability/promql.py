"""The metric names a PromQL expression reads, and the sample names the platform exports."""

from __future__ import annotations

import re

# Aggregations, keywords and modifiers: words of PromQL that are not metric names.
KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "inf", "nan", "atan2",
}  # fmt: skip
# Series Prometheus makes itself for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects (functions, keywords, label names and ranges left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue  # a function, or an aggregation written before its argument
        names.add(word)
    return names


def exported_samples(registry) -> dict[str, str]:
    """Sample name -> its metric family, for every family of ``registry`` (children or not)."""
    samples = {}
    for family in registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            samples[family.name + suffix] = family.name
    return samples


def platform_registry():
    """prometheus_client's registry once every module that defines a platform metric is imported
    (and django-prometheus has made its request metrics, as its middleware does at start)."""
    from django_prometheus.middleware import Metrics
    from prometheus_client import REGISTRY

    import apps.eventbus.metrics
    import apps.orders.monitoring
    import apps.orders.services
    import apps.payments.gateway  # noqa: F401

    Metrics.get_instance()
    return _Platform(REGISTRY)


class _Platform:
    """The global registry, plus the families the web reads from the database when scraped
    (``webmetrics.scraped_registry``): their names, from ``describe``, with no database."""

    def __init__(self, registry) -> None:
        self.registry = registry

    def collect(self):
        from apps.eventbus.producing.reconciliation import RunsCollector

        yield from self.registry.collect()
        yield from RunsCollector().describe()


def sample_of(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in Prometheus exposition ``text``."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None

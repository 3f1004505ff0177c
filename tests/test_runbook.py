"""Every shipped alert rule links its runbook: a section of docs/runbook.md that exists."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import REPO

RUNBOOK = REPO / "docs" / "runbook.md"
RULE_FILES = {
    "rules": (REPO / "deploy" / "prometheus" / "spawnwatch-rules.yml", lambda doc: doc),
    "PrometheusRule": (REPO / "deploy" / "kubernetes" / "prometheusrule.yaml", lambda doc: doc["spec"]),
}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces as '-'."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("source", sorted(RULE_FILES))
def test_every_rule_has_a_runbook_url_whose_section_exists(source: str) -> None:
    path, rules_of = RULE_FILES[source]
    anchors = github_anchors(RUNBOOK.read_text())
    rules = [rule for group in rules_of(yaml.safe_load(path.read_text()))["groups"] for rule in group["rules"]]
    assert rules
    for rule in rules:
        url = urlsplit(rule.get("annotations", {}).get("runbook_url", ""))
        assert url.path, f"{rule['alert']} in {path.name} has no runbook_url"
        assert (REPO / url.path).resolve() == RUNBOOK, f"{rule['alert']}: {url.path} is not docs/runbook.md"
        assert url.fragment == rule["alert"].lower(), f"{rule['alert']}: the anchor names another alert"
        assert url.fragment in anchors, f"{rule['alert']}: docs/runbook.md has no section #{url.fragment}"

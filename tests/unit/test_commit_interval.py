"""How often a Kafka reader group commits its cursor, by how many a mount reads."""

from __future__ import annotations

from dnpfs.backends.kafka._member import commit_interval


def test_few_groups_commit_every_100_ms():
    assert commit_interval(0) == commit_interval(1) == commit_interval(10) == 0.1


def test_many_groups_share_a_rate_and_each_commits_at_least_once_a_second():
    assert commit_interval(50) == 0.5
    assert commit_interval(100) == 1.0
    assert commit_interval(5000) == 1.0
